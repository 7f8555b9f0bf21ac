"""Small helpers that every place uses on a model replica: loss, gradients, flat vectors, state.

They rely only on the contract of `Model`: `compute_loss(x, y)` (or `loss` plus
`regularization_losses()`), `optimizer` with `step()`/`zero_grad()`, and `parameters()`.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from .. import random as sg_random
from ..layers.layer import generators
from ..tensor import Tensor


def loss_tensor(model, x, y) -> Tensor:
    """The training loss of a batch (forward in training mode + regularization penalties)."""
    if not model.training:
        model.train()
    compute = getattr(model, "compute_loss", None)
    if compute is not None:
        return compute(x, y)
    if getattr(model, "loss", None) is None:
        raise RuntimeError(f"model {model.name!r} has no loss: call model.compile(...) first")
    loss = model.loss(model(x), y)
    for penalty in model.regularization_losses():
        loss = loss + penalty
    return loss


def zero_grad(model):
    opt = _optimizer(model)
    if hasattr(opt, "zero_grad"):
        opt.zero_grad()
    model.zero_grad()


def step_optimizer(model):
    _optimizer(model).step()


def backward(model, x, y) -> float:
    """Zero gradients, compute the loss of (x, y) and backpropagate it; returns the loss."""
    zero_grad(model)
    loss = loss_tensor(model, x, y)
    loss.backward()
    return float(loss.data)


def train_step(model, x, y, prox=None) -> float:
    """One optimizer step on (x, y); `prox=(mu, anchor)` adds FedProx's μ/2·‖w − anchor‖²."""
    zero_grad(model)
    loss = loss_tensor(model, x, y)
    value = float(loss.data)
    if prox is not None:
        mu, anchor = prox
        for p, a in zip(model.parameters(), split_flat(model, anchor)):
            diff = p - Tensor(a)
            loss = loss + (diff * diff).sum() * p.dtype.type(mu / 2.0)
    loss.backward()
    step_optimizer(model)
    return value


def _optimizer(model):
    opt = getattr(model, "optimizer", None)
    if opt is None:
        raise RuntimeError(f"model {model.name!r} has no optimizer: call model.compile(...) first")
    return opt


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
        out.append(np.asarray(flat[lo:lo + p.size]).reshape(p.shape))
        lo += p.size
    return out


def set_flat(model, flat):
    for p, a in zip(model.parameters(), split_flat(model, flat)):
        p.data[...] = a


def get_flat_grad(model) -> np.ndarray:
    parts = [np.zeros(p.size, p.dtype) if p.grad is None else np.asarray(p.grad).ravel()
             for p in model.parameters()]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def optimizer_step(model, flat_grad):
    """Install `flat_grad` as the parameters' gradients and take one optimizer step."""
    zero_grad(model)
    for p, g in zip(model.parameters(), split_flat(model, flat_grad)):
        p._accumulate(g)
    step_optimizer(model)


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
layer_rngs = generators


def export_state(model) -> dict:
    """Weights, optimizer state and every RNG state of a replica (plain arrays and JSON)."""
    opt = _optimizer(model)
    if not hasattr(opt, "state_dict"):
        raise RuntimeError(f"{type(opt).__name__} has no state_dict(); cannot move the run")
    return {"weights": model.get_weights(), "optimizer": copy.deepcopy(opt.state_dict()),
            "rng": copy.deepcopy(sg_random.get_state()),
            "layer_rngs": {k: copy.deepcopy(g.bit_generator.state)
                           for k, g in layer_rngs(model).items()}}


def import_state(model, state: dict):
    model.set_weights(state["weights"])
    _optimizer(model).load_state_dict(copy.deepcopy(state["optimizer"]))
    sg_random.set_state(copy.deepcopy(state["rng"]))
    for key, gen in layer_rngs(model).items():
        gen.bit_generator.state = copy.deepcopy(state["layer_rngs"][key])


# ----- replicas ---------------------------------------------------------------------------------
# A built optimizer keeps the parameters as views of its flat buffers; pickling or deep-copying
# the model would cut those views. So a replica travels as a recipe ("spec") and is rebuilt.
def pack(model, sample=None) -> dict:
    """A picklable spec of a compiled model: config, weights, optimizer state, loss, RNGs."""
    opt = _optimizer(model)
    if sample is None:
        sample = getattr(model, "_split_sample", None)
    if sample is None:
        raise RuntimeError(f"model {model.name!r}: pack() needs a sample batch to build a replica")
    return {"cls": type(model), "config": model.get_config(), "sample": np.array(sample[:1]),
            "weights": model.get_weights(), "opt_cls": type(opt),
            "opt_config": opt.get_config(),
            "opt_state": opt.state_dict() if getattr(opt, "built", True) else None,
            "loss": copy.deepcopy(model.loss),
            "layer_rngs": {k: g.bit_generator.state for k, g in layer_rngs(model).items()}}


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
    for key, gen in layer_rngs(twin).items():
        gen.bit_generator.state = copy.deepcopy(spec["layer_rngs"][key])
    twin._split_sample = spec["sample"]
    return twin
