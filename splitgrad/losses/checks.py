"""Argument checks shared by the loss functions: reductions, target shapes, dtypes, weights,
the argument order, and the sample-weighted reduction."""

from __future__ import annotations

import numpy as np

from ..ops.activations import Probabilities
from ..tensor import Tensor, is_grad_enabled

_REDUCTIONS = ("mean", "sum", "none")


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
        hint = (
            f"y_true looks like integer class ids for {y_pred.shape[-1]} classes: use "
            "sparse_categorical_crossentropy (or one-hot encode the labels)."
        )
    raise ValueError(
        f"{name}: y_true has shape {y.shape}, expected {y_pred.shape} to match y_pred; {hint}"
    )


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
        raise ValueError(
            f"{name}: weight needs one entry per class, shape ({num_classes},), got shape {w.shape}"
        )
    return w


def _logits_of(y_pred, kind):
    """The logits behind probabilities made by `ops.softmax`/`ops.sigmoid` (kind "softmax" or
    "sigmoid"), or None for any other tensor."""
    if isinstance(y_pred, Probabilities) and y_pred.kind == kind:
        return y_pred.logits
    return None


def _check_probabilities(name, y_pred):
    x = y_pred.data
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{name}: y_pred must be probabilities in [0, 1] when from_logits=False, got values "
            f"in [{x.min():.4g}, {x.max():.4g}]; pass from_logits=True for raw scores (logits)."
        )


# ----- the argument order ----------------------------------------------------------------
def _describe(value) -> str:
    """What an argument looks like, e.g. "float32 (32, 10), requires grad", for the message."""
    data = value.data if isinstance(value, Tensor) else np.asarray(value)
    grad = ", requires grad" if isinstance(value, Tensor) and value.requires_grad else ""
    return f"{data.dtype} {tuple(data.shape)}{grad}"


def _integral(a: np.ndarray) -> bool:
    return a.dtype.kind in "iub" or (a.dtype.kind == "f" and np.array_equal(a, np.floor(a)))


def _looks_swapped(pred, target, labels: bool) -> bool:
    """True when `pred` (the argument in the prediction's place) evidently is the target and
    `target` the prediction:

    - the target carries a gradient while the prediction does not (a target is a constant);
    - for a classification loss: integer predictions next to floating-point targets;
    - for integer-label losses (`labels`): shapes that fit only the other order, one class id
      per row of the other argument's last axis.
    """
    if (
        is_grad_enabled()
        and isinstance(target, Tensor)
        and target.requires_grad
        and not (isinstance(pred, Tensor) and pred.requires_grad)
    ):
        return True
    p = pred.data if isinstance(pred, Tensor) else np.asarray(pred)
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if labels is None:  # a regression loss: only the gradient tells
        return False
    if p.dtype.kind in "iub" and t.dtype.kind == "f":
        return True
    if labels and t.ndim >= 1 and t.shape[-1] > 1:
        lead = t.shape[:-1]
        if (p.shape == lead or p.shape == lead + (1,)) and _integral(p):
            return True
    return False


def _check_order(name, y_true, y_pred, labels=False):
    """Refuse a Keras-order call `loss(y_true, y_pred)` whose arguments are evidently swapped.

    `labels`: True for integer-label losses, False for other classification losses, None for
    regression losses (see `_looks_swapped`)."""
    if _looks_swapped(y_pred, y_true, labels):
        raise ValueError(
            f"{name} takes (y_true, y_pred) as in Keras; the first argument looks like "
            f"predictions ({_describe(y_true)}) and the second like labels "
            f"({_describe(y_pred)}). Swap them: {name}(y_true, y_pred)."
        )


def _check_torch_order(name, input, target, labels=False):
    """The same check for the PyTorch-named losses, which take (input, target)."""
    if _looks_swapped(input, target, labels):
        raise ValueError(
            f"{name} takes (input, target) as in PyTorch; the first argument looks like "
            f"targets ({_describe(input)}) and the second like predictions "
            f"({_describe(target)}). Swap them: {name}(input, target)."
        )


# ----- sample weights --------------------------------------------------------------------
def _weighted_reduce(name, values: Tensor, sample_weight, reduction) -> Tensor:
    """Keras 3's weighted reduction of unreduced losses `values` (one per sample, or per
    element): w broadcast from the batch axis, then "sum" = Σ w·l and "mean" (Keras's
    "sum_over_batch_size") = Σ w·l / (number of loss values), not / Σ w."""
    w = np.asarray(sample_weight.data if isinstance(sample_weight, Tensor) else sample_weight)
    if w.dtype.kind not in "fiub":
        raise ValueError(f"{name}: sample_weight must be numbers, got dtype {w.dtype}")
    w = w.astype(values.dtype, copy=False)
    while w.ndim > values.ndim and w.shape[-1] == 1:
        w = w.reshape(w.shape[:-1])  # (N, 1) weights for (N,) losses
    if w.ndim > values.ndim or w.shape != values.shape[: w.ndim]:
        raise ValueError(
            f"{name}: sample_weight has shape {w.shape}, expected one weight per sample "
            f"({values.shape[:1]}) or per loss value ({values.shape})"
        )
    w = w.reshape(w.shape + (1,) * (values.ndim - w.ndim))
    weighted = values * w
    if reduction == "none":
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    return total * (1.0 / max(values.size, 1))
