"""Loss functions with PyTorch's numerics and Keras's arguments, plus a string registry.

Every loss is called as `loss(y_pred, y_true)` (PyTorch's order: prediction first) and returns a
scalar Tensor (reduction "mean" or "sum") or the unreduced losses ("none"). Classes are on the
LAST axis, so (N, C) and (N, T, C) outputs both work. The cross-entropies are fused primitives
with analytic gradients: from logits they never form probabilities that could under/overflow, and
when `from_logits=False` but `y_pred` came out of `ops.softmax` / `ops.sigmoid`, the logits it
remembers (`y_pred._logits`) are used instead, so a Keras-style model ending in softmax trains
as stably as one emitting raw logits. Targets are constants (no gradient flows into y_true).
"""

from __future__ import annotations

import numpy as np

from . import ops
from .tensor import Function, Tensor

_REDUCTIONS = ("mean", "sum", "none")
# PyTorch's BCE gradient floor is the float32 constant 1e-12f, i.e. 9.99999996e-13 in float64.
_BCE_EPS = float(np.float32(1e-12))
_TINY = float(np.exp(-100.0))  # log clamp at −100, as PyTorch's BCE does


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
            grad = self.p * scale
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


# ----- argument checks -------------------------------------------------------------------
def _as_tensor(y_pred) -> Tensor:
    return y_pred if isinstance(y_pred, Tensor) else Tensor(np.asarray(y_pred))


def _labels(y_true) -> np.ndarray:
    return np.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)


def _strip(shape):
    shape = tuple(shape)
    while shape and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _match_shape(name, y_pred, y):
    """y_true reshaped to y_pred's shape; (N,) vs (N, 1) is accepted (the Keras habit)."""
    if y.shape == y_pred.shape:
        return y
    if _strip(y.shape) == _strip(y_pred.shape):
        return y.reshape(y_pred.shape)
    hint = "pass targets with the same shape as the predictions."
    if y_pred.ndim >= 1 and y_pred.shape[-1] > 1 and y.shape == y_pred.shape[:-1]:
        hint = (f"y_true looks like integer class ids for {y_pred.shape[-1]} classes: use "
                "sparse_categorical_crossentropy (or one-hot encode the labels).")
    raise ValueError(f"{name}: y_true has shape {y.shape}, expected {y_pred.shape} to match "
                     f"y_pred; {hint}")


def _float_targets(name, y_pred, y_true):
    y = _labels(y_true)
    if y.dtype != y_pred.dtype:
        y = y.astype(y_pred.dtype)
    return _match_shape(name, y_pred, y)


def _class_weight(name, weight, num_classes, dtype):
    if weight is None:
        return None
    w = np.asarray(weight, dtype=dtype)
    if w.shape != (num_classes,):
        raise ValueError(f"{name}: weight needs one entry per class, shape ({num_classes},), "
                         f"got shape {w.shape}")
    return w


def _logits_of(y_pred, kind):
    src = y_pred._logits
    return src[1] if src is not None and src[0] == kind else None


# ----- functional forms ------------------------------------------------------------------
def mean_squared_error(y_pred, y_true, reduction="mean") -> Tensor:
    """mean((y_pred − y_true)²)."""
    _check_reduction("mean_squared_error", reduction)
    y_pred = _as_tensor(y_pred)
    y = _float_targets("mean_squared_error", y_pred, y_true)
    return SquaredError.apply(y_pred, y, reduction=reduction)


def mean_absolute_error(y_pred, y_true, reduction="mean") -> Tensor:
    """mean(|y_pred − y_true|)."""
    _check_reduction("mean_absolute_error", reduction)
    y_pred = _as_tensor(y_pred)
    y = _float_targets("mean_absolute_error", y_pred, y_true)
    return AbsoluteError.apply(y_pred, y, reduction=reduction)


def binary_crossentropy(y_pred, y_true, from_logits=False, pos_weight=None, label_smoothing=0.0,
                        reduction="mean") -> Tensor:
    """BCE on probabilities (log clamped at −100) or, stably, on logits (with `pos_weight`).

    Label smoothing ε uses targets y(1−ε) + ε/2 (Keras).
    """
    name = "binary_crossentropy"
    _check_reduction(name, reduction)
    y_pred = _as_tensor(y_pred)
    logits = y_pred if from_logits else _logits_of(y_pred, "sigmoid")
    y = _float_targets(name, y_pred, y_true)
    if label_smoothing:
        y = y * (1 - label_smoothing) + 0.5 * label_smoothing
    if logits is not None:
        pw = None if pos_weight is None else np.asarray(pos_weight, dtype=logits.dtype)
        return BinaryCrossEntropyWithLogits.apply(logits, y, pos_weight=pw, reduction=reduction)
    if pos_weight is not None:
        raise ValueError(f"{name}: pos_weight needs logits; pass from_logits=True with raw "
                         "scores (or end the model in a sigmoid activation).")
    _check_probabilities(name, y_pred)
    return BinaryCrossEntropy.apply(y_pred, y, reduction=reduction)


def _check_probabilities(name, y_pred):
    x = y_pred.data
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{name}: y_pred must be probabilities in [0, 1] when from_logits=False, got values "
            f"in [{x.min():.4g}, {x.max():.4g}]; pass from_logits=True for raw scores (logits).")


def _cross_entropy(name, y_pred, logits, a, denom, reduction):
    if logits is not None:
        return SoftmaxCrossEntropy.apply(logits, a=a, denom=denom, reduction=reduction)
    # Plain probabilities (no logits known): PyTorch's nll_loss(log p), log clamped at −100.
    _check_probabilities(name, y_pred)
    logp = ops.log(ops.clip(y_pred, _TINY, None))
    return NegativeLogLikelihood.apply(logp, a, denom=denom, reduction=reduction)


def categorical_crossentropy(y_pred, y_true, from_logits=False, weight=None, label_smoothing=0.0,
                             reduction="mean") -> Tensor:
    """Cross-entropy with probability (e.g. one-hot) targets t on the last axis.

    t' = (1−ε)t + ε/C; l_n = −Σ_c w_c t'_c log_softmax(z)_c; mean divides by the row count.
    """
    name = "categorical_crossentropy"
    _check_reduction(name, reduction)
    y_pred = _as_tensor(y_pred)
    logits = y_pred if from_logits else _logits_of(y_pred, "softmax")
    y = _labels(y_true)
    if y.shape != y_pred.shape:
        hint = "pass one row of class probabilities per prediction."
        if y.shape in (y_pred.shape[:-1], y_pred.shape[:-1] + (1,)):
            hint = "labels look like integer class ids: use sparse_categorical_crossentropy."
        raise ValueError(f"{name}: y_true has shape {y.shape}, expected {y_pred.shape} (classes "
                         f"on the last axis); {hint}")
    num_classes = y_pred.shape[-1]
    a = y.astype(y_pred.dtype)
    if label_smoothing:
        a = a * (1 - label_smoothing) + label_smoothing / num_classes
    w = _class_weight(name, weight, num_classes, y_pred.dtype)
    if w is not None:
        a = a * w
    denom = a.size // num_classes if num_classes else 0
    return _cross_entropy(name, y_pred, logits, a, denom, reduction)


def sparse_categorical_crossentropy(y_pred, y_true, from_logits=False, weight=None,
                                    label_smoothing=0.0, ignore_index=None,
                                    reduction="mean") -> Tensor:
    """Cross-entropy with integer class ids on the last axis (PyTorch's cross_entropy).

    l_n = −w[y_n]·log p[n, y_n]; mean = Σ l / Σ w[y_n]; rows equal to `ignore_index` are left
    out; smoothing ε: (1−ε)·NLL + (ε/C)·Σ_c(−w_c log p_c).
    """
    name = "sparse_categorical_crossentropy"
    _check_reduction(name, reduction)
    y_pred = _as_tensor(y_pred)
    logits = y_pred if from_logits else _logits_of(y_pred, "softmax")
    lead, num_classes = y_pred.shape[:-1], y_pred.shape[-1]
    y = _labels(y_true)
    if y.shape != lead:
        if y.shape == lead + (1,):
            y = y.reshape(lead)
        else:
            hint = "pass one integer class id per prediction row."
            if y.shape == y_pred.shape:
                hint = "labels look one-hot: use categorical_crossentropy (or argmax them)."
            raise ValueError(f"{name}: y_true has shape {y.shape}, expected {lead} (one class id "
                             f"per row of y_pred {y_pred.shape}); {hint}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind != "f" or (y.size and not np.array_equal(y, np.floor(y))):
            raise ValueError(f"{name}: y_true must hold integer class ids, got dtype {y.dtype}; "
                             "for probability targets use categorical_crossentropy.")
        y = y.astype(np.int64)
    valid = None if ignore_index is None else y != ignore_index
    yy = y if valid is None else np.where(valid, y, 0)
    if yy.size and (yy.min() < 0 or yy.max() >= num_classes):
        bad = yy[(yy < 0) | (yy >= num_classes)][0]
        raise ValueError(f"{name}: class id {bad} is out of range for {num_classes} classes "
                         "(expected 0..C-1); check the labels or the size of the last layer.")
    index = np.arange(0, yy.size * num_classes, num_classes) + yy.reshape(-1)
    if logits is not None and weight is None and not label_smoothing and valid is None:
        return SoftmaxCrossEntropy.apply(logits, index=index, denom=yy.size, reduction=reduction)
    dtype = y_pred.dtype
    w = _class_weight(name, weight, num_classes, dtype)
    wy = np.ones(lead, dtype=dtype) if w is None else w[yy]
    if valid is not None:
        wy = wy * valid
    a = np.zeros(y_pred.shape, dtype=dtype)
    a.reshape(-1)[index] = (wy * (1 - label_smoothing)).reshape(-1)
    if label_smoothing:
        row = np.full(num_classes, label_smoothing / num_classes, dtype) * (1 if w is None else w)
        a += row if valid is None else row * valid[..., None]
    return _cross_entropy(name, y_pred, logits, a, wy.sum(), reduction)


# ----- classes and the registry ----------------------------------------------------------
class Loss:
    """Base class: `loss(y_pred, y_true) -> Tensor`; `get_config()` rebuilds it as JSON."""

    fn = None

    def __init__(self, reduction="mean", name=None):
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction
        self.name = name or _CANONICAL.get(type(self).__name__, type(self).__name__)

    def _kwargs(self) -> dict:
        return {}

    def __call__(self, y_pred, y_true) -> Tensor:
        return type(self).fn(y_pred, y_true, reduction=self.reduction, **self._kwargs())

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction, **self._kwargs()}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MeanSquaredError(Loss):
    """mean((y_pred − y_true)²) (reduction "none": elementwise)."""

    fn = staticmethod(mean_squared_error)


class MeanAbsoluteError(Loss):
    """mean(|y_pred − y_true|) (reduction "none": elementwise)."""

    fn = staticmethod(mean_absolute_error)


class BinaryCrossentropy(Loss):
    """−[y log x + (1−y) log(1−x)], log clamped at −100; from_logits uses the stable form."""

    fn = staticmethod(binary_crossentropy)

    def __init__(self, from_logits=False, pos_weight=None, label_smoothing=0.0,
                 reduction="mean", name=None):
        super().__init__(reduction, name)
        self.from_logits = bool(from_logits)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight).tolist()
        self.label_smoothing = float(label_smoothing)

    def _kwargs(self):
        return {"from_logits": self.from_logits, "pos_weight": self.pos_weight,
                "label_smoothing": self.label_smoothing}


class CategoricalCrossentropy(Loss):
    """−Σ_c w_c t'_c log softmax(z)_c per row, t' = (1−ε)t + ε/C; mean over rows."""

    fn = staticmethod(categorical_crossentropy)

    def __init__(self, from_logits=False, weight=None, label_smoothing=0.0, reduction="mean",
                 name=None):
        super().__init__(reduction, name)
        self.from_logits = bool(from_logits)
        self.weight = None if weight is None else np.asarray(weight).tolist()
        self.label_smoothing = float(label_smoothing)

    def _kwargs(self):
        return {"from_logits": self.from_logits, "weight": self.weight,
                "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(Loss):
    """−w[y] log softmax(z)[y] per row (integer ids); mean = Σ l / Σ w[y]; `ignore_index` rows out."""

    fn = staticmethod(sparse_categorical_crossentropy)

    def __init__(self, from_logits=False, weight=None, label_smoothing=0.0, ignore_index=None,
                 reduction="mean", name=None):
        super().__init__(reduction, name)
        self.from_logits = bool(from_logits)
        self.weight = None if weight is None else np.asarray(weight).tolist()
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def _kwargs(self):
        return {"from_logits": self.from_logits, "weight": self.weight,
                "label_smoothing": self.label_smoothing, "ignore_index": self.ignore_index}


MSE = MeanSquaredError
MAE = MeanAbsoluteError
mse = mean_squared_error
mae = mean_absolute_error

_CANONICAL = {
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "BinaryCrossentropy": "binary_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
}
_CLASSES = {c.__name__: c for c in (MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy,
                                    CategoricalCrossentropy, SparseCategoricalCrossentropy)}
# Keys are lower case without underscores, so "BinaryCrossentropy", "binary_cross_entropy" and
# "binary_crossentropy" all resolve.
_ALIASES = {
    "mse": MeanSquaredError, "meansquarederror": MeanSquaredError,
    "mae": MeanAbsoluteError, "meanabsoluteerror": MeanAbsoluteError,
    "bce": BinaryCrossentropy, "binarycrossentropy": BinaryCrossentropy,
    "cce": CategoricalCrossentropy, "categoricalcrossentropy": CategoricalCrossentropy,
    "scce": SparseCategoricalCrossentropy,
    "sparsecategoricalcrossentropy": SparseCategoricalCrossentropy,
    "crossentropy": SparseCategoricalCrossentropy,  # PyTorch's name for the integer-label loss
}


def serialize(loss: Loss) -> dict:
    """{"class_name": ..., "config": ...}, JSON-serialisable; `get` turns it back into a loss."""
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def get(identifier):
    """A loss from a name ("mse", "sparse_categorical_crossentropy", ...), a serialised dict,
    a Loss class or instance, or any callable `f(y_pred, y_true)` (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, dict):
        cls = _CLASSES.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"unknown loss class {identifier.get('class_name')!r} in config; "
                             f"known: {sorted(_CLASSES)}")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier.lower().replace("_", "").replace("-", ""))
        if cls is None:
            raise ValueError(f"unknown loss {identifier!r}; expected one of "
                             f"{sorted(_CANONICAL.values())} (or mse, mae, bce, cce, scce), a "
                             "Loss instance or a callable.")
        return cls()
    if callable(identifier):
        return identifier
    raise TypeError(f"loss must be a name, a Loss or a callable, got {type(identifier).__name__}")
