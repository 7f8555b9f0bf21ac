"""`Input` and `InputLayer`: where a functional model starts (Keras's `keras.Input`).

    inputs = splitgrad.Input(shape=(64,), name="features")   # SymbolicTensor (None, 64)

`Input(shape)` makes an `InputLayer` and returns its symbolic output; layers called on it
record the graph (graph.py), and `Model(inputs, outputs)` turns the graph into a model.
`Sequential([Input((64,)), Dense(32)])` takes it as the input shape and builds at once.
"""

from __future__ import annotations

import numpy as np

from ..graph import Node, SymbolicTensor
from .layer import Layer, register


@register
class InputLayer(Layer):
    """The entry of a functional model: y = x, for inputs of `shape` (batch axis excluded;
    None marks a free axis, e.g. a sequence length) and `dtype`."""

    def __init__(self, shape=None, batch_size=None, dtype="float32", name=None, input_shape=None):
        super().__init__(name=name, dtype=dtype)  # "input_layer" by default
        shape = input_shape if shape is None else shape
        if shape is None:
            raise ValueError("Input: give the shape of one sample, e.g. Input(shape=(64,))")
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        self.shape = tuple(None if s is None else int(s) for s in shape)
        if any(s is not None and s < 1 for s in self.shape):
            raise ValueError(f"Input: every size must be >= 1 or None, got shape {self.shape}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.input_shape = self.output_shape = (self.batch_size, *self.shape)
        self.built = True
        node = Node(self, None, (), {})
        node.outputs = [SymbolicTensor(self.input_shape, self.dtype, node, 0, self.name)]
        node.out_structure = node.outputs[0]
        self.output = node.outputs[0]

    def call(self, x):
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "shape": list(self.shape),
            "batch_size": self.batch_size,
        }


def Input(shape=None, batch_size=None, dtype="float32", name=None):
    """A symbolic input of `shape` (one sample's; the batch axis is added as None), for
    writing a functional model: `x = Input((64,)); y = Dense(10)(x); Model(x, y)`."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, name=name).output
