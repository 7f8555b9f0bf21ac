"""Primitive ops: each class holds its forward and its hand-written backward side by side.

Every other differentiable function in splitgrad is composed from these (see functional.py),
so these are the only gradients written by hand. Elementwise ops undo broadcasting with the
one shared helper `unbroadcast`. Lower-case functions at the bottom are the public entry points.
"""

from __future__ import annotations

import numpy as np

from .tensor import Function, Tensor, unbroadcast


def _erf(x):
    # scipy's erf is vectorised and exact; imported lazily because only gelu needs it.
    from scipy.special import erf

    return erf(x)


# ----- elementwise arithmetic ------------------------------------------------------------
class Add(Function):
    """z = a + b (broadcasting)."""

    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return a + b

    def backward(self, g):
        needs = self.needs
        return (unbroadcast(g, self.shapes[0]) if needs[0] else None,
                unbroadcast(g, self.shapes[1]) if needs[1] else None)


class Sub(Function):
    """z = a - b (broadcasting)."""

    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return a - b

    def backward(self, g):
        needs = self.needs
        return (unbroadcast(g, self.shapes[0]) if needs[0] else None,
                unbroadcast(-g, self.shapes[1]) if needs[1] else None)


class Mul(Function):
    """z = a * b (broadcasting); dz/da = b, dz/db = a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        ga = unbroadcast(g * b, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(g * a, np.shape(b)) if self.needs[1] else None
        return ga, gb


class Div(Function):
    """z = a / b (broadcasting); dz/da = 1/b, dz/db = -a/b²."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        ga = unbroadcast(g / b, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(-g * a / (b * b), np.shape(b)) if self.needs[1] else None
        return ga, gb


class Neg(Function):
    """z = -a."""

    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Pow(Function):
    """z = a ** b; dz/da = b·a^(b-1) (0 where b = 0), dz/db = a^b·log(a) (0 where a = 0, b ≥ 0).

    The two zero cases follow PyTorch, where the plain formulas would give 0·inf = nan.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = np.power(a, b)
        return self.out

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.needs[0]:
                ga = g * np.where(b == 0, 0, b * np.power(a, b - 1)).astype(g.dtype, copy=False)
                ga = unbroadcast(ga, np.shape(a))
            if self.needs[1]:
                dlog = np.where((a == 0) & (b >= 0), 0, self.out * np.log(a))
                gb = unbroadcast(g * dlog.astype(g.dtype, copy=False), np.shape(b))
        return ga, gb


class Maximum(Function):
    """z = max(a, b) elementwise; ties split the gradient evenly (as PyTorch does)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return np.maximum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        # Weights in g's dtype: a float64 weight array would silently upcast float32 grads.
        wa = ((a > b) + 0.5 * (a == b)).astype(g.dtype, copy=False)
        ga = unbroadcast(g * wa, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(g * (1 - wa), np.shape(b)) if self.needs[1] else None
        return ga, gb


class Minimum(Function):
    """z = min(a, b) elementwise; ties split the gradient evenly."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return np.minimum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        # Weights in g's dtype: a float64 weight array would silently upcast float32 grads.
        wa = ((a < b) + 0.5 * (a == b)).astype(g.dtype, copy=False)
        ga = unbroadcast(g * wa, np.shape(a)) if self.needs[0] else None
        gb = unbroadcast(g * (1 - wa), np.shape(b)) if self.needs[1] else None
        return ga, gb


class Where(Function):
    """z = a where cond else b (cond is a boolean array, not differentiated)."""

    def forward(self, cond, a, b):
        self.cond = np.asarray(cond, dtype=bool)
        self.shapes = (np.shape(a), np.shape(b))
        return np.where(self.cond, a, b)

    def backward(self, g):
        zero = np.zeros((), dtype=g.dtype)
        ga = unbroadcast(np.where(self.cond, g, zero), self.shapes[0]) if self.needs[1] else None
        gb = unbroadcast(np.where(self.cond, zero, g), self.shapes[1]) if self.needs[2] else None
        return None, ga, gb


class Clip(Function):
    """z = min(max(a, lo), hi); gradient 1 where lo ≤ a ≤ hi (inclusive, like torch.clamp)."""

    def forward(self, a, lo=None, hi=None):
        self.mask = np.ones(a.shape, dtype=bool)
        if lo is not None:
            self.mask &= a >= lo
        if hi is not None:
            self.mask &= a <= hi
        return np.clip(a, lo, hi)

    def backward(self, g):
        return (g * self.mask,)


class Cast(Function):
    """z = a converted to another float dtype; the gradient converts back."""

    def forward(self, a, dtype=None):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return (g.astype(self.src),)


# ----- unary maths -----------------------------------------------------------------------
class Exp(Function):
    """z = e^a."""

    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    """z = ln a."""

    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, g):
        return (g / self.a,)


class Sqrt(Function):
    """z = √a; dz/da = 1/(2√a)."""

    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, g):
        return (g / (2 * self.out),)


class Abs(Function):
    """z = |a|; gradient sign(a) (0 at 0, like PyTorch)."""

    def forward(self, a):
        self.a = a
        return np.abs(a)

    def backward(self, g):
        return (g * np.sign(self.a),)


# ----- activations -----------------------------------------------------------------------
class ReLU(Function):
    """z = max(a, 0); gradient 0 at a = 0 (as in PyTorch)."""

    def forward(self, a):
        self.mask = a > 0
        # np.maximum rather than a * mask: -inf * False is nan, and torch.relu(-inf) is 0.
        return np.maximum(a, 0)

    def backward(self, g):
        return (g * self.mask,)


class LeakyReLU(Function):
    """z = a if a > 0 else slope·a (PyTorch's default slope 0.01)."""

    def forward(self, a, slope=0.01):
        self.scale = np.where(a > 0, 1.0, slope).astype(a.dtype)
        return a * self.scale

    def backward(self, g):
        return (g * self.scale,)


class ELU(Function):
    """z = a if a > 0 else α(e^a − 1)."""

    def forward(self, a, alpha=1.0):
        self.pos = a > 0
        self.neg_out = alpha * np.expm1(np.minimum(a, 0))
        self.alpha = alpha
        return np.where(self.pos, a, self.neg_out)

    def backward(self, g):
        return (g * np.where(self.pos, 1.0, self.neg_out + self.alpha).astype(g.dtype),)


class GELU(Function):
    """z = a·Φ(a), Φ the standard normal CDF; approximate="tanh" uses PyTorch's tanh formula."""

    def forward(self, a, approximate="none"):
        self.a, self.approximate = a, approximate
        if approximate == "tanh":
            k = np.sqrt(2.0 / np.pi).astype(a.dtype)
            self.t = np.tanh(k * (a + 0.044715 * a**3))
            return 0.5 * a * (1 + self.t)
        self.cdf = 0.5 * (1.0 + _erf(a / np.sqrt(2.0))).astype(a.dtype)
        return a * self.cdf

    def backward(self, g):
        a = self.a
        if self.approximate == "tanh":
            k = np.sqrt(2.0 / np.pi)
            dt = (1 - self.t**2) * k * (1 + 3 * 0.044715 * a**2)
            return ((g * (0.5 * (1 + self.t) + 0.5 * a * dt)).astype(g.dtype),)
        pdf = np.exp(-0.5 * a * a) / np.sqrt(2.0 * np.pi)
        return ((g * (self.cdf + a * pdf)).astype(g.dtype),)


class Sigmoid(Function):
    """z = 1 / (1 + e^−a), computed without overflow for large |a|."""

    def forward(self, a):
        self.out = sigmoid_array(a)
        return self.out

    def backward(self, g):
        s = self.out
        return (g * s * (1 - s),)


class Tanh(Function):
    """z = tanh a; dz/da = 1 − z²."""

    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, g):
        return (g * (1 - self.out * self.out),)


class Softplus(Function):
    """z = log(1 + e^a), stable form max(a, 0) + log1p(e^−|a|); dz/da = sigmoid(a)."""

    def forward(self, a):
        self.a = a
        return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))

    def backward(self, g):
        return (g * sigmoid_array(self.a),)


def sigmoid_array(a: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function on a raw array."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)


class Softmax(Function):
    """z = e^(a − max a) / Σ e^(a − max a) along `axis`."""

    def forward(self, a, axis=-1):
        self.axis = axis
        e = np.exp(a - a.max(axis=axis, keepdims=True))
        self.out = e / e.sum(axis=axis, keepdims=True)
        return self.out

    def backward(self, g):
        s = self.out
        return (s * (g - (g * s).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """z = a − max a − log Σ e^(a − max a) along `axis`."""

    def forward(self, a, axis=-1):
        self.axis = axis
        shifted = a - a.max(axis=axis, keepdims=True)
        self.out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        return self.out

    def backward(self, g):
        return (g - np.exp(self.out) * g.sum(axis=self.axis, keepdims=True),)


# ----- linear algebra --------------------------------------------------------------------
class MatMul(Function):
    """z = a @ b (NumPy matmul rules, batched and broadcast)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        if a.ndim == 1 and b.ndim == 1:
            return (g * b if self.needs[0] else None, g * a if self.needs[1] else None)
        if self.needs[0]:
            if b.ndim == 1:
                ga = np.multiply.outer(g, b)
            else:
                ga = (g[..., None, :] if a.ndim == 1 else g) @ np.swapaxes(b, -1, -2)
                ga = unbroadcast(ga.reshape(ga.shape[:-2] + ga.shape[-1:]) if a.ndim == 1
                                 else ga, a.shape)
        if self.needs[1]:
            if a.ndim == 1:
                gb = np.multiply.outer(a, g) if b.ndim == 2 else a[:, None] * g[..., None, :]
                gb = unbroadcast(gb, b.shape)
            else:
                gg = g[..., None] if b.ndim == 1 else g
                gb = np.swapaxes(a, -1, -2) @ gg
                gb = unbroadcast(gb[..., 0] if b.ndim == 1 else gb, b.shape)
        return ga, gb


class Linear(Function):
    """z = x·W + b, the fused Dense primitive (x of shape (..., in), W of shape (in, out))."""

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        self.bshape = None if b is None else b.shape
        if x.ndim == 2:
            out = x @ w
        else:
            out = (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + (w.shape[1],))
        if b is not None:
            out += b
        return out

    def backward(self, g):
        x, w = self.x, self.w
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g2 @ w.T).reshape(x.shape) if self.needs[0] else None
        gw = x.reshape(-1, x.shape[-1]).T @ g2 if self.needs[1] else None
        gb = None
        if len(self.needs) > 2 and self.needs[2]:
            gb = unbroadcast(np.add.reduce(g2, axis=0), self.bshape)
        return gx, gw, gb


# ----- reductions ------------------------------------------------------------------------
def _norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim for a in axis) if ndim else ()


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand(g, shape, axes, keepdims):
    """The reduced gradient `g` spread back over `shape` (a fresh, writable array)."""
    if not keepdims and axes:
        g = g.reshape(_kept_shape(shape, axes))
    # empty + copyto costs ~1 µs; np.broadcast_to and np.expand_dims cost several each.
    out = np.empty(shape, dtype=g.dtype)
    np.copyto(out, g)
    return out


class Sum(Function):
    """z = Σ a over `axis` (all axes when None)."""

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.keepdims = a.shape, keepdims
        self.axes = _norm_axis(axis, a.ndim)
        return np.add.reduce(a, axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        return (_expand(g, self.shape, self.axes, self.keepdims),)


class Mean(Function):
    """z = mean of a over `axis`."""

    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.keepdims = a.shape, keepdims
        self.axes = _norm_axis(axis, a.ndim)
        count = 1
        for i in self.axes:
            count *= a.shape[i]
        self.count = count
        # Same pairwise sum and division as ndarray.mean, without its Python wrapper.
        return np.add.reduce(a, axis=self.axes, keepdims=keepdims) / self.count

    def backward(self, g):
        return (_expand(g / self.count, self.shape, self.axes, self.keepdims),)


class _Extreme(Function):
    """Shared max/min: the gradient is split evenly between tied extremes (torch.amax rule)."""

    reduce = None

    def forward(self, a, axis=None, keepdims=False):
        self.a, self.keepdims = a, keepdims
        self.axes = _norm_axis(axis, a.ndim)
        self.out = np.asarray(type(self).reduce(a, axis=self.axes, keepdims=True))
        return self.out if keepdims else np.asarray(np.squeeze(self.out, axis=self.axes))

    def backward(self, g):
        mask = self.a == self.out
        count = mask.sum(axis=self.axes, keepdims=True)
        if not self.keepdims and self.axes:
            g = np.expand_dims(g, self.axes)
        return ((g * mask / count).astype(g.dtype),)


class Max(_Extreme):
    """z = max of a over `axis`."""

    reduce = staticmethod(np.maximum.reduce)


class Min(_Extreme):
    """z = min of a over `axis`."""

    reduce = staticmethod(np.minimum.reduce)


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
