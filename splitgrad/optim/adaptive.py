"""Per-coordinate adaptive rules: RMSprop, Adagrad and Adadelta (PyTorch's update rules)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .base import Optimizer, _l2


class RMSprop(Optimizer):
    """v = ρv + (1−ρ)g²; d = √(v − ḡ²) if centered else √v, plus ε; θ −= lr·g/d (or via momentum).

    PyTorch's rule and defaults: learning_rate 1e-2, rho (PyTorch alpha) 0.99, epsilon 1e-8,
    momentum 0 (b = μb + g/d; θ −= lr·b), centered False, weight_decay 0 (L2).
    """

    defaults: ClassVar[dict] = {
        "learning_rate": 1e-2,
        "rho": 0.99,
        "epsilon": 1e-8,
        "momentum": 0.0,
        "centered": False,
        "weight_decay": 0.0,
    }
    n_scratch = 2

    def __init__(self, params=None, learning_rate=None, *, alpha=None, **kwargs):
        if alpha is not None:
            kwargs["rho"] = alpha  # PyTorch's name for rho
        super().__init__(params, learning_rate, **kwargs)

    def _check(self, h=None):
        super()._check(h)
        _in_unit_interval(self, h, "rho")

    def _state_names(self, h):
        return (
            ("square_avg",)
            + (("grad_avg",) if h.centered else ())
            + (("momentum_buffer",) if h.momentum else ())
        )

    def _update(self, p, g, state, scratch, t, lr, h):
        s0, s1 = scratch
        if h.weight_decay:
            g = _l2(p, g, h.weight_decay, s1)
        rho = h.rho
        v = state[0]
        np.multiply(g, g, out=s0)
        s0 *= 1 - rho
        v *= rho
        v += s0
        if h.centered:
            ga = state[1]
            np.subtract(g, ga, out=s0)
            s0 *= 1 - rho
            ga += s0
            np.multiply(ga, ga, out=s0)
            np.subtract(v, s0, out=s0)
            np.sqrt(s0, out=s0)
        else:
            np.sqrt(v, out=s0)
        s0 += h.epsilon
        if h.momentum:
            b = state[-1]
            b *= h.momentum
            np.divide(g, s0, out=s0)
            b += s0
            np.multiply(b, -lr, out=s0)
        else:
            np.divide(g, s0, out=s0)
            s0 *= -lr
        p += s0


class Adagrad(Optimizer):
    """sum += g²; θ −= lr/(1 + (t−1)·lr_decay) · g / (√sum + ε); sum starts at the initial value.

    PyTorch's defaults: learning_rate 1e-2, lr_decay 0, initial_accumulator_value 0, eps 1e-10.
    """

    defaults: ClassVar[dict] = {
        "learning_rate": 1e-2,
        "lr_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "epsilon": 1e-10,
        "weight_decay": 0.0,
    }
    n_scratch = 2

    def _state_names(self, h):
        return ("sum",)

    def initial_state(self, key, h):
        return h.initial_accumulator_value

    def _update(self, p, g, state, scratch, t, lr, h):
        s0, s1 = scratch
        if h.weight_decay:
            g = _l2(p, g, h.weight_decay, s1)
        acc = state[0]
        np.multiply(g, g, out=s0)
        acc += s0
        np.sqrt(acc, out=s0)
        s0 += h.epsilon
        np.divide(g, s0, out=s0)
        s0 *= -(lr / (1 + (t - 1) * h.lr_decay))
        p += s0


class Adadelta(Optimizer):
    """v = ρv + (1−ρ)g²; δ = √(u + ε)/√(v + ε)·g; u = ρu + (1−ρ)δ²; θ −= lr·δ.

    PyTorch's defaults: learning_rate 1.0, rho 0.9, epsilon 1e-6, weight_decay 0 (L2).
    """

    defaults: ClassVar[dict] = {
        "learning_rate": 1.0,
        "rho": 0.9,
        "epsilon": 1e-6,
        "weight_decay": 0.0,
    }
    n_scratch = 3

    def _check(self, h=None):
        super()._check(h)
        _in_unit_interval(self, h, "rho")

    def _state_names(self, h):
        return ("square_avg", "acc_delta")

    def _update(self, p, g, state, scratch, t, lr, h):
        s0, s1, s2 = scratch
        if h.weight_decay:
            g = _l2(p, g, h.weight_decay, s2)
        rho, eps = h.rho, h.epsilon
        v, u = state
        np.multiply(g, g, out=s0)
        s0 *= 1 - rho
        v *= rho
        v += s0
        np.add(v, eps, out=s0)
        np.sqrt(s0, out=s0)
        np.add(u, eps, out=s1)
        np.sqrt(s1, out=s1)
        s1 /= s0
        s1 *= g
        np.multiply(s1, s1, out=s0)
        s0 *= 1 - rho
        u *= rho
        u += s0
        s1 *= -lr
        p += s1


def _in_unit_interval(opt, h, key):
    value = getattr(opt if h is None else h, key)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{opt._where(h)}: {key} must be in [0, 1], got {value!r}")
