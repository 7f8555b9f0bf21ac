"""Loss functions in functional form: `loss(y_true, y_pred, ...) -> Tensor`, Keras's order
(`keras.losses.sparse_categorical_crossentropy(y_true, y_pred)`), like the loss classes.

They check the arguments (an evidently swapped pair is refused with a message naming the
order), find the logits remembered by `ops.softmax` / `ops.sigmoid` when `from_logits=False`,
and call the fused primitives.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..ops.losses import (
    AbsoluteError,
    BinaryCrossEntropy,
    BinaryCrossEntropyWithLogits,
    NegativeLogLikelihood,
    SoftmaxCrossEntropy,
    SquaredError,
)
from ..tensor import Tensor
from .checks import (
    _as_tensor,
    _check_order,
    _check_probabilities,
    _check_reduction,
    _class_weight,
    _float_targets,
    _labels,
    _logits_of,
)

_TINY = float(np.exp(-100.0))  # log clamp at −100, as PyTorch's BCE does


# ----- functional forms ------------------------------------------------------------------
def mean_squared_error(y_true, y_pred, reduction="mean") -> Tensor:
    """mean((y_pred − y_true)²)."""
    _check_reduction("mean_squared_error", reduction)
    _check_order("mean_squared_error", y_true, y_pred, labels=None)
    y_pred = _as_tensor(y_pred)
    y = _float_targets("mean_squared_error", y_pred, y_true)
    return SquaredError.apply(y_pred, y, reduction=reduction)


def mean_absolute_error(y_true, y_pred, reduction="mean") -> Tensor:
    """mean(|y_pred − y_true|)."""
    _check_reduction("mean_absolute_error", reduction)
    _check_order("mean_absolute_error", y_true, y_pred, labels=None)
    y_pred = _as_tensor(y_pred)
    y = _float_targets("mean_absolute_error", y_pred, y_true)
    return AbsoluteError.apply(y_pred, y, reduction=reduction)


def binary_crossentropy(
    y_true, y_pred, from_logits=False, pos_weight=None, label_smoothing=0.0, reduction="mean"
) -> Tensor:
    """BCE on probabilities (log clamped at −100) or, stably, on logits (with `pos_weight`).

    Label smoothing ε uses targets y(1−ε) + ε/2 (Keras).
    """
    name = "binary_crossentropy"
    _check_reduction(name, reduction)
    _check_order(name, y_true, y_pred)
    y_pred = _as_tensor(y_pred)
    logits = y_pred if from_logits else _logits_of(y_pred, "sigmoid")
    y = _float_targets(name, y_pred, y_true)
    if label_smoothing:
        y = y * (1 - label_smoothing) + 0.5 * label_smoothing
    if logits is not None:
        pw = None if pos_weight is None else np.asarray(pos_weight, dtype=logits.dtype)
        return BinaryCrossEntropyWithLogits.apply(logits, y, pos_weight=pw, reduction=reduction)
    if pos_weight is not None:
        raise ValueError(
            f"{name}: pos_weight needs logits; pass from_logits=True with raw "
            "scores (or end the model in a sigmoid activation)."
        )
    _check_probabilities(name, y_pred)
    return BinaryCrossEntropy.apply(y_pred, y, reduction=reduction)


def _cross_entropy(name, y_pred, logits, a, denom, reduction):
    if logits is not None:
        return SoftmaxCrossEntropy.apply(logits, a=a, denom=denom, reduction=reduction)
    # Plain probabilities (no logits known): PyTorch's nll_loss(log p), log clamped at −100.
    _check_probabilities(name, y_pred)
    logp = ops.log(ops.clip(y_pred, _TINY, None))
    return NegativeLogLikelihood.apply(logp, a, denom=denom, reduction=reduction)


def categorical_crossentropy(
    y_true, y_pred, from_logits=False, weight=None, label_smoothing=0.0, reduction="mean"
) -> Tensor:
    """Cross-entropy with probability (e.g. one-hot) targets t on the last axis.

    t' = (1−ε)t + ε/C; l_n = −Σ_c w_c t'_c log_softmax(z)_c; mean divides by the row count.
    """
    name = "categorical_crossentropy"
    _check_reduction(name, reduction)
    _check_order(name, y_true, y_pred)
    y_pred = _as_tensor(y_pred)
    logits = y_pred if from_logits else _logits_of(y_pred, "softmax")
    y = _labels(y_true)
    if y.shape != y_pred.shape:
        hint = "pass one row of class probabilities per prediction."
        if y.shape in (y_pred.shape[:-1], y_pred.shape[:-1] + (1,)):
            hint = "labels look like integer class ids: use sparse_categorical_crossentropy."
        raise ValueError(
            f"{name}: y_true has shape {y.shape}, expected {y_pred.shape} (classes "
            f"on the last axis); {hint}"
        )
    num_classes = y_pred.shape[-1]
    a = y.astype(y_pred.dtype)
    if label_smoothing:
        a = a * (1 - label_smoothing) + label_smoothing / num_classes
    w = _class_weight(name, weight, num_classes, y_pred.dtype)
    if w is not None:
        a = a * w
    denom = a.size // num_classes if num_classes else 0
    return _cross_entropy(name, y_pred, logits, a, denom, reduction)


def sparse_categorical_crossentropy(
    y_true,
    y_pred,
    from_logits=False,
    weight=None,
    label_smoothing=0.0,
    ignore_index=None,
    reduction="mean",
) -> Tensor:
    """Cross-entropy with integer class ids on the last axis (PyTorch's cross_entropy).

    l_n = −w[y_n]·log p[n, y_n]; mean = Σ l / Σ w[y_n]; rows equal to `ignore_index` are left
    out; smoothing ε: (1−ε)·NLL + (ε/C)·Σ_c(−w_c log p_c).
    """
    name = "sparse_categorical_crossentropy"
    _check_reduction(name, reduction)
    _check_order(name, y_true, y_pred, labels=True)
    y_pred = _as_tensor(y_pred)
    logits = y_pred if from_logits else _logits_of(y_pred, "softmax")
    lead, num_classes = y_pred.shape[:-1], y_pred.shape[-1]
    yy, valid = _class_ids(name, y_true, y_pred, ignore_index)
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


def _class_ids(name, y_true, y_pred, ignore_index):
    """(integer class ids shaped like y_pred without its last axis, with ignored rows set to
    0; the mask of rows that count, or None), checked against y_pred's classes."""
    lead, num_classes = y_pred.shape[:-1], y_pred.shape[-1]
    y = _labels(y_true)
    if y.shape != lead:
        if y.shape == lead + (1,):
            y = y.reshape(lead)
        else:
            hint = "pass one integer class id per prediction row."
            if y.shape == y_pred.shape:
                hint = "labels look one-hot: use categorical_crossentropy (or argmax them)."
            raise ValueError(
                f"{name}: y_true has shape {y.shape}, expected {lead} (one class id "
                f"per row of y_pred {y_pred.shape}); {hint}"
            )
    if y.dtype.kind not in "iu":
        if y.dtype.kind != "f" or (y.size and not np.array_equal(y, np.floor(y))):
            raise ValueError(
                f"{name}: y_true must hold integer class ids, got dtype {y.dtype}; "
                "for probability targets use categorical_crossentropy."
            )
        y = y.astype(np.int64)
    valid = None if ignore_index is None else y != ignore_index
    yy = y if valid is None else np.where(valid, y, 0)
    if yy.size and (yy.min() < 0 or yy.max() >= num_classes):
        bad = yy[(yy < 0) | (yy >= num_classes)][0]
        raise ValueError(
            f"{name}: class id {bad} is out of range for {num_classes} classes "
            "(expected 0..C-1); check the labels or the size of the last layer."
        )
    return yy, valid


mse = mean_squared_error
mae = mean_absolute_error
