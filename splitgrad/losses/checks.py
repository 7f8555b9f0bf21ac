"""Argument checks shared by the loss functions: reductions, target shapes, dtypes, weights."""

from __future__ import annotations

import numpy as np

from ..ops.activations import Probabilities
from ..tensor import Tensor

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
