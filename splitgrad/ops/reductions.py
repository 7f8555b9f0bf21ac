"""Reduction primitives: sum, mean, max and min over axes, with their axis helpers."""

from __future__ import annotations

import numpy as np

from ..tensor import Function


# ----- reductions ------------------------------------------------------------------------
def _norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim for a in axis) if ndim else ()


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand(g, shape, axes, keepdims):
    """The reduced gradient `g` spread back over `shape` (a fresh, writable array)."""
    if not keepdims and axes:
        g = g.reshape(_kept_shape(shape, axes))
    # empty + copyto costs ~1 µs; np.broadcast_to and np.expand_dims cost several each.
    out = np.empty(shape, dtype=g.dtype)
    np.copyto(out, g)
    return out


class Sum(Function):
    """z = Σ a over `axis` (all axes when None)."""

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.keepdims = a.shape, keepdims
        self.axes = _norm_axis(axis, a.ndim)
        return np.add.reduce(a, axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        return (_expand(g, self.shape, self.axes, self.keepdims),)


class Mean(Function):
    """z = mean of a over `axis`."""

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.keepdims = a.shape, keepdims
        self.axes = _norm_axis(axis, a.ndim)
        count = 1
        for i in self.axes:
            count *= a.shape[i]
        self.count = count
        # Same pairwise sum and division as ndarray.mean, without its Python wrapper.
        return np.add.reduce(a, axis=self.axes, keepdims=keepdims) / self.count

    def backward(self, g):
        return (_expand(g / self.count, self.shape, self.axes, self.keepdims),)


class _Extreme(Function):
    """Shared max/min: the gradient is split evenly between tied extremes (torch.amax rule)."""

    reduce = None

    def forward(self, a, axis=None, keepdims=False):
        self.a, self.keepdims = a, keepdims
        self.axes = _norm_axis(axis, a.ndim)
        self.out = np.asarray(type(self).reduce(a, axis=self.axes, keepdims=True))
        return self.out if keepdims else np.asarray(np.squeeze(self.out, axis=self.axes))

    def backward(self, g):
        mask = self.a == self.out
        count = mask.sum(axis=self.axes, keepdims=True)
        if not self.keepdims and self.axes:
            g = np.expand_dims(g, self.axes)
        return ((g * mask / count).astype(g.dtype),)


class Max(_Extreme):
    """z = max of a over `axis`."""

    reduce = staticmethod(np.maximum.reduce)


class Min(_Extreme):
    """z = min of a over `axis`."""

    reduce = staticmethod(np.minimum.reduce)
