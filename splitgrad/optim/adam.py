"""Adam (with optional amsgrad and L2 weight decay) and AdamW (decoupled weight decay)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .._kernels.compiled import optimizer_kernels
from .base import Optimizer, _l2


class Adam(Optimizer):
    """m = β1m + (1−β1)g; v = β2v + (1−β2)g²; θ −= lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε).

    PyTorch's Adam: eps after the bias-corrected root, weight_decay as L2 (g += wd·θ), amsgrad
    uses max(v) so far. Defaults: learning_rate 1e-3, beta_1 0.9, beta_2 0.999, epsilon 1e-8.
    """

    defaults: ClassVar[dict] = {
        "learning_rate": 1e-3,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-8,
        "amsgrad": False,
        "weight_decay": 0.0,
    }
    n_scratch = 2
    decoupled = False

    def _state_names(self, h):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if h.amsgrad else names

    def _update(self, p, g, state, scratch, t, lr, h):
        s0, s1 = scratch
        if h.weight_decay:
            if self.decoupled:
                p *= 1 - lr * h.weight_decay
            else:
                g = _l2(p, g, h.weight_decay, s1)
        m, v = state[0], state[1]
        b1, b2 = h.beta_1, h.beta_2
        jit = optimizer_kernels(p.dtype)
        if jit is not None and p.dtype == g.dtype == m.dtype:
            # The same operations in one compiled pass (same bits; _kernels/optim_jit.py).
            f = p.dtype.type
            vmax = state[2] if h.amsgrad else v
            keep, fresh, root = f(1 - b1), f(1 - b2), f(math.sqrt(1 - b2**t))
            step = f(-(lr / (1 - b1**t)))
            jit.adam(p, g, m, v, vmax, h.amsgrad, keep, f(b2), fresh, root, f(h.epsilon), step)
            return
        np.subtract(g, m, out=s0)  # m.lerp_(g, 1 − β1), as PyTorch writes it
        s0 *= 1 - b1
        m += s0
        np.multiply(g, g, out=s0)
        s0 *= 1 - b2
        v *= b2
        v += s0
        if h.amsgrad:
            np.maximum(state[2], v, out=state[2])
            v = state[2]
        np.sqrt(v, out=s0)
        s0 /= math.sqrt(1 - b2**t)
        s0 += h.epsilon
        np.divide(m, s0, out=s0)
        s0 *= -(lr / (1 - b1**t))
        p += s0

    def _check(self, h=None):
        super()._check(h)
        src = self if h is None else h
        for key in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(src, key) < 1.0:
                raise ValueError(
                    f"{self._where(h)}: {key} must be in [0, 1), got {getattr(src, key)!r}"
                )


class AdamW(Adam):
    """θ *= 1 − lr·wd, then Adam without the L2 term (decoupled weight decay, default 1e-2)."""

    defaults: ClassVar[dict] = {**Adam.defaults, "weight_decay": 1e-2}
    decoupled = True
