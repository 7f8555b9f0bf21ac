"""Layers cut across places for tensor (intra-layer) parallelism (Megatron-LM: Shoeybi et al. 2019).

Column-parallel: a Dense or Conv2D with its outputs (units, filters) cut into N slices; shard
c computes y_c = act(x·W[:, c] + b[c]) from the whole input x. The shards' outputs,
concatenated, are the layer's output; their gradients, concatenated, are the layer's.

Row-parallel: a Dense or Conv2D with its inputs cut into N slices; shard c computes the partial
sum x_c·W[c, :] from its slice x_c of the input. y = act(Σ_c x_c·W[c, :] + b): the partial
sums are added up (an all-reduce across places), then the bias and the activation.

A pair, column-parallel then row-parallel, with only channel-local layers between (pooling,
elementwise activations, Flatten), needs ONE reduction per pair in the forward pass: the slice
a column shard produces is exactly the slice its row partner reads, so each place goes from the
whole input to its partial output alone. In the backward pass the mirror image holds: one
reduction of the pair's input gradient. A Conv2D split by output channels pairs the same way
with the next Conv2D (split by input channels) or, through Flatten or global pooling, with a
Dense (split by the matching input rows).

    pair = MegatronPair(dense1, [], dense2, n=2)    # two built layers of a model
    y = pair(x)                                     # = dense2(dense1(x)), one reduction
"""

from __future__ import annotations

import copy

import numpy as np

from .. import random as sg_random
from ..layers import activations
from ..layers.conv import AvgPool2D, Conv2D, GlobalAveragePooling2D, MaxPool2D
from ..layers.core import Activation, Dense, Flatten
from ..layers.layer import Parameter, generators, layer_class
from ..tensor import Tensor, no_grad
from .replicas import chunk_bounds

# Layers that work on each channel (or unit) on its own: they can sit inside a pair.
CHANNEL_LOCAL = (MaxPool2D, AvgPool2D, GlobalAveragePooling2D, Activation, Flatten)
NOT_ELEMENTWISE = ("softmax", "log_softmax")


def slices(size: int, n: int) -> list:
    """The index arrays of n nearly equal consecutive slices of range(size)."""
    return [np.arange(*chunk_bounds(size, n, c)) for c in range(n)]


def _width(layer) -> int:
    return layer.units if isinstance(layer, Dense) else layer.filters


def can_split_outputs(layer, n: int) -> bool:
    """A built Dense or Conv2D with an elementwise activation, no regularizers, and at least n
    outputs (no shard empty)."""
    return (
        type(layer) in (Dense, Conv2D)
        and layer.built
        and layer.activation_name not in NOT_ELEMENTWISE
        and not any(layer._regularizers.values())
        and _width(layer) >= n
    )


def _local_ok(layer) -> bool:
    if isinstance(layer, Activation):
        return layer.activation_name not in NOT_ELEMENTWISE
    return isinstance(layer, CHANNEL_LOCAL)


def _pairs_with(first, between, second) -> bool:
    """Can `second` take the inputs `first` produces, through `between`, split the same way?"""
    if type(second) not in (Dense, Conv2D) or not second.built:
        return False
    if any(second._regularizers.values()):
        return False
    flat = any(isinstance(b, (Flatten, GlobalAveragePooling2D)) for b in between)
    if isinstance(second, Conv2D):  # channels in, channels out: the image must stay an image
        return isinstance(first, Conv2D) and not flat
    return isinstance(first, Dense) or flat  # a Dense after a Conv2D reads flattened channels


def find_pairs(layers, n: int) -> list:
    """[(i, j)]: layers[i] split by outputs, layers[i+1:j] channel-local, layers[j] split by
    inputs; greedy from the first layer, pairs never overlap."""
    pairs, i = [], 0
    while i < len(layers):
        if can_split_outputs(layers[i], n):
            j = i + 1
            while j < len(layers) and _local_ok(layers[j]):
                j += 1
            if j < len(layers) and _pairs_with(layers[i], layers[i + 1 : j], layers[j]):
                pairs.append((i, j))
                i = j + 1
                continue
        i += 1
    return pairs


def _remade(layer, weights, input_shape=None, **changes):
    """A new built layer like `layer`, with config `changes`, built for `input_shape` (default:
    the layer's), holding these weights; building draws no number from the default generator
    (its state is put back)."""
    twin = type(layer).from_config({**layer.get_config(), **changes})
    shape = tuple(input_shape or layer.input_shape)
    state = copy.deepcopy(sg_random.get_state())
    twin.input_shape = shape
    twin.build(shape)
    twin.built = True
    sg_random.set_state(state)
    twin.set_weights(weights)
    return twin


def column_parallel(layer, n: int) -> list:
    """N layers computing slices of `layer`'s outputs: shard c has kernel[..., c], bias[c]."""
    out = []
    for idx in slices(_width(layer), n):
        weights = [layer.kernel.data[..., idx]]
        if layer.use_bias:
            weights.append(layer.bias.data[idx])
        size = {"units": len(idx)} if isinstance(layer, Dense) else {"filters": len(idx)}
        out.append(_remade(layer, weights, **size))
    return out


def row_parallel(layer, rows) -> tuple:
    """(N layers computing partial sums of `layer`'s pre-activation from slices of its input,
    without bias or activation; the bias). `rows[c]` are the input rows (Dense) or input
    channels (Conv2D) shard c reads."""
    axis = 0 if isinstance(layer, Dense) else 2
    shards = []
    for idx in rows:
        kernel = np.take(layer.kernel.data, idx, axis=axis)
        shape = (*layer.input_shape[:-1], len(idx))
        shards.append(_remade(layer, [kernel], shape, activation=None, use_bias=False))
    bias = None if not layer.use_bias else layer.bias.data.copy()
    return shards, bias


class MegatronPair:
    """Column-parallel `first`, channel-local `between`, row-parallel `second`, over n places.

    `ranks[c]` = (first_c, between_c, second_c) is what place c runs: `partial(c, x)` is its
    partial output from the whole input x; `finish(total)` adds the bias and applies the
    second layer's activation to the sum of the partials: that sum is the one reduction.
    `sources[c]` says where each of place c's weights comes from in the unsharded layers:
    (layer, "kernel"/"bias", axis, indices) or (layer, name, None, None) for a whole copy.
    """

    def __init__(self, first, between, second, n: int):
        self.n, self.first, self.between, self.second = int(n), first, list(between), second
        cols = column_parallel(first, self.n)
        channel = slices(_width(first), self.n)
        rows = [self._rows(idx) for idx in channel]
        seconds, self.bias = row_parallel(second, rows)
        self.activation_name = second.activation_name
        self.activation = activations.get(second.activation_name)
        self.ranks, self.sources = [], []
        axis2 = 0 if isinstance(second, Dense) else 2
        for c in range(self.n):
            mids = [type(b).from_config(b.get_config()) for b in self.between]
            self.ranks.append((cols[c], mids, seconds[c]))
            src = [(first, "kernel", first.kernel.ndim - 1, channel[c])]
            if first.use_bias:
                src.append((first, "bias", 0, channel[c]))
            src.append((second, "kernel", axis2, rows[c]))
            self.sources.append(src)

    def _rows(self, channels):
        """The inputs of `second` that come from these output channels of `first`."""
        flatten = next((b for b in self.between if isinstance(b, Flatten)), None)
        if flatten is None or len(flatten.input_shape) == 2:
            return channels
        _, h, w, c = flatten.input_shape  # Flatten orders (row, column, channel)
        return (np.arange(h * w)[:, None] * c + channels[None, :]).ravel()

    def weights(self, c: int) -> list:
        """Place c's trainable weights, in the order of `sources[c]`."""
        first, _, second = self.ranks[c]
        out = [first.kernel] + ([first.bias] if first.use_bias else [])
        return [*out, second.kernel]

    def partial(self, c: int, x) -> Tensor:
        first, mids, second = self.ranks[c]
        y = first(x)
        for layer in mids:
            y = layer(y)
        return second(y)

    def finish(self, total: Tensor, bias=None) -> Tensor:
        """act(total + b), `bias` a Parameter of the bias (default: a constant copy)."""
        if bias is None and self.bias is not None:
            bias = Tensor(self.bias)
        return self.activation(total if bias is None else total + bias)

    def __call__(self, x) -> Tensor:
        """The pair's output on this process: Σ_c partial(c, x), then bias and activation."""
        total = None
        for c in range(self.n):
            part = self.partial(c, x)
            total = part if total is None else total + part
        return self.finish(total)


# ----- layers as plain data (to build them at another place) ------------------------------------
def layer_spec(layer) -> dict:
    """A built layer as plain data: class, config, input shape, weights, generator states."""
    return {
        "class": type(layer).__name__,
        "config": layer.get_config(),
        "input_shape": tuple(layer.input_shape),
        "weights": layer.get_weights(),
        "rngs": {k: g.bit_generator.state for k, g in generators(layer).items()},
    }


def rebuild(spec):
    """The layer of `layer_spec(...)`, built, with its weights (the default generator is left
    as it was)."""
    layer = layer_class(spec["class"]).from_config(copy.deepcopy(spec["config"]))
    state = copy.deepcopy(sg_random.get_state())
    was = layer.training
    layer.eval()
    with no_grad():
        sample = np.zeros((1, *spec["input_shape"][1:]), layer.dtype)
        layer(sample)
    layer.train(was)
    sg_random.set_state(state)
    layer.set_weights(spec["weights"])
    for key, gen in generators(layer).items():
        gen.bit_generator.state = copy.deepcopy(spec["rngs"][key])
    return layer


def bias_parameter(array):
    """A trainable copy of a bias (the row-parallel layer's, replicated at every place)."""
    return Parameter(np.array(array), trainable=True, name="bias")
