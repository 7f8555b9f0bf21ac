"""Loss classes with Keras's names and order: configurable callables
`loss(y_true, y_pred, sample_weight=None)` that serialise to JSON."""

from __future__ import annotations

import numpy as np

from ..config import Configurable
from ..tensor import Tensor
from .checks import _check_order, _check_reduction, _weighted_reduce
from .functional import (
    binary_crossentropy,
    categorical_crossentropy,
    mean_absolute_error,
    mean_squared_error,
    sparse_categorical_crossentropy,
)


# ----- classes ---------------------------------------------------------------------------
class Loss(Configurable):
    """Base class: `loss(y_true, y_pred, sample_weight=None) -> Tensor` (Keras's order);
    `get_config()` rebuilds it as JSON.

    Without sample weights the reduction is PyTorch's (e.g. a class-weighted cross-entropy's
    mean divides by Σ w[y]). With `sample_weight` (one weight per sample, or per loss value)
    it is Keras 3's: "mean" = Σ w·l / (number of loss values), "sum" = Σ w·l.
    """

    fn = None
    labels = False  # for the order check: True = integer labels, None = a regression loss

    def __init__(self, reduction="mean", name=None):
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction
        self.name = name or _CANONICAL.get(type(self).__name__, type(self).__name__)

    def _kwargs(self) -> dict:
        return {}

    def __call__(self, y_true, y_pred, sample_weight=None) -> Tensor:
        _check_order(type(self).__name__, y_true, y_pred, self.labels)
        fn = type(self).fn
        if sample_weight is None:
            return fn(y_true, y_pred, reduction=self.reduction, **self._kwargs())
        values = fn(y_true, y_pred, reduction="none", **self._kwargs())
        return _weighted_reduce(type(self).__name__, values, sample_weight, self.reduction)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction, **self._kwargs()}


class MeanSquaredError(Loss):
    """mean((y_pred − y_true)²) (reduction "none": elementwise)."""

    fn = staticmethod(mean_squared_error)
    labels = None


class MeanAbsoluteError(Loss):
    """mean(|y_pred − y_true|) (reduction "none": elementwise)."""

    fn = staticmethod(mean_absolute_error)
    labels = None


class BinaryCrossentropy(Loss):
    """−[y log x + (1−y) log(1−x)], log clamped at −100; from_logits uses the stable form."""

    fn = staticmethod(binary_crossentropy)

    def __init__(
        self, from_logits=False, pos_weight=None, label_smoothing=0.0, reduction="mean", name=None
    ):
        super().__init__(reduction, name)
        self.from_logits = bool(from_logits)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight).tolist()
        self.label_smoothing = float(label_smoothing)

    def _kwargs(self):
        return {
            "from_logits": self.from_logits,
            "pos_weight": self.pos_weight,
            "label_smoothing": self.label_smoothing,
        }


class CategoricalCrossentropy(Loss):
    """−Σ_c w_c t'_c log softmax(z)_c per row, t' = (1−ε)t + ε/C; mean over rows."""

    fn = staticmethod(categorical_crossentropy)

    def __init__(
        self, from_logits=False, weight=None, label_smoothing=0.0, reduction="mean", name=None
    ):
        super().__init__(reduction, name)
        self.from_logits = bool(from_logits)
        self.weight = None if weight is None else np.asarray(weight).tolist()
        self.label_smoothing = float(label_smoothing)

    def _kwargs(self):
        return {
            "from_logits": self.from_logits,
            "weight": self.weight,
            "label_smoothing": self.label_smoothing,
        }


class SparseCategoricalCrossentropy(Loss):
    """−w[y] log softmax(z)[y] per row (integer ids); mean = Σ l / Σ w[y]; rows equal to
    `ignore_index` are left out."""

    fn = staticmethod(sparse_categorical_crossentropy)
    labels = True

    def __init__(
        self,
        from_logits=False,
        weight=None,
        label_smoothing=0.0,
        ignore_index=None,
        reduction="mean",
        name=None,
    ):
        super().__init__(reduction, name)
        self.from_logits = bool(from_logits)
        self.weight = None if weight is None else np.asarray(weight).tolist()
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def _kwargs(self):
        return {
            "from_logits": self.from_logits,
            "weight": self.weight,
            "label_smoothing": self.label_smoothing,
            "ignore_index": self.ignore_index,
        }


MSE = MeanSquaredError
MAE = MeanAbsoluteError

_CANONICAL = {
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "BinaryCrossentropy": "binary_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
}
