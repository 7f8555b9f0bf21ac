"""Activation primitives: ReLU family, GELU, sigmoid, tanh, softplus, softmax, log-softmax."""

from __future__ import annotations

import numpy as np

from .._kernels.compiled import activation_kernels
from ..tensor import Function, Tensor


def _erf(x):
    # scipy's erf is vectorised and exact; imported lazily because only gelu needs it.
    from scipy.special import erf

    return erf(x)


class Probabilities(Tensor):
    """The output of `ops.softmax` (over the last axis) or `ops.sigmoid`, with its logits.

    `.logits` is the input z and `.kind` is "softmax" or "sigmoid". A cross-entropy loss given
    probabilities (from_logits=False) computes the loss from `.logits` with its fused, stable
    primitive, so a Keras-style model ending in a softmax trains exactly like a PyTorch-style
    one that emits raw logits. Otherwise it is an ordinary Tensor.
    """

    __slots__ = ("kind", "logits")

    @classmethod
    def of(cls, out: Tensor, logits: Tensor, kind: str) -> Probabilities:
        """`out` (a fresh op output) as Probabilities: the same data and graph node."""
        p = object.__new__(cls)
        p.data, p.grad, p.requires_grad, p._ctx, p.name = (
            out.data,
            None,
            out.requires_grad,
            out._ctx,
            None,
        )
        p.logits, p.kind = logits, kind
        return p


# ----- activations -----------------------------------------------------------------------
class ReLU(Function):
    """z = max(a, 0); gradient 0 at a = 0 (as in PyTorch).

    ReLU, Sigmoid and Tanh also offer their math on raw arrays (`on_array`, and
    `output_grad`: the input gradient from the output alone), which ops.linalg.DenseChain runs
    inside its stack of Dense layers.
    """

    @staticmethod
    def on_array(a):
        # np.maximum rather than a * mask: -inf * False is nan, and torch.relu(-inf) is 0.
        return np.maximum(a, 0)

    @staticmethod
    def output_grad(g, z):
        # z > 0 exactly where a > 0 (a NaN is neither): backward's mask
        jit = _flat_kernels(g, z)
        if jit is None:
            return g * (z > 0)
        out = np.empty_like(g)  # one compiled pass, no boolean temporary; the same bits
        jit.relu_mask(g.reshape(-1), z.reshape(-1), out.reshape(-1))
        return out

    def forward(self, a):
        self.mask = a > 0  # (1 byte an element, where the output would be 4 or 8)
        return self.on_array(a)

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
    """z = 1 / (1 + e^−a), computed without overflow for large |a|; dz/da = z(1 − z)."""

    @staticmethod
    def on_array(a):
        return sigmoid_array(a)

    @staticmethod
    def output_grad(g, z):
        jit = _flat_kernels(g, z)
        if jit is None:
            return g * z * (1 - z)
        out = np.empty_like(g)  # (a new array: g may be another op's too)
        jit.sigmoid_output_grad(g.reshape(-1), z.reshape(-1), g.dtype.type(1), out.reshape(-1))
        return out

    def forward(self, a):
        self.out = self.on_array(a)
        return self.out

    def backward(self, g):
        return (self.output_grad(g, self.out),)


class Tanh(Function):
    """z = tanh a; dz/da = 1 − z²."""

    @staticmethod
    def on_array(a):
        return np.tanh(a)

    @staticmethod
    def output_grad(g, z):
        return g * (1 - z * z)

    def forward(self, a):
        self.out = self.on_array(a)
        return self.out

    def backward(self, g):
        return (self.output_grad(g, self.out),)


class Softplus(Function):
    """z = log(1 + e^a), stable form max(a, 0) + log1p(e^−|a|); dz/da = sigmoid(a)."""

    def forward(self, a):
        self.a = a
        return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))

    def backward(self, g):
        return (g * sigmoid_array(self.a),)


def sigmoid_array(a: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function on a raw array: with e = e^−|a| (never overflows),
    1 / (1 + e) where a ≥ 0 and e / (1 + e) where a < 0."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    e = np.abs(a, out=np.empty_like(a))  # out=: an array even when a is 0-d
    np.negative(e, out=e)
    np.exp(e, out=e)
    jit = _flat_kernels(a, e)
    if jit is not None:  # the rest in one pass (_kernels/activation_jit.py), the same bits
        jit.sigmoid_from_exp(a.reshape(-1), e.reshape(-1), a.dtype.type(1))
        return e
    d = e + 1
    # The numerator, 1 or e, as max(e, [a ≥ 0]): e ≤ 1, so the maximum is 1 where a ≥ 0 and
    # e where a < 0 (a NaN stays NaN). Four times faster than np.where, with the same bits.
    return np.divide(np.maximum(e, a >= 0, out=e), d, out=e)


def _flat_kernels(*arrays):
    """activation_jit for arrays of one float dtype and shape, each C-contiguous (so that
    reshape(-1) is a view), else None (then NumPy's lines run: the same bits)."""
    a = arrays[0]
    if not all(x.dtype == a.dtype and x.shape == a.shape and x.flags.c_contiguous for x in arrays):
        return None
    return activation_kernels(a.dtype)


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
