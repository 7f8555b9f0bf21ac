"""Weight penalties that layers add to the training loss (Keras `kernel_regularizer`)."""

from __future__ import annotations

from .. import functional as F


class L1L2:
    """penalty = l1·Σ|w| + l2·Σw²."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w):
        total = None
        if self.l1:
            total = F.l1_penalty(w, self.l1)
        if self.l2:
            term = F.l2_penalty(w, self.l2)
            total = term if total is None else total + term
        return total if total is not None else (w * 0.0).sum()

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


def L1(l1=0.01):
    """penalty = l1·Σ|w|."""
    return L1L2(l1=l1)


def L2(l2=0.01):
    """penalty = l2·Σw²."""
    return L1L2(l2=l2)


def get(spec):
    """None, "l1", "l2", "l1_l2", a config dict, or an L1L2 object."""
    if spec is None or isinstance(spec, L1L2):
        return spec
    if isinstance(spec, dict):
        return L1L2(**spec)
    table = {"l1": L1, "l2": L2, "l1_l2": lambda: L1L2(0.01, 0.01)}
    if spec in table:
        return table[spec]()
    raise ValueError(f"unknown regularizer {spec!r}; use 'l1', 'l2', 'l1_l2' or L1L2(l1, l2)")


def config_of(reg):
    return None if reg is None else reg.get_config()
