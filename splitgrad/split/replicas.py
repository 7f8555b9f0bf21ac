"""What every place does to a model replica: gradients, flat vectors, random streams, state.

A replica is an ordinary compiled `Model`; these helpers use only its public contract:
`compute_loss(x, y)`, `optimizer` (`zero_grad`, `grad_buffers`, `step`, `state_dict`),
`parameters()`, `get_weights`/`set_weights` and `threads()`.

A replica travels between processes as a plain dict, a "spec" (`pack`/`unpack`): config,
weights, optimizer state and generator states. A built optimizer keeps the parameters as views
of its flat buffers, which pickling the model object would cut apart; a spec is only arrays and
JSON, so it crosses to another place (or a Ray actor) without special pickling.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from .. import metrics as metrics_mod
from .. import random as sg_random
from ..layers.layer import generators
from ..tensor import Tensor


# ----- gradients and steps ---------------------------------------------------------------------
def _optimizer(model):
    opt = getattr(model, "optimizer", None)
    if opt is None:
        raise RuntimeError(f"model {model.name!r} has no optimizer: call model.compile(...) first")
    return opt


def backward(model, x, y, penalty=None) -> float:
    """Zero the gradients, backpropagate the training loss of (x, y) (plus `penalty(model)`,
    a Tensor, if given) into the optimizer's buffers; returns the loss without the penalty."""
    opt = _optimizer(model)
    opt.zero_grad()
    if not model.training:
        model.train()
    with model.threads():
        loss = model.compute_loss(x, y)
        value = float(loss.data)
        if penalty is not None:
            loss = loss + penalty(model)
        loss.backward(into=opt.grad_buffers())
    return value


def train_step(model, x, y, penalty=None) -> float:
    """One optimizer step on (x, y); returns the batch loss."""
    value = backward(model, x, y, penalty)
    _optimizer(model).step()
    return value


def optimizer_step(model, flat_grad):
    """Install `flat_grad` as the parameters' gradients and take one optimizer step."""
    opt = _optimizer(model)
    buffers = opt.grad_buffers()  # the optimizer's own gradient buffers: its fast flat path
    for p, g in zip(model.parameters(), split_flat(model, flat_grad)):
        np.copyto(buffers[p], g)
        p.grad = buffers[p]
    opt.step()


def proximal(anchor, mu):
    """FedProx's penalty μ/2·‖w − anchor‖², as a `penalty` for `backward`."""

    def penalty(model):
        total = None
        for p, a in zip(model.parameters(), split_flat(model, anchor)):
            diff = p - Tensor(a)
            term = (diff * diff).sum() * p.dtype.type(mu / 2.0)
            total = term if total is None else total + term
        return total

    return penalty


def has_dropout(model) -> bool:
    """True when a layer of `model` draws random numbers in training (`Layer.stochastic`:
    Dropout), so a replica's masks depend on the stream it draws from."""
    stack = [model]
    while stack:
        layer = stack.pop()
        if layer.stochastic():
            return True
        stack.extend(child for _, child in layer.sublayers())
    return False


# ----- flat vectors of the trainable parameters ------------------------------------------------
def flat_dtype(model) -> np.dtype:
    params = model.parameters()
    return params[0].dtype if params else np.dtype("float32")


def count(model) -> int:
    return int(sum(p.size for p in model.parameters()))


def get_flat(model) -> np.ndarray:
    params = model.parameters()
    if not params:
        return np.zeros(0, np.float32)
    return np.concatenate([p.data.ravel() for p in params])


def split_flat(model, flat):
    out, lo = [], 0
    for p in model.parameters():
        out.append(np.asarray(flat[lo : lo + p.size]).reshape(p.shape))
        lo += p.size
    return out


def set_flat(model, flat):
    for p, a in zip(model.parameters(), split_flat(model, flat)):
        p.data[...] = a


def get_flat_grad(model) -> np.ndarray:
    parts = [
        np.zeros(p.size, p.dtype) if p.grad is None else np.asarray(p.grad).ravel()
        for p in model.parameters()
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def chunk_bounds(size: int, n: int, c: int):
    """[lo, hi) of chunk c when `size` entries are cut into n nearly equal chunks."""
    base, extra = divmod(size, n)
    lo = c * base + min(c, extra)
    return lo, lo + base + (1 if c < extra else 0)


# ----- random streams of replicas ----------------------------------------------------------------
# Dropout draws from the library's default generator. A replica must not draw from whatever
# stream its process happens to have (each Ray actor's is unseeded), so every training op runs
# with the default generator set to a stream that depends only on the run: (seed, rank, step).
NOISE_TAG = 0x5EED  # keeps these streams apart from other seeded streams of the same run


def noise_key(seed: int, rank: int, step: int) -> list:
    """The seed of replica `rank`'s random stream in step (or round) `step` of a run."""
    return [int(seed), NOISE_TAG, int(rank), int(step)]


def key_state(key) -> dict:
    """A generator state (for `rng_scope`) seeded from `key`."""
    return np.random.default_rng(key).bit_generator.state


@contextlib.contextmanager
def rng_scope(state):
    """Run a block with the default generator in `state` (None: leave it alone).

    Yields a dict whose "state" holds the generator's state at the end of the block; the
    process's own stream is put back afterwards, so replicas never move each other's streams.
    """
    box = {"state": state}
    if state is None:
        yield box
        return
    saved = sg_random.get_state()
    sg_random.set_state(copy.deepcopy(state))
    try:
        yield box
    finally:
        box["state"] = sg_random.get_state()
        sg_random.set_state(saved)


# ----- the whole training state (checkpoint/resume, recovery) ----------------------------------
def export_state(model) -> dict:
    """Weights, optimizer state and every RNG state of a replica (plain arrays and JSON)."""
    return {
        "weights": model.get_weights(),
        "optimizer": copy.deepcopy(_optimizer(model).state_dict()),
        "rng": copy.deepcopy(sg_random.get_state()),
        "layer_rngs": {
            k: copy.deepcopy(g.bit_generator.state) for k, g in generators(model).items()
        },
    }


def import_state(model, state: dict):
    """The reverse of `export_state` (into a built, compiled model of the same shape)."""
    model.set_weights(state["weights"])
    _optimizer(model).load_state_dict(copy.deepcopy(state["optimizer"]))
    sg_random.set_state(copy.deepcopy(state["rng"]))
    for key, gen in generators(model).items():
        gen.bit_generator.state = copy.deepcopy(state["layer_rngs"][key])


# ----- replicas ---------------------------------------------------------------------------------
def pack(model, sample) -> dict:
    """A picklable spec of a compiled model (built from `sample`, one input row): config,
    weights, optimizer state, loss and generator states."""
    opt = _optimizer(model)
    return {
        "cls": type(model),
        "config": model.get_config(),
        "sample": np.array(sample[:1]),
        "weights": model.get_weights(),
        "opt_cls": type(opt),
        "opt_config": opt.get_config(),
        "opt_state": opt.state_dict() if getattr(opt, "built", True) else None,
        "loss": copy.deepcopy(model.loss),
        "metrics": [metrics_mod.to_spec(m) for m in getattr(model, "metric_specs", [])],
        "layer_rngs": {k: g.bit_generator.state for k, g in generators(model).items()},
    }


def unpack(spec: dict):
    """Rebuild a compiled replica from `pack`'s spec (shares nothing with the original)."""
    # Building draws initial weights from the default RNG; a replica must not move that stream
    # (dropout draws from it), so its state is put back: the weights are overwritten anyway.
    rng_state = copy.deepcopy(sg_random.get_state())
    twin = spec["cls"].from_config(copy.deepcopy(spec["config"]))
    twin.build_from_sample(spec["sample"])
    sg_random.set_state(rng_state)
    twin.set_weights(spec["weights"])
    opt = spec["opt_cls"].from_config(copy.deepcopy(spec["opt_config"]))
    opt.build(twin.parameters())
    if spec["opt_state"] is not None:
        opt.load_state_dict(copy.deepcopy(spec["opt_state"]))
    twin.optimizer, twin.loss = opt, copy.deepcopy(spec["loss"])
    twin.metric_specs = list(spec.get("metrics", []))
    twin.metrics = metrics_mod.get_list(twin.metric_specs, twin.loss)
    for key, gen in generators(twin).items():
        gen.bit_generator.state = copy.deepcopy(spec["layer_rngs"][key])
    return twin


def adopt(model, spec):
    """Copy a replica's weights, optimizer state and layer generators (a `pack` spec) into the
    driver's `model`; a spec with a "stream" (one replica that continued the driver's default
    generator) also hands that stream back, so the driver continues from its end."""
    model.set_weights(spec["weights"])
    if spec["opt_state"] is not None:
        model.optimizer.load_state_dict(spec["opt_state"])
    for key, gen in generators(model).items():
        gen.bit_generator.state = spec["layer_rngs"][key]
    if spec.get("stream") is not None:
        sg_random.set_state(spec["stream"])
