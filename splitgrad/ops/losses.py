"""Fused loss primitives with analytic gradients (MSE, MAE, BCE, softmax cross-entropy, NLL).

Each takes the prediction and a constant target and returns the reduced loss in one step;
`_reduce` and `_scale` apply the reduction ("mean", "sum", "none") forward and backward.
"""

from __future__ import annotations

import numpy as np

from ..tensor import Function

# PyTorch's BCE gradient floor is the float32 constant 1e-12f, i.e. 9.99999996e-13 in float64.
_BCE_EPS = float(np.float32(1e-12))


# ----- fused primitives ------------------------------------------------------------------
def _reduce(per, reduction, denom):
    if reduction == "none":
        return per
    total = per.sum()
    if reduction == "sum":
        return np.asarray(total, dtype=per.dtype)
    # Nothing counted (every row ignored, or empty): NaN like PyTorch, without a warning.
    return np.asarray(total / denom if denom else np.nan, dtype=per.dtype)


def _scale(g, reduction, denom):
    """The factor the per-element gradient is multiplied by for this reduction."""
    if reduction == "mean":
        return g / denom if denom else g * 0  # PyTorch's gradient is 0 when nothing counted
    return g


class SquaredError(Function):
    """Fused MSE: l = (x − y)², reduced; dl/dx = 2(x − y)."""

    def forward(self, x, y, reduction="mean"):
        self.d, self.reduction = x - y, reduction
        return _reduce(self.d * self.d, reduction, self.d.size)

    def backward(self, g):
        return self.d * (2 * _scale(g, self.reduction, self.d.size)), None


class AbsoluteError(Function):
    """Fused MAE: l = |x − y|, reduced; dl/dx = sign(x − y) (0 at 0, like PyTorch)."""

    def forward(self, x, y, reduction="mean"):
        self.d, self.reduction = x - y, reduction
        return _reduce(np.abs(self.d), reduction, self.d.size)

    def backward(self, g):
        return np.sign(self.d) * _scale(g, self.reduction, self.d.size), None


class BinaryCrossEntropy(Function):
    """BCE on probabilities: l = −[y·max(log x, −100) + (1−y)·max(log(1−x), −100)].

    Gradient (x − y) / max(x(1−x), 1e-12), PyTorch's clamps.
    """

    def forward(self, x, y, reduction="mean"):
        with np.errstate(divide="ignore"):
            logx = np.maximum(np.log(x), -100)
            log1mx = np.maximum(np.log1p(-x), -100)
        self.x, self.y, self.reduction = x, y, reduction
        return _reduce(-(y * logx + (1 - y) * log1mx), reduction, x.size)

    def backward(self, g):
        x = self.x
        grad = (x - self.y) / np.maximum(x * (1 - x), _BCE_EPS)
        return grad * _scale(g, self.reduction, x.size), None


class BinaryCrossEntropyWithLogits(Function):
    """l = (1−y)·x + (1 + (p−1)·y)·softplus(−x), stable for any x; dl/dx = σ(x) − y when p = 1.

    `pos_weight` p (broadcast over the last axis) weights the positive term, as in PyTorch.
    """

    def forward(self, x, y, pos_weight=None, reduction="mean"):
        sp = np.logaddexp(0, -x)  # softplus(−x) = −log σ(x), computed without overflow
        self.sp, self.y, self.reduction = sp, y, reduction
        self.lw = None if pos_weight is None else 1 + (pos_weight - 1) * y
        per = (1 - y) * x + (sp if self.lw is None else self.lw * sp)
        return _reduce(per, reduction, x.size)

    def backward(self, g):
        sig = np.exp(-self.sp)  # σ(x) reused from the forward softplus: one ufunc call
        if self.lw is None:
            grad = sig - self.y
        else:
            grad = (1 - self.y) + self.lw * (sig - 1)
        return grad * _scale(g, self.reduction, sig.size), None, None


class SoftmaxCrossEntropy(Function):
    """l_n = −Σ_c A[n, c]·log_softmax(z)[n, c] with a target-weight matrix A; mean = Σ l / denom.

    A folds in one-hot or probability targets, class weights, label smoothing and ignored rows,
    so the gradient is always softmax(z)·ΣA − A. The common case (plain integer labels) passes
    `index`, the flat positions of the targets in z, instead of a one-hot A: fewer array passes.
    """

    def forward(self, z, a=None, index=None, denom=1.0, reduction="mean"):
        shifted = z - z.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        se = e.sum(axis=-1, keepdims=True)
        self.p = e / se
        self.a, self.index, self.denom, self.reduction = a, index, denom, reduction
        if index is not None:
            per = (np.log(se).reshape(-1) - shifted.reshape(-1)[index]).reshape(z.shape[:-1])
        else:
            per = -(a * (shifted - np.log(se))).sum(axis=-1)
        return _reduce(per, reduction, denom)

    def backward(self, g):
        scale = _scale(g, self.reduction, self.denom)
        if self.reduction == "none":
            scale = scale[..., None]
        if self.index is not None:
            grad = np.ascontiguousarray(self.p * scale)  # a strided view would copy on reshape
            grad.reshape(-1)[self.index] -= scale.reshape(-1) if scale.ndim else scale
            return grad, None
        a = self.a
        return (self.p * a.sum(axis=-1, keepdims=True) - a) * scale, None


class NegativeLogLikelihood(Function):
    """l_n = −Σ_c A[n, c]·logp[n, c] on given log-probabilities; mean = Σ l / denom."""

    def forward(self, logp, a, denom=1.0, reduction="mean"):
        self.a, self.denom, self.reduction = a, denom, reduction
        return _reduce(-(a * logp).sum(axis=-1), reduction, denom)

    def backward(self, g):
        scale = _scale(g, self.reduction, self.denom)
        return -self.a * (scale[..., None] if self.reduction == "none" else scale), None
