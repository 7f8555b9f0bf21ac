"""ONNX converters of the feed-forward layers: Dense, Activation, Dropout, Flatten, Reshape,
Conv2D, Conv2DTranspose, the pools, BatchNormalization and Embedding, and the activations.

splitgrad is channels-last (NHWC) and ONNX's Conv and pools are channels-first (NCHW), so each
convolution and pool transposes in and back out: every value between layers keeps splitgrad's
layout, so Flatten and Dense read the same order as in splitgrad. ONNX Runtime's optimizer
removes the transposes that cancel between neighbours.
"""

from __future__ import annotations

import math

import numpy as np

from ..layers import conv, core, embedding, normalization
from ..ops.conv import conv_geometry
from .onnx_graph import UnsupportedLayer, Value, converter, sample_shape, unsupported_message

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


# ----- activations -------------------------------------------------------------------------
def activation(g, name, x: Value, layer) -> Value:
    """The nodes of activation `name` (a key of layers/activations.ACTIVATIONS) on x."""
    if name in (None, "linear"):
        return x
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus"}
    if name in simple:
        out = g.op(simple[name], [x.name])
    elif name == "leaky_relu":  # ops.leaky_relu's default slope, the one activation="..." uses
        out = g.op("LeakyRelu", [x.name], alpha=0.01)
    elif name == "elu":
        out = g.op("Elu", [x.name], alpha=1.0)
    elif name in ("softmax", "log_softmax"):
        out = g.op("Softmax" if name == "softmax" else "LogSoftmax", [x.name], axis=-1)
    elif name in ("silu", "swish"):  # x·σ(x)
        out = g.op("Mul", [x.name, g.op("Sigmoid", [x.name])], "silu")
    elif name == "gelu":
        out = _gelu(g, x.name)
    else:
        raise UnsupportedLayer(
            unsupported_message(layer, g.where(), f"its activation {name!r} has no ONNX form")
        )
    return Value(out, x.shape)


def _gelu(g, x: str) -> str:
    """x·Φ(x) = ½·x·(1 + erf(x/√2)) (exact, as splitgrad's gelu); the Gelu op from opset 20."""
    if g.opset >= 20:
        return g.op("Gelu", [x], approximate="none")
    scaled = g.op("Div", [x, g.const(np.sqrt(2.0), "sqrt2")])
    one_plus = g.op("Add", [g.op("Erf", [scaled]), g.const(1.0, "one")])
    return g.op("Mul", [g.op("Mul", [x, g.const(0.5, "half")]), one_plus], "gelu")


def _nchw(g, x: Value, fn) -> str:
    """fn(x in NCHW) transposed back to NHWC."""
    inner = fn(g.op("Transpose", [x.name], "to_nchw", perm=TO_NCHW))
    return g.op("Transpose", [inner], "to_nhwc", perm=TO_NHWC)


def _pads(shape, window, strides, dilation, padding, who):
    """ONNX pads [top, left, bottom, right] of a window over NHWC `shape` (Keras's rule for
    "same": the odd pixel at the bottom/right, from splitgrad's own conv_geometry)."""
    rows = conv_geometry(shape[1], window[0], strides[0], dilation[0], padding, who, "height")
    cols = conv_geometry(shape[2], window[1], strides[1], dilation[1], padding, who, "width")
    return [rows[1], cols[1], rows[2], cols[2]]


# ----- core layers -------------------------------------------------------------------------
@converter(core.Dense)
def dense(g, layer, x: Value) -> Value:
    """x·W + b (MatMul broadcasts over leading axes, as Dense works on any of them)."""
    y = g.op("MatMul", [x.name, g.const(layer.kernel.data, "kernel")])
    if layer.bias is not None:
        y = g.op("Add", [y, g.const(layer.bias.data, "bias")])
    return activation(g, layer.activation_name, Value(y, sample_shape(layer, x)), layer)


@converter(core.Activation)
def activation_layer(g, layer, x: Value) -> Value:
    return activation(g, layer.activation_name, x, layer)


@converter(core.Dropout)
def dropout(g, layer, x: Value) -> Value:
    """Inference: the identity."""
    return x


@converter(core.Flatten)
def flatten(g, layer, x: Value) -> Value:
    return Value(g.op("Flatten", [x.name], axis=1), (x.shape[0], math.prod(x.shape[1:])))


@converter(core.Reshape)
def reshape(g, layer, x: Value) -> Value:
    # 0 keeps the batch size whatever it is; -1 in the target is ONNX's -1 too.
    shape = g.ints([0, *layer.target_shape])
    return Value(g.op("Reshape", [x.name, shape]), sample_shape(layer, x))


# ----- convolutions and pools --------------------------------------------------------------
@converter(conv.Conv2D)
def conv2d(g, layer, x: Value) -> Value:
    """Conv with the kernel (kh, kw, in, out) as ONNX's (out, in, kh, kw)."""
    out_shape = sample_shape(layer, x)
    inputs = [g.const(layer.kernel.data.transpose(3, 2, 0, 1), "kernel")]
    if layer.bias is not None:
        inputs.append(g.const(layer.bias.data, "bias"))
    pads = _pads(
        x.shape, layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding, layer.name
    )
    y = _nchw(
        g,
        x,
        lambda t: g.op(
            "Conv",
            [t, *inputs],
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.strides),
            dilations=list(layer.dilation_rate),
            pads=pads,
        ),
    )
    return activation(g, layer.activation_name, Value(y, out_shape), layer)


@converter(conv.Conv2DTranspose)
def conv2d_transpose(g, layer, x: Value) -> Value:
    """ConvTranspose with the kernel (kh, kw, out, in) as ONNX's (in, out, kh, kw); its pads
    are those of the convolution it transposes, and output_padding adds the rows and columns
    that convolution would not have read (bottom/right), to reach splitgrad's output size."""
    out_shape = sample_shape(layer, x)
    out_hw = layer.output_size(x.shape[1], x.shape[2])
    pads = _pads(
        (0, *out_hw, 0),
        layer.kernel_size,
        layer.strides,
        layer.dilation_rate,
        layer.padding,
        layer.name,
    )
    extra = []
    for i, (size, k, s, d) in enumerate(
        zip(x.shape[1:3], layer.kernel_size, layer.strides, layer.dilation_rate)
    ):
        full = (size - 1) * s + d * (k - 1) + 1 - pads[i] - pads[i + 2]
        extra.append(out_hw[i] - full)
    inputs = [g.const(layer.kernel.data.transpose(3, 2, 0, 1), "kernel")]
    if layer.bias is not None:
        inputs.append(g.const(layer.bias.data, "bias"))
    y = _nchw(
        g,
        x,
        lambda t: g.op(
            "ConvTranspose",
            [t, *inputs],
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.strides),
            dilations=list(layer.dilation_rate),
            pads=pads,
            output_padding=extra if any(extra) else None,
        ),
    )
    return activation(g, layer.activation_name, Value(y, out_shape), layer)


@converter(conv.MaxPool2D, conv.AvgPool2D)
def pool2d(g, layer, x: Value) -> Value:
    """MaxPool / AveragePool; an average counts only the real pixels of a padded window."""
    out_shape = sample_shape(layer, x)
    pads = _pads(x.shape, layer.pool_size, layer.strides, (1, 1), layer.padding, layer.name)
    is_max = isinstance(layer, conv.MaxPool2D)
    y = _nchw(
        g,
        x,
        lambda t: g.op(
            "MaxPool" if is_max else "AveragePool",
            [t],
            kernel_shape=list(layer.pool_size),
            strides=list(layer.strides),
            pads=pads,
            count_include_pad=None if is_max else 0,
        ),
    )
    return Value(y, out_shape)


@converter(conv.GlobalAveragePooling2D)
def global_average_pooling(g, layer, x: Value) -> Value:
    return Value(g.reduce_mean(x.name, [1, 2], layer.keepdims), sample_shape(layer, x))


# ----- normalisation and lookup ------------------------------------------------------------
@converter(normalization.BatchNormalization)
def batch_norm(g, layer, x: Value) -> Value:
    """(x − moving_mean)·inv·γ + β, inv = 1/sqrt(moving_variance + ε) computed as splitgrad
    computes it, with the statistics broadcast along the layer's axis."""
    out_shape = sample_shape(layer, x)  # also checks the axis and the channel count
    axis = layer.axis % x.rank
    bshape = [x.shape[i] if i == axis else 1 for i in range(1, x.rank)]
    mean = layer.moving_mean.data
    inv = (1.0 / np.sqrt(layer.moving_variance.data + layer.epsilon)).astype(mean.dtype)
    y = g.op("Sub", [x.name, g.const(mean.reshape(bshape), "moving_mean")])
    y = g.op("Mul", [y, g.const(inv.reshape(bshape), "inv_std")])
    if layer.gamma is not None:
        y = g.op("Mul", [y, g.const(layer.gamma.data.reshape(bshape), "gamma")])
    if layer.beta is not None:
        y = g.op("Add", [y, g.const(layer.beta.data.reshape(bshape), "beta")])
    return Value(y, out_shape)


@converter(embedding.Embedding)
def embedding_lookup(g, layer, x: Value) -> Value:
    """Gather rows of the table. Float ids are cast; a model input read only by such casts
    becomes an int64 input (onnx_export.py)."""
    g.reads_sequence(x)
    ids = x.name if x.dtype == "int64" else g.op("Cast", [x.name], "ids", to=_INT64)
    out_shape = sample_shape(layer, Value(x.name, x.shape, "int64"))
    return Value(
        g.op("Gather", [g.const(layer.embeddings.data, "embeddings"), ids], axis=0), out_shape
    )


_INT64 = 7  # onnx.TensorProto.INT64, without importing onnx at module import
