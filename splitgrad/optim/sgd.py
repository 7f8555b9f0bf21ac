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

    def _check(self):
        super()._check()
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                f"SGD: nesterov needs momentum > 0 and dampening 0, got momentum "
                f"{self.momentum!r}, dampening {self.dampening!r}"
            )

    def state_names(self):
        return ("momentum_buffer",) if self.momentum else ()

    def _update(self, p, g, state, scratch, t, lr):
        s0, s1 = scratch
        if self.weight_decay:
            g = _l2(p, g, self.weight_decay, s1)
        if self.momentum:
            b = state[0]
            if t == 1:
                np.copyto(b, g)
            else:
                b *= self.momentum
                if self.dampening:
                    np.multiply(g, 1 - self.dampening, out=s0)
                    b += s0
                else:
                    b += g
            if self.nesterov:
                np.multiply(b, self.momentum, out=s0)
                s0 += g
                g = s0
            else:
                g = b
        np.multiply(g, -lr, out=s0)
        p += s0
