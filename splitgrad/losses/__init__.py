"""Loss functions with PyTorch's numerics and Keras's arguments, plus a string registry.

Every loss here is called as `loss(y_true, y_pred)` (Keras's order: target first) and returns a
scalar Tensor (reduction "mean" or "sum") or the unreduced losses ("none"). Classes are on the
LAST axis, so (N, C) and (N, T, C) outputs both work. The cross-entropies are fused primitives
with analytic gradients: from logits they never form probabilities that could under/overflow, and
when `from_logits=False` but `y_pred` came out of `ops.softmax` / `ops.sigmoid`, the logits it
remembers (`ops.activations.Probabilities`) are used instead, so a Keras-style model ending in
softmax trains as stably as one emitting raw logits. Targets are constants (no gradient flows
into y_true).

PyTorch's loss classes under PyTorch's names (CrossEntropyLoss, NLLLoss, MSELoss, ...) take
PyTorch's order `loss_fn(input, target)` and PyTorch's class axis 1 (torch_named.py); `get`
(what Model.compile calls) turns one into its Keras-order twin, so `compile(loss=
nn.CrossEntropyLoss())` works, and so do the names as strings ("CrossEntropyLoss").

Layout: checks.py (argument checks), functional.py (the functional forms), classes.py (Loss
classes), torch_named.py (the PyTorch-named classes and their twins); the fused primitives with
their gradients are in splitgrad/ops/losses.py. This module re-exports the public names and
holds the registry: `get` and `serialize`.
"""

from __future__ import annotations

from .. import config
from .classes import _CANONICAL
from .classes import MAE as MAE
from .classes import MSE as MSE
from .classes import BinaryCrossentropy as BinaryCrossentropy
from .classes import CategoricalCrossentropy as CategoricalCrossentropy
from .classes import Loss as Loss
from .classes import MeanAbsoluteError as MeanAbsoluteError
from .classes import MeanSquaredError as MeanSquaredError
from .classes import SparseCategoricalCrossentropy as SparseCategoricalCrossentropy
from .functional import binary_crossentropy as binary_crossentropy
from .functional import categorical_crossentropy as categorical_crossentropy
from .functional import mae as mae
from .functional import mean_absolute_error as mean_absolute_error
from .functional import mean_squared_error as mean_squared_error
from .functional import mse as mse
from .functional import sparse_categorical_crossentropy as sparse_categorical_crossentropy
from .torch_named import KERAS_ORDER, TorchLoss, keras_order
from .torch_named import BCELoss as BCELoss
from .torch_named import BCEWithLogitsLoss as BCEWithLogitsLoss
from .torch_named import CrossEntropyLoss as CrossEntropyLoss
from .torch_named import HuberLoss as HuberLoss
from .torch_named import L1Loss as L1Loss
from .torch_named import MSELoss as MSELoss
from .torch_named import NLLLoss as NLLLoss
from .torch_named import SmoothL1Loss as SmoothL1Loss

# ----- the registry ----------------------------------------------------------------------
_CLASSES = {
    c.__name__: c
    for c in (
        MeanSquaredError,
        MeanAbsoluteError,
        BinaryCrossentropy,
        CategoricalCrossentropy,
        SparseCategoricalCrossentropy,
    )
}
_CLASSES.update(KERAS_ORDER)  # a serialised PyTorch-named loss comes back as its twin
# Keys are lower case without underscores, so "BinaryCrossentropy", "binary_cross_entropy" and
# "binary_crossentropy" all resolve.
_ALIASES = {
    "mse": MeanSquaredError,
    "meansquarederror": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "meanabsoluteerror": MeanAbsoluteError,
    "bce": BinaryCrossentropy,
    "binarycrossentropy": BinaryCrossentropy,
    "cce": CategoricalCrossentropy,
    "categoricalcrossentropy": CategoricalCrossentropy,
    "scce": SparseCategoricalCrossentropy,
    "sparsecategoricalcrossentropy": SparseCategoricalCrossentropy,
    "crossentropy": SparseCategoricalCrossentropy,  # PyTorch's name for the integer-label loss
}
_ALIASES.update({name.lower(): twin for name, twin in KERAS_ORDER.items()})


def serialize(loss: Loss) -> dict:
    """{"class_name": ..., "config": ...}, JSON-serialisable; `get` turns it back into a loss."""
    return config.serialize(loss)


def get(identifier):
    """A loss in Keras's order `loss(y_true, y_pred)`: from a name ("mse",
    "sparse_categorical_crossentropy", "CrossEntropyLoss", ...), a serialised dict, a Loss class
    or instance, a PyTorch-named loss (class or instance: its Keras-order twin), or any
    callable `f(y_true, y_pred)` (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, TorchLoss) or (
        isinstance(identifier, type) and issubclass(identifier, TorchLoss)
    ):
        return keras_order(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, dict):
        return config.deserialize(identifier, _CLASSES, "loss")
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier.lower().replace("_", "").replace("-", ""))
        if cls is None:
            raise ValueError(
                f"unknown loss {identifier!r}; expected one of "
                f"{sorted(_CANONICAL.values())} (or mse, mae, bce, cce, scce), a PyTorch "
                f"name ({', '.join(sorted(KERAS_ORDER))}), a Loss instance or a callable."
            )
        return cls()
    if callable(identifier):
        return identifier
    raise TypeError(f"loss must be a name, a Loss or a callable, got {type(identifier).__name__}")
