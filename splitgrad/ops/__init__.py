"""Primitive ops: each class holds its forward and its hand-written backward side by side.

Every other differentiable function in splitgrad is composed from these (see functional.py),
so these are the only gradients written by hand. Elementwise ops undo broadcasting with the
one shared helper `unbroadcast`. The primitives live in the submodules arithmetic, activations,
linalg, reductions and shape; this module re-exports every one of them (so `ops.Linear` and
`ops.sigmoid_array` keep working) and defines the lower-case functions, the public entry points.
"""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from .activations import ELU as ELU
from .activations import GELU as GELU
from .activations import LeakyReLU as LeakyReLU
from .activations import LogSoftmax as LogSoftmax
from .activations import ReLU as ReLU
from .activations import Sigmoid as Sigmoid
from .activations import Softmax as Softmax
from .activations import Softplus as Softplus
from .activations import Tanh as Tanh
from .activations import _erf as _erf
from .activations import sigmoid_array as sigmoid_array
from .arithmetic import Abs as Abs
from .arithmetic import Add as Add
from .arithmetic import Cast as Cast
from .arithmetic import Clip as Clip
from .arithmetic import Div as Div
from .arithmetic import Exp as Exp
from .arithmetic import Log as Log
from .arithmetic import Maximum as Maximum
from .arithmetic import Minimum as Minimum
from .arithmetic import Mul as Mul
from .arithmetic import Neg as Neg
from .arithmetic import Pow as Pow
from .arithmetic import Sqrt as Sqrt
from .arithmetic import Sub as Sub
from .arithmetic import Where as Where
from .linalg import Linear as Linear
from .linalg import MatMul as MatMul
from .reductions import Max as Max
from .reductions import Mean as Mean
from .reductions import Min as Min
from .reductions import Sum as Sum
from .reductions import _expand as _expand
from .reductions import _Extreme as _Extreme
from .reductions import _kept_shape as _kept_shape
from .reductions import _norm_axis as _norm_axis
from .shape import BroadcastTo as BroadcastTo
from .shape import Concatenate as Concatenate
from .shape import GetItem as GetItem
from .shape import Reshape as Reshape
from .shape import Stack as Stack
from .shape import Transpose as Transpose
from .shape import _is_advanced as _is_advanced


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
    out = Sigmoid.apply(a)
    out._logits = ("sigmoid", a)
    return out


def tanh(a):
    return Tanh.apply(a)


def softplus(a):
    return Softplus.apply(a)


def softmax(a, axis=-1):
    out = Softmax.apply(a, axis=axis)
    if axis in (-1, a.ndim - 1):
        out._logits = ("softmax", a)
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
