"""Per-example gradients of linear layers in one batched pass, through a hook any layer can use.

DP-SGD needs every example's gradient, not only their mean. Looping over the examples costs
one forward and backward pass each. For a layer whose weights enter as pre = a·W + b, one
batched pass is enough, because the per-example gradient is an outer product:

    ∂ℓ_i/∂W = a_iᵀ δ_i,   ∂ℓ_i/∂b = Σ_t δ_i,t     (a = the layer's input, δ = ∂ℓ_i/∂pre)

so ‖∂ℓ_i/∂W‖² = ‖a_i‖²·‖δ_i‖² for 2-D inputs, and Σ_{t,s} (a_t·a_s)(δ_t·δ_s) for sequences
(the "ghost norm" of Goodfellow 2015 / Li et al. 2022), and a weighted sum over examples is one
product aᵀ(c ⊙ δ). δ is read off a zero "probe" added to the pre-activation: its gradient is
exactly ∂loss/∂pre.

The hook: a layer calls `linear_site(x, pre, kernel, bias)` on its pre-activation (Dense does,
and Conv2D with its receptive fields as x, positions = output pixels) and uses what it
returns. With many positions (a convolution) each example's gradient aᵢᵀδᵢ is built instead of
the Gram matrices when that is cheaper (in·out ≤ positions·(in + out)). Outside `recording()`
the hook returns `pre` itself; inside, `pre` plus a probe that the `Recorder` keeps. A layer
that does not call it is simply not covered, and `Recorder.covers(params)` tells the caller to
fall back to the per-example loop.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..tensor import Tensor

_local = threading.local()


def recording_now() -> bool:
    """True inside `recording()`: a layer with a fused fast path (Conv2D) then takes the plain
    path that exposes its pre-activation and inputs."""
    return getattr(_local, "recorder", None) is not None


def linear_site(x, pre: Tensor, kernel, bias) -> Tensor:
    """`pre` = x·kernel + bias (x: a Tensor or array of shape (n, ..., in), kernel read as an
    (in, out) matrix), with a probe added while per-example gradients are recorded. A
    convolution passes its receptive fields as x: (n, positions, kh·kw·in)."""
    recorder = getattr(_local, "recorder", None)
    if recorder is None:
        return pre
    probe = Tensor(np.zeros(pre.shape, pre.dtype), requires_grad=True)
    recorder.sites.append((x.data if isinstance(x, Tensor) else x, probe, kernel, bias))
    return pre + probe


@contextlib.contextmanager
def recording():
    """`with recording() as rec:` run a forward pass; `rec` then holds every linear site."""
    recorder = Recorder()
    _local.recorder = recorder
    try:
        yield recorder
    finally:
        _local.recorder = None


class Recorder:
    """The linear sites of one forward pass: (input, probe, kernel, bias) each."""

    def __init__(self):
        self.sites = []

    def covers(self, params) -> bool:
        """True when every parameter in `params` is the kernel or bias of exactly one recorded
        site (a weight used twice has cross terms in its norm that the sites do not see)."""
        seen = [id(p) for _, _, k, b in self.sites for p in (k, b) if p is not None]
        return len(seen) == len(set(seen)) and {id(p) for p in params} <= set(seen)

    def gradients(self, scale: float):
        """(per-example squared norms (n,), and a function that, given per-example weights
        c (n,), returns {id(param): Σ_i c_i·∂ℓ_i/∂param}), after backward of a loss whose
        per-example terms are `scale`·ℓ_i (so δ_i = probe.grad_i / scale). float64 throughout."""
        parts = []
        sq = None
        for a, probe, kernel, bias in self.sites:
            n = len(a)
            a64 = a.reshape(n, -1, a.shape[-1]).astype(np.float64)
            d64 = probe.grad.reshape(n, -1, probe.shape[-1]).astype(np.float64) / scale
            parts.append((a64, d64, kernel, bias))
            positions, k, o = a64.shape[1], a64.shape[2], d64.shape[2]
            if positions == 1:  # one position per example: the outer product's norm factorises
                s = (a64 * a64).sum(axis=(1, 2)) * (d64 * d64).sum(axis=(1, 2))
            elif k * o <= positions * (k + o):  # cheaper to build each example's gradient
                per = np.matmul(a64.transpose(0, 2, 1), d64)  # (n, in, out), batched GEMM
                s = (per * per).sum(axis=(1, 2))
            else:  # the ghost norm: Σ_{t,s} (a_t·a_s)(δ_t·δ_s) from two Gram matrices
                gram_a = np.matmul(a64, a64.transpose(0, 2, 1))
                gram_d = np.matmul(d64, d64.transpose(0, 2, 1))
                s = (gram_a * gram_d).sum(axis=(1, 2))
            if bias is not None:
                db = d64.sum(axis=1)
                s = s + (db * db).sum(axis=1)
            sq = s if sq is None else sq + s

        def weighted(c):
            out = {}
            for a64, d64, kernel, bias in parts:
                w = d64 * c[:, None, None]
                k, o = a64.shape[2], w.shape[2]
                grad = a64.reshape(-1, k).T @ w.reshape(-1, o)  # Σ_i c_i a_iᵀδ_i: one GEMM
                out[id(kernel)] = out.get(id(kernel), 0) + grad
                if bias is not None:
                    out[id(bias)] = out.get(id(bias), 0) + w.sum(axis=(0, 1))
            return out

        return sq, weighted
