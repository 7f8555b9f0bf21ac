"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .base import Optimizer, _l2


class SGD(Optimizer):
    """g += wd·θ; b = μb + (1−dampening)g (b = g at first); g = g + μb (nesterov) or b; θ −= lr·g.

    Defaults (PyTorch): learning_rate 1e-3, momentum 0, dampening 0, nesterov False, wd 0.
    """

    defaults: ClassVar[dict] = {
        "learning_rate": 1e-3,
        "momentum": 0.0,
        "dampening": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
    }
    n_scratch = 2

    def _check(self, h=None):
        super()._check(h)
        src = self if h is None else h
        if src.nesterov and (src.momentum <= 0 or src.dampening != 0):
            raise ValueError(
                f"{self._where(h)}: nesterov needs momentum > 0 and dampening 0, got momentum "
                f"{src.momentum!r}, dampening {src.dampening!r}"
            )

    def _state_names(self, h):
        return ("momentum_buffer",) if h.momentum else ()

    def _update(self, p, g, state, scratch, t, lr, h):
        s0, s1 = scratch
        if h.weight_decay:
            g = _l2(p, g, h.weight_decay, s1)
        if h.momentum:
            b = state[0]
            if t == 1:
                np.copyto(b, g)
            else:
                b *= h.momentum
                if h.dampening:
                    np.multiply(g, 1 - h.dampening, out=s0)
                    b += s0
                else:
                    b += g
            if h.nesterov:
                np.multiply(b, h.momentum, out=s0)
                s0 += g
                g = s0
            else:
                g = b
        np.multiply(g, -lr, out=s0)
        p += s0
