"""Safe checkpoints: the architecture as JSON, weights and optimizer state as safetensors.

A saved model is a folder:
    config.json              architecture, compile settings, optimizer scalars, RNG state,
                             and the SHA-256 of each tensor file (safetensors has no checksum)
    weights.safetensors      every layer weight, keyed by its dotted path ("layers.0.kernel")
    optimizer.safetensors    the optimizer's arrays (moments, buffers), when compiled

`save_weights` writes only weights.safetensors and sha256.json (its checksum).

Nothing is pickled, so loading never runs code. Saving is atomic: the new checkpoint is written
to a temporary folder beside the target and swapped in with renames, so a crash mid-save leaves
the previous checkpoint intact (at PATH, or at PATH.old for the instant between the renames).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import metrics
from . import random as sg_random

FORMAT = "splitgrad-model"
VERSION = 1
CONFIG, WEIGHTS, OPTIMIZER = "config.json", "weights.safetensors", "optimizer.safetensors"
SUMS = "sha256.json"  # the checksum beside a bare save_weights file


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


# ----- low-level file helpers ------------------------------------------------------------
def _write_tensors(path: Path, arrays: dict):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_tensors(path: Path, sha256: str | None = None) -> dict:
    from safetensors.numpy import load

    if not path.exists():
        raise CheckpointError(f"{path}: file is missing; the checkpoint is incomplete")
    data = path.read_bytes()
    # A flipped bit in the tensor data still parses as safetensors: only a checksum sees it.
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(
            f"{path}: checksum mismatch with config.json; the file is corrupt or was changed "
            "after saving. Restore it from a backup or retrain."
        )
    try:
        return load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(
            f"{path}: cannot read it as safetensors ({exc}); the file is truncated or "
            "corrupt. Restore it from a backup or retrain."
        ) from None


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(
            f"{path}: file is missing; is {path.parent} a splitgrad model folder "
            "(made by model.save)?"
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the file is corrupt") from None


def atomic_folder(target) -> _AtomicFolder:
    """`with atomic_folder(p) as tmp:` write files into tmp; on success tmp replaces p."""
    return _AtomicFolder(Path(target))


class _AtomicFolder:
    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        if self.target.exists() and not self.target.is_dir():
            # The swap below would move the file aside; never replace a user's file.
            raise CheckpointError(f"{self.target}: is a file, not a folder; choose another path")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=self.target.name + ".tmp-",
                                         dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        for f in self.tmp.iterdir():  # make the bytes durable before the swap
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = self.target.with_name(self.target.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if self.target.exists():
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        shutil.rmtree(old, ignore_errors=True)
        return False


def _resolve(path) -> Path:
    """The folder to load: PATH, or PATH.old if a save was interrupted between its renames."""
    path = Path(path)
    if not path.exists():
        old = path.with_name(path.name + ".old")
        if old.exists():
            return old
        raise CheckpointError(f"{path}: no such model folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a model folder (made by model.save), got a file")
    return path


# ----- weights ---------------------------------------------------------------------------
def _layers_by_path(layer, prefix="") -> dict:
    out = {}
    for key, child in layer.sublayers():
        out[prefix + key] = child
        out.update(_layers_by_path(child, prefix + key + "."))
    return out


def assign_weights(model, arrays: dict, source: str):
    """Copy named arrays into the model's weights, checking names and shapes first."""
    weights = model.named_weights()
    missing = [k for k in weights if k not in arrays]
    extra = [k for k in arrays if k not in weights]
    if missing or extra:
        raise CheckpointError(
            f"{source}: weights do not match the model: missing {missing[:5]}, unexpected "
            f"{extra[:5]}. The file was saved from a different architecture."
        )
    for key, p in weights.items():
        a = arrays[key]
        if a.shape != p.shape:
            where = key.rsplit(".", 1)[0] if "." in key else ""
            layer = _layers_by_path(model).get(where, model)
            raise CheckpointError(
                f"{source}: weight {key!r} of layer {layer.name!r} ({type(layer).__name__}) "
                f"has shape {a.shape} in the file but {p.shape} in the model; rebuild the "
                "model with the saved sizes"
            )
    for key, p in weights.items():
        p.data[...] = arrays[key]


def save_weights(model, path):
    """Weights only, as PATH/weights.safetensors plus its SHA-256 in PATH/sha256.json."""
    path = Path(path)
    with atomic_folder(path) as tmp:
        _write_tensors(tmp / WEIGHTS, {k: p.data for k, p in model.named_weights().items()})
        (tmp / SUMS).write_text(json.dumps({WEIGHTS: _sha256(tmp / WEIGHTS)}, indent=1))


def load_weights(model, path, sha256: str | None = None):
    """Load weights saved by save_weights (checked against sha256.json when it is there)."""
    path = _resolve(path)
    if sha256 is None and (path / SUMS).exists():
        sha256 = _read_json(path / SUMS).get(WEIGHTS)
    assign_weights(model, _read_tensors(path / WEIGHTS, sha256), str(path / WEIGHTS))


# ----- whole models ----------------------------------------------------------------------
def save_model(model, path, extra: dict | None = None):
    """Save architecture, weights, compile settings, optimizer state and the RNG state."""
    if not model.built:
        raise ValueError("model.save: the model is not built yet; call it on data or fit first")
    config = {
        "format": FORMAT,
        "version": VERSION,
        "class": type(model).__name__,
        "config": model.get_config(),
        "input_shape": list(model.input_shape),
        "rng_state": sg_random.get_state(),
        "extra": extra or {},
    }
    opt_arrays = {}
    if getattr(model, "optimizer", None) is not None:
        if not model.optimizer.built:  # compiled, then built by a plain call: no steps yet
            model.optimizer.build(model.parameters())
        config["compile"] = {
            "optimizer": model.optimizer.get_config() | {"class": type(model.optimizer).__name__},
            "loss": {"class": type(model.loss).__name__, "config": model.loss.get_config()},
            "metrics": [metrics.to_spec(m) for m in model.metric_specs],
        }
        state = model.optimizer.state_dict()
        config["optimizer_state"] = {k: v for k, v in state.items() if k != "state"}
        opt_arrays = state.get("state", {})
    with atomic_folder(path) as tmp:
        _write_tensors(tmp / WEIGHTS, {k: p.data for k, p in model.named_weights().items()})
        if opt_arrays:
            _write_tensors(tmp / OPTIMIZER, opt_arrays)
        config["sha256"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir())}
        (tmp / CONFIG).write_text(json.dumps(config, indent=1, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint config")


def load_model(path, compile=True, restore_rng=True):
    """Rebuild a model saved with `model.save(path)`: architecture, weights, optimizer state."""
    from . import losses, optim
    from .layers.layer import layer_class

    path = _resolve(path)
    config = _read_json(path / CONFIG)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path / CONFIG}: not a splitgrad model config "
                              f"(format {found!r})")
    if config.get("version", 0) > VERSION:
        raise CheckpointError(f"{path / CONFIG}: saved by a newer splitgrad (version "
                              f"{config['version']}); upgrade splitgrad to load it")
    # Checkpoints from before checksums were recorded load without the check.
    sums = config.get("sha256") or {}
    comp = config.get("compile") if compile else None
    try:
        model = layer_class(config["class"]).from_config(config["config"])
        if comp:
            opt_cfg = dict(comp["optimizer"])
            opt = optim.get(opt_cfg.pop("class").lower()).__class__.from_config(opt_cfg)
            loss = losses.get(comp["loss"]["class"]).__class__.from_config(comp["loss"]["config"])
            model.compile(optimizer=opt, loss=loss, metrics=comp["metrics"])
        sample = np.zeros([1] + list(config["input_shape"])[1:], dtype=model.dtype)
        model.build_from_sample(sample)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path / CONFIG}: cannot rebuild the model from it "
                              f"({type(exc).__name__}: {exc}); the file is corrupt or was "
                              "edited by hand") from None
    load_weights(model, path, sums.get(WEIGHTS))
    if comp and "optimizer_state" in config:
        # A listed optimizer file must be there; unlisted means the optimizer had no arrays.
        listed = OPTIMIZER in sums or (not sums and (path / OPTIMIZER).exists())
        arrays = _read_tensors(path / OPTIMIZER, sums.get(OPTIMIZER)) if listed else {}
        try:
            model.optimizer.load_state_dict({**config["optimizer_state"], "state": arrays})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path / OPTIMIZER}: the optimizer state does not fit the "
                                  f"model ({exc})") from None
    if restore_rng and "rng_state" in config:
        sg_random.set_state(config["rng_state"])
    model.saved_extra = config.get("extra", {})
    return model
