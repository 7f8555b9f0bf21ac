"""The embedding lookup as a primitive: z = W[ids], with a grouped scatter-add gradient."""

from __future__ import annotations

import numpy as np

from .._kernels.compiled import embedding_kernels
from .._kernels.workspace import empty
from ..tensor import Function


class EmbeddingLookup(Function):
    """z = W[ids]; dW[k] = Σ of the output gradients of every position whose id is k."""

    def forward(self, weight, ids, ws=None):
        self.ids, self.shape, self.ws = ids, weight.shape, ws
        out = empty(ws, ids.shape + weight.shape[1:], weight.dtype)
        # The layer has checked every id; mode="clip" skips NumPy's extra copy for `out=`.
        return np.take(weight, ids, axis=0, out=out, mode="clip")

    def backward(self, g):
        return scatter_rows(
            self.ids.reshape(-1), g.reshape(-1, self.shape[1]), self.shape[0], self.ws
        ), None


def scatter_rows(ids, rows, count, ws=None):
    """The (count, width) array whose row k is the sum of rows[p] over every p with ids[p] == k
    (zeros where no id is k): an embedding table's gradient from its output rows' gradients."""
    out = np.zeros((count, rows.shape[1]), dtype=rows.dtype)
    jit = embedding_kernels(rows.dtype)
    if jit is not None:
        # One compiled pass adding each row into its id's row (equal to rounding to below).
        seen = np.zeros(count, bool)
        jit.embedding_grad(ids, np.ascontiguousarray(rows), out, seen)
        return out
    # Sorting groups equal ids so one reduceat sums each group: much faster than
    # np.add.at's per-element scatter when ids repeat (a character vocabulary).
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    grouped = np.take(
        rows, order, axis=0, out=empty(ws, rows.shape, rows.dtype), mode="clip"
    )  # `order` is a permutation: always in range
    out[ids[starts]] = np.add.reduceat(grouped, starts, axis=0)
    return out


def embedding(weight, ids, ws=None):
    """Rows `ids` (an integer array, already range-checked) of the table `weight`."""
    return EmbeddingLookup.apply(weight, ids, ws=ws)
