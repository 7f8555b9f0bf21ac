"""Embedding: integer ids → rows of a learned table (the lookup primitive is ops/embedding.py).

Per-example gradients (DP-SGD): the looked-up rows are an `embedding_site`
(layers/per_example.py), so each example's table gradient, a scatter of its δ rows by id, and
its norm come from one batched pass.
"""

from __future__ import annotations

import numpy as np

from .._kernels.workspace import Workspace
from ..ops.embedding import EmbeddingLookup
from ..tensor import Tensor
from . import per_example
from .layer import Layer, register


@register
class Embedding(Layer):
    """y[..., :] = W[x[...]] for integer ids x in [0, input_dim); W (input_dim, output_dim)
    initialised N(0, 1) like PyTorch."""

    def __init__(
        self, input_dim, output_dim, embeddings_initializer="normal", name=None, dtype="float32"
    ):
        super().__init__(name=name, dtype=dtype)
        if int(input_dim) <= 0 or int(output_dim) <= 0:
            raise ValueError(
                f"Embedding: input_dim and output_dim must be positive integers, "
                f"got {input_dim!r} and {output_dim!r}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = embeddings_initializer
        self._ws = Workspace()  # the (batch, time, dim) output is reused across steps

    def build(self, input_shape):
        self.add_weight(
            "embeddings",
            (self.input_dim, self.output_dim),
            self.embeddings_initializer,
            fan_in=self.input_dim,
            fan_out=self.output_dim,
        )

    def to_tensor(self, x) -> Tensor:
        """Keep integer ids as integers (the base class would cast them to the float dtype)."""
        arr = x.data if isinstance(x, Tensor) else np.asarray(x)
        if arr.dtype.kind in "iu":
            return x if isinstance(x, Tensor) else Tensor(arr)
        if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            return Tensor(arr.astype(np.int64))
        raise TypeError(
            f"layer {self.name!r} (Embedding) expects integer ids, got an array of "
            f"dtype {arr.dtype}; convert with .astype('int64')."
        )

    def call(self, x):
        ids = self.checked_ids(x)
        out = EmbeddingLookup.apply(self.embeddings, ids, ws=self._ws)
        return per_example.embedding_site(ids, out, self.embeddings)

    def checked_ids(self, x):
        """The ids array of `x` (a Tensor from to_tensor), each checked to be in range."""
        ids = x.data
        if ids.size:
            low, high = int(ids.min()), int(ids.max())
            bad = low if low < 0 else high
            if low < 0 or high >= self.input_dim:
                raise ValueError(
                    f"layer {self.name!r} (Embedding) got id {bad}, but input_dim is "
                    f"{self.input_dim} (valid ids are 0..{self.input_dim - 1}). Map the ids "
                    "into range or build the layer with a larger input_dim."
                )
        return ids

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": self.embeddings_initializer,
        }
