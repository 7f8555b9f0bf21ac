"""Primitive ops: every hand-written gradient in splitgrad, and the functions that apply them.

A primitive is a `Function` subclass with `forward` and `backward` side by side (tensor.py).
Everything else that is differentiable is composed from these (functional.py, the layers), so
this table is the whole list; `PRIMITIVES` below is the same table in code (a test checks that
no other module defines a Function).

| module | primitives (the backward of ...) |
|---|---|
| arithmetic.py | Add, Sub, Mul, Div, Neg, Pow, Maximum, Minimum, Where, Clip, Cast, Exp, Log, |
|  | Sqrt, Abs |
| activations.py | ReLU, LeakyReLU, ELU, GELU, Sigmoid, Tanh, Softplus, Softmax, LogSoftmax |
| linalg.py | MatMul, Linear (x·W + b, the Dense layer), DenseChain (a stack of Dense layers |
|  | as one op, layers/fusion.py) |
| reductions.py | Sum, Mean, Max, Min |
| shape.py | Reshape, Transpose, BroadcastTo, GetItem, Concatenate, Stack |
| conv.py | Conv2DFn, Conv2DTransposeFn (NHWC, im2col + GEMM) |
| pooling.py | MaxPool2DFn, AvgPool2DFn (NHWC) |
| conv_pool.py | ConvReluPoolFn (a first conv + ReLU + 2×2 max pool in one op, layers/fusion.py) |
| normalization.py | BatchNormFn |
| recurrent.py | SimpleRNNSeq, LSTMSeq, GRUSeq (a whole sequence per call, BPTT inside) |
| embedding.py | EmbeddingLookup |
| checkpointing.py | RecomputeFn (a block re-run on backward: activation checkpointing) |
| losses.py | SquaredError, AbsoluteError, BinaryCrossEntropy, BinaryCrossEntropyWithLogits, |
|  | SoftmaxCrossEntropy, NegativeLogLikelihood (fused with their reduction) |

Elementwise primitives undo broadcasting with the one shared helper `tensor.unbroadcast`. The
lower-case functions below are the entry points that `Tensor`'s operators and methods call;
the image, recurrent, embedding and loss primitives are applied by their layers and losses
through the functions in their own modules (e.g. `ops.conv.conv2d`).
"""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from . import checkpointing, conv, conv_pool, embedding, losses, normalization, pooling, recurrent
from .activations import (
    ELU,
    GELU,
    LeakyReLU,
    LogSoftmax,
    Probabilities,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)
from .arithmetic import (
    Abs,
    Add,
    Cast,
    Clip,
    Div,
    Exp,
    Log,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    Sqrt,
    Sub,
    Where,
)
from .linalg import DenseChain, Linear, MatMul
from .reductions import Max, Mean, Min, Sum
from .shape import BroadcastTo, Concatenate, GetItem, Reshape, Stack, Transpose

# Every primitive, by name: the table above in code.
PRIMITIVES = {
    cls.__name__: cls
    for cls in (
        Add,
        Sub,
        Mul,
        Div,
        Neg,
        Pow,
        Maximum,
        Minimum,
        Where,
        Clip,
        Cast,
        Exp,
        Log,
        Sqrt,
        Abs,
        ReLU,
        LeakyReLU,
        ELU,
        GELU,
        Sigmoid,
        Tanh,
        Softplus,
        Softmax,
        LogSoftmax,
        MatMul,
        Linear,
        DenseChain,
        Sum,
        Mean,
        Max,
        Min,
        Reshape,
        Transpose,
        BroadcastTo,
        GetItem,
        Concatenate,
        Stack,
        conv.Conv2DFn,
        conv.Conv2DTransposeFn,
        conv_pool.ConvReluPoolFn,
        pooling.MaxPool2DFn,
        pooling.AvgPool2DFn,
        normalization.BatchNormFn,
        recurrent.SimpleRNNSeq,
        recurrent.LSTMSeq,
        recurrent.GRUSeq,
        embedding.EmbeddingLookup,
        checkpointing.RecomputeFn,
        losses.SquaredError,
        losses.AbsoluteError,
        losses.BinaryCrossEntropy,
        losses.BinaryCrossEntropyWithLogits,
        losses.SoftmaxCrossEntropy,
        losses.NegativeLogLikelihood,
    )
}


# ----- public functions ------------------------------------------------------------------
def _pair(a, b):
    """Wrap a plain number in an array of the tensor operand's dtype (no float64 upcast)."""
    if not isinstance(a, Tensor):
        a = np.asarray(a, dtype=b.dtype if b.dtype.kind == "f" else None)
    elif not isinstance(b, Tensor):
        b = np.asarray(b, dtype=a.dtype if a.dtype.kind == "f" else None)
    return a, b


def add(a, b):
    return Add.apply(*_pair(a, b))


def sub(a, b):
    return Sub.apply(*_pair(a, b))


def mul(a, b):
    return Mul.apply(*_pair(a, b))


def div(a, b):
    return Div.apply(*_pair(a, b))


def neg(a):
    return Neg.apply(a)


def pow(a, b):
    return Pow.apply(*_pair(a, b))


def maximum(a, b):
    return Maximum.apply(*_pair(a, b))


def minimum(a, b):
    return Minimum.apply(*_pair(a, b))


def where(cond, a, b):
    if isinstance(cond, Tensor):
        cond = cond.data
    a, b = _pair(a, b)
    return Where.apply(cond, a, b)


def cast(a, dtype):
    return Cast.apply(a, dtype=np.dtype(dtype))


def clip(a, lo=None, hi=None):
    return Clip.apply(a, lo=lo, hi=hi)


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def sqrt(a):
    return Sqrt.apply(a)


def abs(a):
    return Abs.apply(a)


def relu(a):
    return ReLU.apply(a)


def leaky_relu(a, negative_slope=0.01):
    return LeakyReLU.apply(a, slope=negative_slope)


def elu(a, alpha=1.0):
    return ELU.apply(a, alpha=alpha)


def gelu(a, approximate="none"):
    return GELU.apply(a, approximate=approximate)


def sigmoid(a):
    """σ(a), remembering `a` as its logits (see `Probabilities`)."""
    return Probabilities.of(Sigmoid.apply(a), a, "sigmoid")


def tanh(a):
    return Tanh.apply(a)


def softplus(a):
    return Softplus.apply(a)


def softmax(a, axis=-1):
    """softmax(a) along `axis`; over the last axis it remembers `a` (see `Probabilities`)."""
    out = Softmax.apply(a, axis=axis)
    if axis in (-1, a.ndim - 1):
        return Probabilities.of(out, a, "softmax")
    return out


def log_softmax(a, axis=-1):
    return LogSoftmax.apply(a, axis=axis)


def matmul(a, b):
    return MatMul.apply(*_pair(a, b))


def linear(x, w, b=None):
    return Linear.apply(x, w, b)


def sum(a, axis=None, keepdims=False):
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims=False):
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def max(a, axis=None, keepdims=False):
    return Max.apply(a, axis=axis, keepdims=keepdims)


def min(a, axis=None, keepdims=False):
    return Min.apply(a, axis=axis, keepdims=keepdims)


def reshape(a, shape):
    return Reshape.apply(a, shape=tuple(shape))


def transpose(a, axes=None):
    return Transpose.apply(a, axes=None if axes is None else tuple(axes))


def broadcast_to(a, shape):
    return BroadcastTo.apply(a, shape=tuple(shape))


def getitem(a, index):
    return GetItem.apply(a, index=index)


def concatenate(tensors, axis=0):
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    return Stack.apply(*tensors, axis=axis)
