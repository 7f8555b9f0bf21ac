"""Shape primitives: reshape, transpose, broadcast, indexing, concatenate and stack."""

from __future__ import annotations

import numpy as np

from ..tensor import Function, Tensor, unbroadcast


# ----- shape ops -------------------------------------------------------------------------
class Reshape(Function):
    """z = a with a new shape (same data order)."""

    def forward(self, a, shape=None):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    """z = a with axes permuted (reversed when `axes` is None)."""

    def forward(self, a, axes=None):
        # Negative axes are normalised first, or argsort in backward would invert the wrong
        # permutation: (0, -1, 1) is really (0, 2, 1).
        self.axes = None if axes is None else tuple(i % a.ndim for i in axes)
        return np.transpose(a, self.axes)

    def backward(self, g):
        inverse = None if self.axes is None else tuple(np.argsort(self.axes))
        return (np.transpose(g, inverse),)


class BroadcastTo(Function):
    """z = a stretched to `shape` by broadcasting."""

    def forward(self, a, shape=None):
        self.shape = a.shape
        return np.broadcast_to(a, shape)

    def backward(self, g):
        return (unbroadcast(g, self.shape),)


def _is_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (list, np.ndarray, Tensor)) for i in items)


class GetItem(Function):
    """z = a[index]; basic or integer-array indexing; backward scatter-adds into a zero array."""

    def forward(self, a, index=None):
        if isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, Tensor):
            index = index.data
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, g):
        out = np.zeros(self.shape, dtype=self.dtype)
        if _is_advanced(self.index):
            np.add.at(out, self.index, g)  # repeated indices must add up
        else:
            out[self.index] = g
        return (out,)


class Concatenate(Function):
    """z = the inputs joined along `axis`."""

    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.splits = np.cumsum([x.shape[axis] for x in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.split(g, self.splits, axis=self.axis))


class Stack(Function):
    """z = the inputs stacked along a new `axis`."""

    def forward(self, *arrays, axis=0):
        self.axis = axis
        return np.stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.moveaxis(g, self.axis, 0))
