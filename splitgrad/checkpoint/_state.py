"""A model's state as a checkpoint holds it, and the checks that run before any of it is used.

State = the weights ({dotted path: array}), the optimizer (settings and step counts as JSON,
arrays as {"param.key": array}), the library's default generator and every layer-owned
generator ({dotted path: bit-generator state}). Loading checks all of it against the model
(names, shapes, dtypes, finite values, valid generator states) before assigning anything, so
a refused checkpoint leaves the model untouched.
"""

from __future__ import annotations

import numpy as np

from .. import random as sg_random
from ..layers.layer import generators
from ._files import CheckpointError

TRUST = (
    "the run diverged before saving or the file was altered; load with verify=False to "
    "load it anyway"
)


# ----- saving ----------------------------------------------------------------------------
def weights_of(model) -> dict:
    return {k: p.data for k, p in model.named_weights().items()}


def refuse_non_finite(model, weights: dict, opt_arrays: dict, path) -> None:
    """ValueError naming the layer when a weight (or optimizer array) holds NaN or inf:
    a diverged model must never replace the good checkpoint at `path`."""
    layers = _layers_by_path(model)
    for key, arr in list(weights.items()) + list(opt_arrays.items()):
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            where = key.rsplit(".", 1)[0] if key in weights else key.rsplit(".", 2)[0]
            layer = layers.get(where, model)
            what = "weight" if key in weights else "optimizer state"
            raise ValueError(
                f"save to {path}: {what} {key!r} of layer {layer.name!r} "
                f"({type(layer).__name__}) holds {bad} NaN or infinite values; the run "
                f"diverged. Nothing was written: the previous checkpoint at {path} is kept. "
                "Lower the learning rate or clip gradients, and resume from it"
            )


def extra_optimizers(model) -> dict:
    """{name: optimizer} of the optimizers a model trains with besides `model.optimizer` (a
    GAN's discriminator's): what its `extra_optimizers()` method returns, if it has one.
    Checkpoints save and load their state beside the main optimizer's."""
    from ._manifest import MAX_EXTRA_OPTIMIZERS, extra_optimizer_name_problem

    method = getattr(model, "extra_optimizers", None)
    found = method() if callable(method) else {}
    who = f"{type(model).__name__}.extra_optimizers()"
    if not isinstance(found, dict):
        raise TypeError(f"{who} must return a dict {{name: optimizer}}, got {type(found).__name__}")
    if len(found) > MAX_EXTRA_OPTIMIZERS:
        raise ValueError(f"{who}: {len(found)} optimizers, at most {MAX_EXTRA_OPTIMIZERS}")
    seen = {id(getattr(model, "optimizer", None))}
    for name, opt in found.items():
        problem = extra_optimizer_name_problem(name)
        if problem:
            raise ValueError(f"{who}: {name!r}: {problem}")
        if not callable(getattr(opt, "state_dict", None)):
            raise TypeError(f"{who}: {name!r} is a {type(opt).__name__}, not an optimizer")
        if id(opt) in seen:
            raise ValueError(
                f"{who}: {name!r} is the model's optimizer or another entry; each optimizer is "
                "saved once, so list each extra optimizer once and not `model.optimizer`"
            )
        seen.add(id(opt))
    return dict(found)


def refuse_non_finite_optimizer(name: str, arrays: dict, path) -> None:
    """ValueError when an extra optimizer's array holds NaN or inf (see refuse_non_finite)."""
    for key, arr in arrays.items():
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise ValueError(
                f"save to {path}: state {key!r} of the optimizer {name!r} holds {bad} NaN or "
                f"infinite values; the run diverged. Nothing was written: the previous "
                f"checkpoint at {path} is kept. Lower the learning rate or clip gradients, and "
                "resume from it"
            )


def rng_states(model) -> tuple:
    """(default generator state, {dotted path: state} of the layer generators), as JSON."""
    return (sg_random.get_state(), {k: g.bit_generator.state for k, g in generators(model).items()})


# ----- loading ---------------------------------------------------------------------------
def check_weights(model, arrays: dict, source, verify: bool) -> None:
    """Raise CheckpointError unless `arrays` has exactly the model's weights, each of the
    same shape and dtype (and finite, with `verify`)."""
    weights = model.named_weights()
    missing = [k for k in weights if k not in arrays]
    extra = [k for k in arrays if k not in weights]
    if missing or extra:
        raise CheckpointError(
            f"{source}: weights do not match the model: missing {missing[:5]}, unexpected "
            f"{[k[:80] for k in extra[:5]]}. The file was saved from a different architecture."
        )
    layers = _layers_by_path(model)
    for key, p in weights.items():
        a = arrays[key]
        where = key.rsplit(".", 1)[0] if "." in key else ""
        layer = layers.get(where, model)
        named = f"weight {key!r} of layer {layer.name!r} ({type(layer).__name__})"
        if a.shape != p.shape:
            raise CheckpointError(
                f"{source}: {named} has shape {a.shape} in the file but {p.shape} in the "
                "model; rebuild the model with the saved sizes"
            )
        if a.dtype != p.data.dtype:
            raise CheckpointError(
                f"{source}: {named} is {a.dtype} in the file but {p.data.dtype} in the model; "
                "a checkpoint stores each weight in its layer's dtype, so the file was altered "
                f"or saved from a model with dtype={a.dtype.name}"
            )
        if verify and not np.isfinite(a).all():
            raise CheckpointError(f"{source}: {named} holds NaN or infinite values; {TRUST}")


def check_optimizer_arrays(optimizer, arrays: dict, source, verify: bool) -> None:
    """Each optimizer array has its parameter's dtype (and is finite, with `verify`); names
    and shapes are checked by `Optimizer.load_state_dict` itself."""
    dtypes = {k: v.dtype for k, v in optimizer.state_dict()["state"].items()}
    for key, a in arrays.items():
        want = dtypes.get(key)
        if want is not None and a.dtype != want:
            raise CheckpointError(
                f"{source}: optimizer state {key!r} is {a.dtype} in the file "
                f"but its parameter is {want}; the file was altered"
            )
        if verify and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(
                f"{source}: optimizer state {key!r} holds NaN or infinite values; {TRUST}"
            )


def checked_rng_states(model, saved_default, saved_layers, source, restore_default: bool):
    """Validated copies of the saved generator states, ready for `apply_rng_states`: each is
    first set on a scratch generator of the target's kind, which rejects malformed ones."""
    default = None
    if restore_default:
        default = _checked_state(
            sg_random.get_rng(), saved_default, source, "the default generator's state (rng_state)"
        )
    own = generators(model)
    if saved_layers is None:  # a checkpoint from before layer generators were saved
        return default, None
    if not isinstance(saved_layers, dict) or set(saved_layers) != set(own):
        found = sorted(saved_layers) if isinstance(saved_layers, dict) else saved_layers
        raise CheckpointError(
            f"{source}: the saved layer generators are {str(found)[:200]}, the model's layers "
            f"with their own generator are {sorted(own)}; the file was saved from a different "
            "architecture or altered"
        )
    layers = {
        key: _checked_state(gen, saved_layers[key], source, f"the generator of layer {key!r}")
        for key, gen in own.items()
    }
    return default, layers


def apply_rng_states(model, default, layers) -> None:
    if default is not None:
        sg_random.set_state(default)
    for key, gen in generators(model).items() if layers is not None else ():
        gen.bit_generator.state = layers[key]


def _checked_state(like: np.random.Generator, state, source, what):
    scratch = type(like.bit_generator)()
    try:
        if not isinstance(state, dict):
            raise TypeError(f"expected a dict, got {type(state).__name__}")
        scratch.state = state
    except Exception as exc:  # noqa: BLE001 - NumPy raises Key/Type/Value/OverflowError
        raise CheckpointError(
            f"{source}: {what} is not a valid "
            f"{type(scratch).__name__} state ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file was altered"
        ) from None
    return scratch.state


def _layers_by_path(layer, prefix="") -> dict:
    out = {}
    for key, child in layer.sublayers():
        out[prefix + key] = child
        out.update(_layers_by_path(child, prefix + key + "."))
    return out
