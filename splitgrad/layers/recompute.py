"""`Recompute(block)`: a block whose activations are recomputed on backward instead of kept.

    nn.Sequential([
        Recompute(nn.Sequential([nn.Conv2D(32, 3, activation="relu"), nn.MaxPool2D(2)])),
        nn.Flatten(), nn.Dense(10),
    ])

In training the block runs through `ops.checkpointing.RecomputeFn`: its forward keeps no
graph, its backward runs the block again with one. Outputs and gradients are bitwise those of
the block itself (the recomputation sees the same random draws and running statistics as the
first forward); only the memory differs. In inference, or with no graph being recorded, it is
the block itself. The block's weights are this layer's ("block.kernel", "block.layers.0...").
"""

from __future__ import annotations

import numpy as np

from .. import random as sg_random
from ..ops.checkpointing import recompute
from ..tensor import is_grad_enabled, no_grad
from .layer import Layer, generators, layer_class, register


class _Snapshot:
    """What a forward of `block` reads and changes besides its input: the default generator,
    the block's own generators (seeded Dropout) and its non-trainable weights (running
    statistics). `save()` takes a copy, `restore(token)` puts it back (RecomputeFn's `keep`)."""

    def __init__(self, block):
        self.gens = generators(block)
        self.state = [w for w in block.weights if not w.requires_grad]

    def save(self):
        return (
            sg_random.get_state(),
            {k: g.bit_generator.state for k, g in self.gens.items()},
            [w.data.copy() for w in self.state],
        )

    def restore(self, token):
        default, gens, state = token
        sg_random.set_state(default)
        for key, gen in self.gens.items():
            gen.bit_generator.state = gens[key]
        for w, saved in zip(self.state, state):
            w.data[...] = saved


@register
class Recompute(Layer):
    """y = block(x); in training only x is kept, and the block is run again on backward.

    Memory: the activations at the block's boundary instead of all inside it, for one more
    forward of the block per step. The block must not end in a softmax or sigmoid output (the
    loss reads those outputs' logits from the graph): keep the output layer outside.
    """

    def __init__(self, block, name=None, dtype=None):
        if not isinstance(block, Layer):
            raise TypeError(
                f"Recompute expects a layer or a block of layers (e.g. nn.Sequential([...])), "
                f"got {type(block).__name__}"
            )
        super().__init__(name=name, dtype=dtype or block.dtype)
        self.block = block
        self._keep = None

    def build(self, input_shape):
        block = self.block
        if block.dtype != self.dtype:  # a Sequential with a dtype imposes it on its layers
            block.dtype = self.dtype
            if hasattr(block, "dtype_explicit"):
                block.dtype_explicit = True
        was = block.training
        block.eval()  # building draws initial weights only, no dropout masks
        try:
            with no_grad():
                out = block(np.zeros((1,) + tuple(input_shape[1:]), self.dtype))
        finally:
            block.train(was)
        if getattr(out, "logits", None) is not None:  # ops.activations.Probabilities
            raise ValueError(
                f"layer {self.name!r} (Recompute): its block ends in a {out.kind} output, whose "
                "logits the loss reads from the graph; keep the output layer outside "
                "Recompute(...)"
            )

    def call(self, x):
        if not (self.training and is_grad_enabled()):
            return self.block(x)  # nothing will be backpropagated: nothing to save
        if self._keep is None:
            self._keep = _Snapshot(self.block)
        return recompute(self.block, x, self.block.parameters(), self._keep)

    def get_config(self):
        block = {"class": type(self.block).__name__, "config": self.block.get_config()}
        return {**super().get_config(), "block": block}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        spec = config.pop("block")
        return cls(layer_class(spec["class"]).from_config(spec["config"]), **config)
