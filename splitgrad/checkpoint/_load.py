"""Loading: verify a checkpoint folder, rebuild or fill a model, and raise only CheckpointError.

Order: find the folder (recovering leftovers of crashed saves), check the manifest and every
file it lists (regular file, exact size, SHA-256), parse config.json (bounded depth) and the
safetensors files (header sizes checked before allocation), rebuild the model within a weight
budget (the bytes the weights file really holds), check every array and generator state
against the model, and only then assign. Any other exception from rebuilding a crafted config
is converted to CheckpointError, so callers handle one error type.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import random as sg_random
from ..layers.layer import UnknownClassError, WeightBudget, layer_class
from . import _folder, _manifest
from ._files import DAMAGED, CheckpointError, decode_tensors, parse_json, read_file
from ._manifest import CONFIG, LEGACY_SUMS, MANIFEST, OPTIMIZER, WEIGHTS, extra_optimizer_of
from ._optimizers import load_optimizers
from ._save import MODEL_FORMAT, MODEL_VERSION
from ._state import apply_rng_states, check_weights, checked_rng_states, extra_optimizers

MAX_SAMPLE_ELEMENTS = 1 << 24  # per-sample input size accepted from a config (64 MB float32)
MAX_INPUT_NDIM = 8


@dataclass
class Contents:
    """What a verified folder holds."""

    folder: Path
    config: dict | None = None
    weights: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    extra_optimizers: dict = field(default_factory=dict)  # {name: arrays}, from their files


def read_contents(path, verify: bool, need_config: bool) -> Contents:
    with _folder.reading(path) as folder:
        manifest = _manifest.read(folder, verify)
        if manifest is None:
            data = _legacy_files(folder, verify)
        else:
            if need_config and manifest["kind"] != "model":
                raise CheckpointError(
                    f"{folder}: holds only weights (saved by save_weights); "
                    "build the model in code and call "
                    "model.load_weights(PATH)"
                )
            extra = {n for n in manifest["files"] if extra_optimizer_of(n) is not None}
            data = _manifest.read_listed(
                folder, manifest, verify, keep={CONFIG, WEIGHTS, OPTIMIZER, *extra}
            )
            _manifest.warn_if_environment_differs(manifest.get("environment"), folder)
    out = Contents(folder)
    if need_config:
        if CONFIG not in data:
            raise CheckpointError(
                f"{folder / CONFIG}: file is missing; is {folder} a "
                "splitgrad model folder (made by model.save)?"
            )
        out.config = _checked_config(data[CONFIG], folder / CONFIG)
    out.weights = decode_tensors(data[WEIGHTS], folder / WEIGHTS)
    if OPTIMIZER in data:
        out.optimizer = decode_tensors(data[OPTIMIZER], folder / OPTIMIZER)
    for name, blob in data.items():
        owner = extra_optimizer_of(name)
        if owner is not None:
            out.extra_optimizers[owner] = decode_tensors(blob, folder / name)
    return out


def _legacy_files(folder: Path, verify: bool) -> dict:
    """The files of a folder without manifest.json: refused unless verify=False."""
    listing = _manifest.legacy_listing(folder)
    if listing is None:
        raise CheckpointError(
            f"{folder / MANIFEST}: file is missing, and so is a legacy "
            f"{CONFIG}; is {folder} a splitgrad model folder (made by "
            "model.save)?"
        )
    if verify:
        raise CheckpointError(
            f"{folder / MANIFEST}: file is missing, so nothing vouches for the files in "
            f"{folder}: it was saved by a splitgrad from before manifests, or the manifest was "
            "deleted. If you trust the files, load with verify=False (model.load_weights / "
            "load_model(..., verify=False)); saving it again writes a manifest"
        )
    names = [n for n in (CONFIG, WEIGHTS, OPTIMIZER) if n != CONFIG or LEGACY_SUMS not in listing]
    out = {}
    for name in names:
        if name == WEIGHTS or os.path.lexists(folder / name):
            limit = _manifest.MAX_CONFIG_BYTES if name == CONFIG else None
            out[name] = read_file(folder / name, limit=limit, what="the checkpoint is incomplete")[
                0
            ]
    return out


def _checked_config(data: bytes, source) -> dict:
    config = parse_json(data, source, what="a model config (a JSON object)")
    if config.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"{source}: not a splitgrad model config (format "
            f"{str(config.get('format'))[:40]!r}). {DAMAGED}"
        )
    version = config.get("version", 1)
    if not (isinstance(version, int) and not isinstance(version, bool)) or version < 1:
        raise CheckpointError(
            f"{source}: version must be an integer ≥ 1, found {str(version)[:40]!r}. {DAMAGED}"
        )
    if version > MODEL_VERSION:
        raise CheckpointError(
            f"{source}: saved by a newer splitgrad (version {version}); "
            "upgrade splitgrad to load it"
        )
    if version >= 2 and not isinstance(config.get("layer_rng_states"), dict):
        raise CheckpointError(f"{source}: 'layer_rng_states' must be an object. {DAMAGED}")
    for key, kind in (("class", str), ("config", dict), ("input_shape", list), ("extra", dict)):
        if not isinstance(config.get(key, {} if key == "extra" else None), kind):
            raise CheckpointError(
                f"{source}: {key!r} must be a {kind.__name__} "
                f"(found {type(config.get(key)).__name__}). {DAMAGED}"
            )
    shape = config["input_shape"]
    # A model with several inputs (functional) saves one shape per input; None marks a
    # free axis (a sequence length), which only a model that rebuilds itself may have.
    several = bool(shape) and all(isinstance(s, list) for s in shape)
    for one in shape if several and len(shape) <= MAX_INPUTS else [shape]:
        _check_shape(one, source)
    return config


MAX_INPUTS = 64


def _check_shape(shape, source):
    if not (
        isinstance(shape, list)
        and 2 <= len(shape) <= MAX_INPUT_NDIM + 1
        and all(
            s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 1)
            for s in shape[1:]
        )
    ):
        raise CheckpointError(
            f"{source}: input_shape {str(shape)[:80]} must be a batch size "
            f"then 1 to {MAX_INPUT_NDIM} sizes ≥ 1. {DAMAGED}"
        )
    values = math.prod(s for s in shape[1:] if s is not None)
    if values > MAX_SAMPLE_ELEMENTS:
        raise CheckpointError(
            f"{source}: input_shape {shape} claims {values} "
            f"values per sample, more than the {MAX_SAMPLE_ELEMENTS} "
            f"accepted from a file. {DAMAGED}"
        )


# ----- whole models ----------------------------------------------------------------------
def load_model(path, compile: bool = True, restore_rng: bool = True, verify: bool = True):
    """Rebuild a model saved with `model.save(path)`: architecture, weights, optimizer state,
    the default generator's state (with `restore_rng`) and the layers' own generators.

    verify=False loads a folder without a manifest (saved before manifests) and skips the
    checksums and the NaN/inf check; every structural check still runs. Raises only
    CheckpointError (a ValueError) for anything wrong with the files, and warns
    (RuntimeWarning) when it was saved under another BLAS, NumPy or splitgrad.
    """
    contents = read_contents(path, verify, need_config=True)
    config, folder = contents.config, contents.folder
    comp = config.get("compile") if compile else None
    model = _rebuild(config, comp, contents)
    check_weights(model, contents.weights, folder / WEIGHTS, verify)
    rngs = checked_rng_states(
        model, config.get("rng_state"), config.get("layer_rng_states"), folder / CONFIG, restore_rng
    )
    if comp is not None and "optimizer_state" in config:
        load_optimizers(model, config, contents, verify)
    for key, p in model.named_weights().items():
        p.data[...] = contents.weights[key]
    apply_rng_states(model, *rngs)
    model.saved_extra = config.get("extra", {})
    return model


def saved_extra(path, verify: bool = True) -> dict:
    """The `extra` dict a model was saved with (e.g. which recipe made it), read and verified
    without building the model."""
    return read_contents(path, verify, need_config=True).config.get("extra", {})


def restore(model, path, verify: bool = True) -> dict:
    """Load a checkpoint's weights, optimizer state, default generator state and layer
    generator states INTO `model` (built; compiled if the checkpoint was), after checking
    that its architecture matches: weight names, shapes, dtypes, and the optimizer class.
    Nothing changes unless everything fits. Returns the saved `extra` dict."""
    if not model.built:
        raise ValueError(
            "restore: the model is not built yet; build it (call it on a sample "
            "batch) before restoring a checkpoint into it"
        )
    contents = read_contents(path, verify, need_config=True)
    config, folder = contents.config, contents.folder
    check_weights(model, contents.weights, folder / WEIGHTS, verify)
    rngs = checked_rng_states(
        model, config.get("rng_state"), config.get("layer_rng_states"), folder / CONFIG, True
    )
    opt = getattr(model, "optimizer", None)
    if opt is not None:
        saved = config.get("optimizer_state")
        if not isinstance(saved, dict):
            raise CheckpointError(
                f"{folder / CONFIG}: holds no optimizer state (the model was "
                "saved uncompiled); nothing to resume the optimizer from"
            )
        if saved.get("class_name") != type(opt).__name__:
            raise CheckpointError(
                f"{folder / CONFIG}: the optimizer state was saved by "
                f"{str(saved.get('class_name'))[:40]}, the model uses "
                f"{type(opt).__name__}; compile it with the saved optimizer"
            )
        for name, extra in extra_optimizers(model).items():
            if not extra.built:
                raise ValueError(
                    f"restore: the model's optimizer {name!r} is not built yet; build the "
                    "model (call it on a sample batch) after compiling it, then restore"
                )
        if not opt.built:
            opt.build(model.parameters())
        load_optimizers(model, config, contents, verify)
    for key, p in model.named_weights().items():
        p.data[...] = contents.weights[key]
    apply_rng_states(model, *rngs)
    return config.get("extra", {})


def load_weights(model, path, verify: bool = True) -> None:
    """Load weights saved by `save_weights` (or the weights of a whole saved model) into the
    built `model`, after checking names, shapes and dtypes."""
    contents = read_contents(path, verify, need_config=False)
    check_weights(model, contents.weights, contents.folder / WEIGHTS, verify)
    for key, p in model.named_weights().items():
        p.data[...] = contents.weights[key]


# ----- rebuilding ------------------------------------------------------------------------
def _rebuild(config: dict, comp, contents: Contents):
    """The model a config describes, built on one zero sample; the weight budget bounds what a
    crafted config can make it allocate, and building leaves the default generator alone."""
    from .. import losses, optim

    source = contents.folder / CONFIG
    budget = sum(a.size for a in contents.weights.values())
    rng_before = sg_random.get_state()
    try:
        with WeightBudget(budget):
            model = _from_config(config, source)
            if not callable(getattr(model, "build_from_sample", None)):  # not a Model
                raise CheckpointError(
                    f"{source}: class {config['class']!r} is a layer, not a model. {DAMAGED}"
                )
            if model.dtype.kind != "f":
                raise CheckpointError(
                    f"{source}: the model's dtype is {model.dtype}; expected "
                    f"a floating-point dtype. {DAMAGED}"
                )
            if comp is not None:
                if not isinstance(comp, dict):
                    raise CheckpointError(f"{source}: 'compile' must be an object. {DAMAGED}")
                opt_cfg = dict(comp["optimizer"])
                opt = type(optim.get(str(opt_cfg.pop("class")))).from_config(opt_cfg)
                loss, weights = _saved_loss(comp["loss"], losses)
                # Layers frozen after compile were in the optimizer when it saved its state:
                # thawed while it is built, they take their places in it again.
                flags = _thaw(model, comp.get("optimizer_weights"))
                # Only a model with several outputs has weights (subclasses may not take them).
                extra = {} if weights is None else {"loss_weights": weights}
                model.compile(optimizer=opt, loss=loss, metrics=comp["metrics"], **extra)
            shape = config["input_shape"]
            if model.built:  # a functional model builds itself from its config
                sample = None
            elif shape and all(isinstance(s, list) for s in shape):
                sample = [np.zeros(_probe(s), dtype=model.dtype) for s in shape]
            else:
                sample = np.zeros(_probe(shape), dtype=model.dtype)
            model.build_from_sample(sample)
            if comp is not None:
                for layer, trainable in flags:  # parents first: each ends with its own flag
                    layer.trainable = trainable
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - the safety net: any failure is the file's fault
        raise CheckpointError(
            f"{source}: cannot rebuild the model from it "
            f"({type(exc).__name__}: {str(exc)[:300]}); the file is corrupt "
            "or was edited by hand"
        ) from None
    finally:
        sg_random.set_state(rng_before)
    return model


def _from_config(config, source):
    """The model its config describes. A class of the user's that does not rebuild from
    the config it saved is explained as that, not as a damaged file."""
    try:
        cls = layer_class(config["class"])
    except UnknownClassError as exc:  # the user's class, not imported or not registered
        raise CheckpointError(f"{source}: cannot rebuild the model: {exc}") from None
    try:
        return cls.from_config(config["config"])
    except (TypeError, ValueError) as exc:
        if cls.__module__.split(".")[0] == "splitgrad":
            raise
        raise CheckpointError(
            f"{source}: {cls.__name__}.from_config could not rebuild the model from the config "
            f"its get_config saved ({type(exc).__name__}: {str(exc)[:300]}). Make get_config "
            "return the arguments __init__ takes (or leave get_config out: splitgrad then "
            "saves the arguments the model was made with)"
        ) from None


def _thaw(model, names) -> list:
    """Unfreeze the frozen layers that own weights the saved optimizer trains (`names`, the
    dotted paths it was built for); returns every layer's (layer, trainable) to restore."""
    flags = [(layer, layer.trainable) for _, layer in model.named_modules()]
    if names is None:  # saved before this was recorded: the optimizer had the trainable ones
        return flags
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"'optimizer_weights' must be a list of weight names. {DAMAGED}")
    for path, layer in model.named_modules():
        if not layer.trainable and any(n.startswith(path + ".") or not path for n in names):
            layer.trainable = True
    return flags


def _saved_loss(spec, losses):
    """(the loss, loss_weights) a compile setting describes: one loss, or one per output of a
    model with several (saved as {"outputs": [...], "weights": [...]})."""

    def one(item):
        return type(losses.get(str(item["class"]))).from_config(item["config"])

    if spec["class"] != "MultiOutputLoss":
        return one(spec), None
    config = spec["config"]
    outputs = [None if item is None else one(item) for item in config["outputs"]]
    return outputs, [float(w) for w in config["weights"]]


def _probe(shape) -> list:
    """The shape of the one-row batch that builds a model: a free axis (None, e.g. a sequence
    of any length) gets length 1."""
    return [1] + [1 if d is None else d for d in shape[1:]]
