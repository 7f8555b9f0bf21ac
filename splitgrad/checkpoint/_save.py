"""Saving: a model (or its weights alone) turned into the checkpoint's files, then written
with the crash-safe replacement of _folder.py.

config.json of a model holds what JSON can: the architecture (`get_config`), the input shape,
the compile settings, the optimizer's settings and step counts (and those of the model's
`extra_optimizers()`), the generator states and the caller's `extra`. Arrays go to safetensors
files. A model holding NaN or inf is refused before
anything is written, so a diverged run never replaces a good checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import metrics
from . import _folder
from ._files import MAX_JSON_DEPTH, CheckpointError, check_depth, encode_tensors
from ._manifest import (
    CONFIG,
    MAX_CONFIG_BYTES,
    OPTIMIZER,
    OWN_FILES,
    WEIGHTS,
    extra_optimizer_file,
    is_own_file,
    plain_name_problem,
)
from ._state import (
    extra_optimizers,
    refuse_non_finite,
    refuse_non_finite_optimizer,
    rng_states,
    weights_of,
)

MODEL_FORMAT, MODEL_VERSION = "splitgrad-model", 2  # version 1: before manifest.json


def save_model(
    model,
    path,
    extra: dict | None = None,
    *,
    overwrite: bool = False,
    attachments: dict | None = None,
) -> None:
    """Save architecture, weights, compile settings, optimizer state and every generator state
    to the folder `path`, with `attachments` ({file name: bytes}, e.g. history.json) beside
    them; all covered by the manifest and replaced together.

    Refuses (CheckpointError) a target holding other files unless overwrite=True (see
    `check_target`), and (ValueError) a model with NaN/inf weights.
    """
    if not model.built:
        raise ValueError("model.save: the model is not built yet; call it on data or fit first")
    _folder.check_target(path, overwrite)  # before the work, for a clear early error
    files = _checked_attachments(attachments)
    weights = weights_of(model)
    opt_arrays, config = (
        {},
        {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "class": type(model).__name__,
            "config": model.get_config(),
            "input_shape": _shape_list(model.input_shape),
            "extra": extra or {},
        },
    )
    config["rng_state"], config["layer_rng_states"] = rng_states(model)
    extras = extra_optimizers(model)  # first: a model may build its optimizers here
    if getattr(model, "optimizer", None) is not None:
        if not model.optimizer.built:  # compiled, then built by a plain call: no steps yet
            model.optimizer.build(model.parameters())
        config["compile"] = {
            "optimizer": model.optimizer.get_config() | {"class": type(model.optimizer).__name__},
            "loss": {"class": type(model.loss).__name__, "config": model.loss.get_config()},
            "metrics": _metric_specs(model.metric_specs),
            "optimizer_weights": _optimizer_weights(model),
        }
        state = model.optimizer.state_dict()
        config["optimizer_state"] = {k: v for k, v in state.items() if k != "state"}
        opt_arrays = state.get("state", {})
    refuse_non_finite(model, weights, opt_arrays, path)
    extra_arrays = _extra_optimizer_states(extras, config, path)
    files[CONFIG] = _config_bytes(config, path)
    files[WEIGHTS] = encode_tensors(weights)
    if opt_arrays:
        files[OPTIMIZER] = encode_tensors(opt_arrays)
    for name, arrays in extra_arrays.items():
        if arrays:  # like the main optimizer's: no file for an optimizer without arrays
            files[extra_optimizer_file(name)] = encode_tensors(arrays)
    _folder.write(path, files, "model", overwrite)


def _extra_optimizer_states(extras: dict, config: dict, path) -> dict:
    """Each extra optimizer's settings and step counts into config["extra_optimizer_states"]
    ({name: like "optimizer_state"}); returns {name: its arrays}. Every one must be built:
    its state is meaningless before it knows its parameters."""
    if not extras:
        return {}
    states, arrays = {}, {}
    for name, opt in extras.items():
        if not getattr(opt, "built", True):
            raise ValueError(
                f"save to {path}: the model's optimizer {name!r} ({type(opt).__name__}) is not "
                "built yet; build the model (call it on data, or fit) before saving"
            )
        state = opt.state_dict()
        states[name] = {k: v for k, v in state.items() if k != "state"}
        arrays[name] = state.get("state", {})
        refuse_non_finite_optimizer(name, arrays[name], path)
    config["extra_optimizer_states"] = states
    return arrays


def save_weights(model, path, *, overwrite: bool = False) -> None:
    """Weights only: PATH/weights.safetensors and its manifest (for `load_weights`)."""
    if not model.built:
        raise ValueError("save_weights: the model is not built yet; call it on data first")
    _folder.check_target(path, overwrite)
    weights = weights_of(model)
    refuse_non_finite(model, weights, {}, path)
    _folder.write(path, {WEIGHTS: encode_tensors(weights)}, "weights", overwrite)


def _checked_attachments(attachments) -> dict:
    if attachments is None:
        return {}
    if not isinstance(attachments, dict):
        raise TypeError(
            f"attachments must be a dict {{file name: bytes}}, got {type(attachments).__name__}"
        )
    out = {}
    for name, data in attachments.items():
        problem = plain_name_problem(name)
        if problem:
            raise ValueError(
                f"attachment {name!r}: {problem}; attachments are files directly "
                "in the checkpoint folder"
            )
        if is_own_file(name):
            raise ValueError(
                f"attachment {name!r}: the checkpoint's own file has that name; "
                f"choose another (reserved: {', '.join(OWN_FILES)}, optimizer.NAME.safetensors)"
            )
        if isinstance(data, str):
            raise TypeError(f"attachment {name!r}: give bytes, e.g. text.encode()")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"attachment {name!r}: expected bytes, got {type(data).__name__}")
        out[name] = bytes(data)
    return out


def _config_bytes(config: dict, path) -> bytes:
    try:
        check_depth(config, Path(path) / CONFIG)
    except CheckpointError:
        raise ValueError(
            f"save to {path}: `extra` (or a layer config) is nested more than "
            f"{MAX_JSON_DEPTH} levels deep; flatten it"
        ) from None
    data = json.dumps(config, indent=1, default=_json_default).encode()
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"save to {path}: the config takes {len(data)} bytes, more than the "
            f"{MAX_CONFIG_BYTES} a checkpoint's config.json may; keep large data "
            "out of `extra` (pass it as an attachment)"
        )
    return data


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(
        f"cannot store {type(obj).__name__} in a checkpoint config; `extra`, and the "
        "get_config() of every layer and model, must hold JSON values (dicts, lists, text, "
        "numbers): give a custom class a get_config returning its constructor's arguments"
    )


def _optimizer_weights(model) -> list:
    """The dotted names of the weights the optimizer trains, in its order (a layer frozen
    after compile is still among them)."""
    first = {}
    for key, p in model.named_weights().items():
        first.setdefault(id(p), key)
    return [first[id(p)] for p in model.optimizer_parameters() if id(p) in first]


def _metric_specs(specs):
    """The compiled metrics as JSON: a list, or per output (a dict, or a list of lists)."""
    if isinstance(specs, dict):
        return {k: _metric_specs(v) for k, v in specs.items()}
    if isinstance(specs, (list, tuple)):
        return [_metric_specs(m) for m in specs]
    return metrics.to_spec(specs)


def _shape_list(shape):
    """The input shape as JSON: a list, or a list of lists for several inputs."""
    if isinstance(shape, dict):
        shape = list(shape.values())
    if isinstance(shape, list) and shape and isinstance(shape[0], (list, tuple)):
        return [list(s) for s in shape]
    return list(shape)
