"""Shared test helpers: the PyTorch oracle and finite-difference gradients."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

torch.set_default_dtype(torch.float64)


def to_torch(arr, requires_grad=True):
    """A float64 leaf torch tensor holding a copy of `arr`."""
    return torch.tensor(np.array(arr, dtype=np.float64), requires_grad=requires_grad)


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar function f at x (x is perturbed in place)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float(f())
        flat[i] = old - eps
        down = float(f())
        flat[i] = old
        g[i] = (up - down) / (2 * eps)
    return grad


def assert_close(ours, theirs, rtol=1e-7, atol=1e-9, what=""):
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    np.testing.assert_allclose(
        np.asarray(ours), np.asarray(theirs), rtol=rtol, atol=atol, err_msg=what
    )


def scripted_score(values):
    """A callback that puts `values[epoch]` into each epoch's logs as "score" (for
    ReduceLROnPlateau and friends to watch), before the callbacks listed after it."""
    from splitgrad import callbacks

    class Score(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = values[epoch]

    return Score()


@contextlib.contextmanager
def compiled_kernels(enabled):
    """Run the block with splitgrad's compiled kernels on or off (off: the NumPy path)."""
    from splitgrad._kernels import compiled

    before = compiled.ENABLED
    compiled.ENABLED = enabled
    try:
        yield
    finally:
        compiled.ENABLED = before


def without_fusion(rule, run):
    """run() with one of layers/fusion.py's rules (a function name there, e.g. "dense_chain")
    switched off, so that a Sequential runs those layers one by one."""
    from splitgrad.layers import fusion

    real = getattr(fusion, rule)
    setattr(fusion, rule, lambda *args: None)
    try:
        return run()
    finally:
        setattr(fusion, rule, real)


def compiled_and_numpy(run):
    """(compiled, numpy): what `run()` (a list of arrays) returns with splitgrad's compiled
    kernels and with the NumPy path; the compiled run is made twice and must give the same bits
    both times (reproducible from run to run)."""
    results = []
    for enabled in (True, False, True):
        with compiled_kernels(enabled):
            results.append([np.array(a, copy=True) for a in run()])
    for a, b in zip(results[0], results[2]):
        np.testing.assert_array_equal(a, b)
    return results[0], results[1]


def assert_bitwise_equal(got, want, dtype=None):
    """Every array of `got` equals its partner in `want` bit for bit (and has `dtype`)."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if dtype is not None:
            assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)


def mlp_loss(p, x, y):
    """The optimizer tests' model in splitgrad: mse(y, tanh(x·w1 + b1)·w2 + b2), p's Tensors."""
    from splitgrad import losses, ops
    from splitgrad.tensor import Tensor

    h = ops.tanh(ops.linear(Tensor(x), p["w1"], p["b1"]))
    return losses.mse(y, ops.linear(h, p["w2"], p["b2"]))


def torch_mlp_loss(p, x, y):
    """`mlp_loss` in PyTorch, p's torch tensors."""
    h = torch.tanh(torch.as_tensor(x) @ p["w1"] + p["b1"])
    return ((h @ p["w2"] + p["b2"] - torch.as_tensor(y)) ** 2).mean()


def torch_sgd_step(loss, params, lr):
    """One plain SGD step of PyTorch tensors `params` on `loss`: p −= lr·∂loss/∂p."""
    for p in params:
        p.grad = None
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
