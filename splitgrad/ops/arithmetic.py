"""Elementwise arithmetic and unary maths primitives (add, mul, pow, where, clip, exp, log...).

Binary ops undo broadcasting in backward with the shared helper `unbroadcast`.
"""

from __future__ import annotations

import numpy as np

from ..tensor import Function, unbroadcast


# ----- elementwise arithmetic ------------------------------------------------------------
class Add(Function):
    """z = a + b (broadcasting)."""

    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return a + b

    def backward(self, g):
        needs = self.needs
        return (
            unbroadcast(g, self.shapes[0]) if needs[0] else None,
            unbroadcast(g, self.shapes[1]) if needs[1] else None,
        )


class Sub(Function):
    """z = a - b (broadcasting)."""

    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return a - b

    def backward(self, g):
        needs = self.needs
        return (
            unbroadcast(g, self.shapes[0]) if needs[0] else None,
            unbroadcast(-g, self.shapes[1]) if needs[1] else None,
        )


class Mul(Function):
    """z = a * b (broadcasting); dz/da = b, dz/db = a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        ga = unbroadcast(g * b, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(g * a, np.shape(b)) if self.needs[1] else None
        return ga, gb


class Div(Function):
    """z = a / b (broadcasting); dz/da = 1/b, dz/db = -a/b²."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        ga = unbroadcast(g / b, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(-g * a / (b * b), np.shape(b)) if self.needs[1] else None
        return ga, gb


class Neg(Function):
    """z = -a."""

    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Pow(Function):
    """z = a ** b; dz/da = b·a^(b-1) (0 where b = 0), dz/db = a^b·log(a) (0 where a = 0, b ≥ 0).

    The two zero cases follow PyTorch, where the plain formulas would give 0·inf = nan.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = np.power(a, b)
        return self.out

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.needs[0]:
                ga = g * np.where(b == 0, 0, b * np.power(a, b - 1)).astype(g.dtype, copy=False)
                ga = unbroadcast(ga, np.shape(a))
            if self.needs[1]:
                dlog = np.where((a == 0) & (b >= 0), 0, self.out * np.log(a))
                gb = unbroadcast(g * dlog.astype(g.dtype, copy=False), np.shape(b))
        return ga, gb


class Maximum(Function):
    """z = max(a, b) elementwise; ties split the gradient evenly (as PyTorch does)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return np.maximum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        # Weights in g's dtype: a float64 weight array would silently upcast float32 grads.
        wa = ((a > b) + 0.5 * (a == b)).astype(g.dtype, copy=False)
        ga = unbroadcast(g * wa, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(g * (1 - wa), np.shape(b)) if self.needs[1] else None
        return ga, gb


class Minimum(Function):
    """z = min(a, b) elementwise; ties split the gradient evenly."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return np.minimum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        # Weights in g's dtype: a float64 weight array would silently upcast float32 grads.
        wa = ((a < b) + 0.5 * (a == b)).astype(g.dtype, copy=False)
        ga = unbroadcast(g * wa, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(g * (1 - wa), np.shape(b)) if self.needs[1] else None
        return ga, gb


class Where(Function):
    """z = a where cond else b (cond is a boolean array, not differentiated)."""

    def forward(self, cond, a, b):
        self.cond = np.asarray(cond, dtype=bool)
        self.shapes = (np.shape(a), np.shape(b))
        return np.where(self.cond, a, b)

    def backward(self, g):
        zero = np.zeros((), dtype=g.dtype)
        ga = unbroadcast(np.where(self.cond, g, zero), self.shapes[0]) if self.needs[1] else None
        gb = unbroadcast(np.where(self.cond, zero, g), self.shapes[1]) if self.needs[2] else None
        return None, ga, gb


class Clip(Function):
    """z = min(max(a, lo), hi); gradient 1 where lo ≤ a ≤ hi (inclusive, like torch.clamp)."""

    def forward(self, a, lo=None, hi=None):
        self.mask = np.ones(a.shape, dtype=bool)
        if lo is not None:
            self.mask &= a >= lo
        if hi is not None:
            self.mask &= a <= hi
        return np.clip(a, lo, hi)

    def backward(self, g):
        return (g * self.mask,)


class Cast(Function):
    """z = a converted to another float dtype; the gradient converts back."""

    def forward(self, a, dtype=None):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return (g.astype(self.src),)


# ----- unary maths -----------------------------------------------------------------------
class Exp(Function):
    """z = e^a."""

    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    """z = ln a."""

    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        return (g / self.a,)


class Sqrt(Function):
    """z = √a; dz/da = 1/(2√a)."""

    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, g):
        return (g / (2 * self.out),)


class Abs(Function):
    """z = |a|; gradient sign(a) (0 at 0, like PyTorch)."""

    def forward(self, a):
        self.a = a
        return np.abs(a)

    def backward(self, g):
        return (g * np.sign(self.a),)
