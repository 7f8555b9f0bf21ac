"""Per-example gradients of linear layers in one batched pass, through a hook any layer can use.

DP-SGD needs every example's gradient, not only their mean. Looping over the examples costs
one forward and backward pass each. For a layer whose weights enter as pre = a·W + b, one
batched pass is enough, because the per-example gradient is an outer product:

    ∂ℓ_i/∂W = a_iᵀ δ_i,   ∂ℓ_i/∂b = Σ_t δ_i,t     (a = the layer's input, δ = ∂ℓ_i/∂pre)

so ‖∂ℓ_i/∂W‖² = ‖a_i‖²·‖δ_i‖² for 2-D inputs, and Σ_{t,s} (a_t·a_s)(δ_t·δ_s) for sequences
(the "ghost norm" of Goodfellow 2015 / Li et al. 2022), and a weighted sum over examples is one
product aᵀ(c ⊙ δ). δ is read off a zero "probe" added to the pre-activation: its gradient is
exactly ∂loss/∂pre.

The hook: a layer calls `linear_site(x, pre, kernel, bias)` on its pre-activation (Dense does)
and uses what it returns. Outside `recording()` that is `pre` itself; inside, `pre` plus a probe
that the `Recorder` keeps. A layer that does not call it is simply not covered, and
`Recorder.covers(params)` tells the caller to fall back to the per-example loop.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..tensor import Tensor

_local = threading.local()


def linear_site(x: Tensor, pre: Tensor, kernel, bias) -> Tensor:
    """`pre` = x·kernel + bias, with a probe added while per-example gradients are recorded."""
    recorder = getattr(_local, "recorder", None)
    if recorder is None:
        return pre
    probe = Tensor(np.zeros(pre.shape, pre.dtype), requires_grad=True)
    recorder.sites.append((x.data, probe, kernel, bias))
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
            if a64.shape[1] == 1:  # one position per example: the outer product's norm factorises
                s = np.einsum("bti,bti->b", a64, a64) * np.einsum("bto,bto->b", d64, d64)
            else:
                gram_a = np.einsum("bti,bsi->bts", a64, a64)
                gram_d = np.einsum("bto,bso->bts", d64, d64)
                s = np.einsum("bts,bts->b", gram_a, gram_d)
            if bias is not None:
                db = d64.sum(axis=1)
                s = s + np.einsum("bo,bo->b", db, db)
            sq = s if sq is None else sq + s

        def weighted(c):
            out = {}
            for a64, d64, kernel, bias in parts:
                w = d64 * c[:, None, None]
                out[id(kernel)] = out.get(id(kernel), 0) + np.einsum("bti,bto->io", a64, w)
                if bias is not None:
                    out[id(bias)] = out.get(id(bias), 0) + w.sum(axis=(0, 1))
            return out

        return sq, weighted
