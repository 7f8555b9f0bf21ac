"""Loss classes: configurable callables `loss(y_pred, y_true)` that serialise to JSON."""

from __future__ import annotations

import numpy as np

from ..config import Configurable
from ..tensor import Tensor
from .checks import _check_reduction
from .functional import (
    binary_crossentropy,
    categorical_crossentropy,
    mean_absolute_error,
    mean_squared_error,
    sparse_categorical_crossentropy,
)


# ----- classes ---------------------------------------------------------------------------
class Loss(Configurable):
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


class MeanSquaredError(Loss):
    """mean((y_pred − y_true)²) (reduction "none": elementwise)."""

    fn = staticmethod(mean_squared_error)


class MeanAbsoluteError(Loss):
    """mean(|y_pred − y_true|) (reduction "none": elementwise)."""

    fn = staticmethod(mean_absolute_error)


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
