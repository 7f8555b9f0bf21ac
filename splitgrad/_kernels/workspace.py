"""Buffers reused across training steps, so big arrays are not page-faulted in every step.

glibc hands large freed blocks back to the kernel, and touching a fresh block costs one page
fault per 4 KiB: thousands per step for a conv or LSTM layer. A layer keeps a `Workspace` and
asks it for its large arrays; an array is handed out again only once nothing else refers to it.
"""

from __future__ import annotations

import sys

import numpy as np


class Workspace:
    """Arrays recycled across steps, keyed by (shape, dtype).

    `empty(shape, dtype)` returns an array that nothing else refers to any more (CPython
    reference count: a live graph, a Tensor, a view or the caller's variable all hold one), or a
    new one. So a buffer is reused only once its last user has dropped it, whatever the order of
    forward and backward calls; the price is that up to `_KEEP` arrays per shape stay allocated.
    """

    _KEEP = 4  # per shape: enough for a forward and a backward of two overlapping graphs
    _MAX_KEYS = 32  # varying batch sizes (a short last batch) would otherwise grow it forever

    def __init__(self):
        self._pool = {}

    def empty(self, shape, dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype))
        owned = self._pool.get(key)
        if owned is None:
            if len(self._pool) >= self._MAX_KEYS:
                self._pool.clear()  # arrays still in use stay valid: their users hold them
            owned = self._pool[key] = []
        for arr in owned:
            if sys.getrefcount(arr) <= 3:  # the list, `arr` and getrefcount's argument
                return arr
        arr = np.empty(shape, dtype)
        if len(owned) < self._KEEP:
            owned.append(arr)
        return arr

    # Copies and pickles (snapshots, shipping a model to another process) start empty.
    def __deepcopy__(self, memo):
        return Workspace()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()


def empty(ws, shape, dtype):
    """`ws.empty(shape, dtype)`, or a plain new array when there is no workspace."""
    return ws.empty(shape, dtype) if ws is not None else np.empty(shape, dtype)


def zeros(ws, shape, dtype):
    """A zero-filled array from the workspace (or a new one)."""
    out = empty(ws, shape, dtype)
    out.fill(0)
    return out
