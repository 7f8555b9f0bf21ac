"""PyTorch's loss classes under PyTorch's names and order: `loss_fn(input, target)`.

    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    loss = loss_fn(model(x), y)           # input first, as in PyTorch
    loss.backward()

Thin classes over the same functions and fused primitives as the Keras-named losses (which take
`(y_true, y_pred)`), with PyTorch's arguments and defaults. As in PyTorch, the class axis of
`CrossEntropyLoss` and `NLLLoss` is axis 1: (N, C) or (N, C, d1, ...). An evidently swapped pair
(integer targets where the input belongs, or a target that carries a gradient while the input
does not) is refused with a message naming the order.

`Model.compile(loss=nn.CrossEntropyLoss())` works too. A model calls its loss in Keras's order,
`loss(y_true, y_pred)`, so `losses.get` turns a PyTorch-named loss into its Keras-order twin:
every class here has one, `keras_order(loss_fn)` makes it, a `Loss` subclass with the same name
and settings that calls the PyTorch loss as `loss_fn(y_pred, y_true)`. It saves and loads like
any Loss ({"class": "CrossEntropyLoss", "config": the PyTorch loss's arguments}), and reads
through to the PyTorch loss's settings (`model.loss.weight`, `.reduction`, `.torch` itself).
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..config import Configurable
from ..ops.losses import NegativeLogLikelihood
from ..tensor import Tensor
from .checks import (
    _as_tensor,
    _check_reduction,
    _check_torch_order,
    _class_weight,
    _describe,
    _float_targets,
    _labels,
    _looks_swapped,
    _weighted_reduce,
)
from .classes import Loss
from .functional import (
    _class_ids,
    binary_crossentropy,
    categorical_crossentropy,
    mean_absolute_error,
    mean_squared_error,
    sparse_categorical_crossentropy,
)


class TorchLoss(Configurable):
    """Base class: `loss_fn(input, target) -> Tensor` (PyTorch's order); subclasses write
    `_values(input, target, reduction)`. `get_config()` holds the constructor arguments."""

    labels = False  # for the order check: True = integer labels, None = a regression loss
    keras_equivalent = None  # the Keras loss of the same kind (metrics' "accuracy" reads it)

    def __init__(self, reduction="mean"):
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction

    def __call__(self, input, target) -> Tensor:
        _check_torch_order(type(self).__name__, input, target, self.labels)
        return self._values(input, target, self.reduction)

    def weighted(self, input, target, sample_weight) -> Tensor:
        """The loss with Keras's per-sample weights (what `fit(sample_weight=...)` uses):
        Σ w·l / (number of loss values) for "mean"."""
        _check_torch_order(type(self).__name__, input, target, self.labels)
        values = self._values(input, target, "none")
        return _weighted_reduce(type(self).__name__, values, sample_weight, self.reduction)

    def _values(self, input, target, reduction):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"reduction": self.reduction}


def _classes_last(x: Tensor) -> Tensor:
    """(N, C, d1, ...) → (N, d1, ..., C): PyTorch's class axis 1 moved to splitgrad's last."""
    if x.ndim <= 2:
        return x
    moved = ops.transpose(x, (0, *range(2, x.ndim), 1))
    # Through (rows, C) and back: a C-ordered copy. The fused cross-entropy's backward writes
    # into grad.reshape(-1), which is a copy (so the write is lost) when the logits are a
    # strided view.
    return ops.reshape(ops.reshape(moved, (-1, moved.shape[-1])), moved.shape)


def _list(weight):
    return None if weight is None else np.asarray(weight).tolist()


def _reduce(values: Tensor, reduction) -> Tensor:
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.mean()
    return values


def _ignored(target, ignore_index):
    """`ignore_index` only when some target equals it (the plain fused path otherwise)."""
    return ignore_index if np.any(_labels(target) == ignore_index) else None


class CrossEntropyLoss(TorchLoss):
    """torch.nn.CrossEntropyLoss: log_softmax over axis 1, then NLL with integer class ids
    (mean = Σ w[y]·l / Σ w[y], rows equal to ignore_index left out) or probability targets
    (mean over rows); label_smoothing ε mixes in the uniform distribution."""

    keras_equivalent = "sparse_categorical_crossentropy"

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.weight = _list(weight)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def _values(self, input, target, reduction):
        z = _classes_last(_as_tensor(input))
        t = _labels(target)
        if t.dtype.kind == "f" and t.shape == tuple(np.shape(input)):  # class probabilities
            if t.ndim > 2:
                t = np.moveaxis(t, 1, -1)
            return categorical_crossentropy(
                t, z, True, self.weight, self.label_smoothing, reduction
            )
        return sparse_categorical_crossentropy(
            t,
            z,
            from_logits=True,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
            ignore_index=_ignored(t, self.ignore_index),
            reduction=reduction,
        )

    def get_config(self):
        return {
            "weight": self.weight,
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
        }


class NLLLoss(TorchLoss):
    """torch.nn.NLLLoss on log-probabilities: l_n = −w[y_n]·input[n, y_n] (class axis 1);
    mean = Σ l / Σ w[y]; rows equal to ignore_index are left out."""

    keras_equivalent = "sparse_categorical_crossentropy"

    labels = True

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight = _list(weight)
        self.ignore_index = int(ignore_index)

    def _values(self, input, target, reduction):
        name = "NLLLoss"
        logp = _classes_last(_as_tensor(input))
        yy, valid = _class_ids(name, target, logp, _ignored(target, self.ignore_index))
        num_classes, dtype = logp.shape[-1], logp.dtype
        w = _class_weight(name, self.weight, num_classes, dtype)
        wy = np.ones(yy.shape, dtype) if w is None else w[yy]
        if valid is not None:
            wy = wy * valid
        a = np.zeros(logp.shape, dtype)
        a.reshape(-1)[np.arange(0, yy.size * num_classes, num_classes) + yy.reshape(-1)] = (
            wy.reshape(-1)
        )
        return NegativeLogLikelihood.apply(logp, a, denom=wy.sum(), reduction=reduction)

    def get_config(self):
        return {"weight": self.weight, "ignore_index": self.ignore_index, **super().get_config()}


class MSELoss(TorchLoss):
    """torch.nn.MSELoss: mean((input − target)²)."""

    keras_equivalent = "mean_squared_error"

    labels = None

    def _values(self, input, target, reduction):
        return mean_squared_error(target, input, reduction)


class L1Loss(TorchLoss):
    """torch.nn.L1Loss: mean(|input − target|)."""

    keras_equivalent = "mean_absolute_error"

    labels = None

    def _values(self, input, target, reduction):
        return mean_absolute_error(target, input, reduction)


class _WeightedBinary(TorchLoss):
    """BCE with PyTorch's optional `weight`, a rescaling of each element (broadcast to the
    input); the mean stays the mean over elements."""

    from_logits = False

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.weight = _list(weight)

    def _options(self):
        return {}

    def _values(self, input, target, reduction):
        if self.weight is None:
            return binary_crossentropy(
                target, input, self.from_logits, reduction=reduction, **self._options()
            )
        values = binary_crossentropy(
            target, input, self.from_logits, reduction="none", **self._options()
        )
        return _reduce(values * np.asarray(self.weight, values.dtype), reduction)

    def get_config(self):
        return {"weight": self.weight, **super().get_config(), **self._options()}


class BCELoss(_WeightedBinary):
    """torch.nn.BCELoss on probabilities: −w[y log x + (1−y) log(1−x)], log clamped at −100."""

    keras_equivalent = "binary_crossentropy"


class BCEWithLogitsLoss(_WeightedBinary):
    """torch.nn.BCEWithLogitsLoss: −w[p·y log σ(x) + (1−y) log(1−σ(x))], computed stably from
    the logits x; `pos_weight` p weights the positives (broadcast over the last axis)."""

    keras_equivalent = "binary_crossentropy"

    from_logits = True

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(weight, reduction)
        self.pos_weight = _list(pos_weight)

    def _options(self):
        return {"pos_weight": self.pos_weight}


class HuberLoss(TorchLoss):
    """torch.nn.HuberLoss: 0.5·d² where |d| < δ, else δ·(|d| − 0.5·δ), d = input − target.

    Composed from primitives as 0.5·q² + δ·(|d| − q) with q = min(|d|, δ): no backward of its
    own, and the gradient is d inside, δ·sign(d) outside, as in PyTorch."""

    labels = None

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = float(delta)
        if not self.delta > 0:
            raise ValueError(f"HuberLoss: delta must be positive, got {delta!r}")

    def _values(self, input, target, reduction):
        x = _as_tensor(input)
        d = ops.abs(x - _float_targets(type(self).__name__, x, target))
        q = ops.minimum(d, self.delta)
        return _reduce(q * q * 0.5 + (d - q) * self.delta, reduction)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class SmoothL1Loss(TorchLoss):
    """torch.nn.SmoothL1Loss: 0.5·d²/β where |d| < β, else |d| − 0.5·β (HuberLoss(β)/β; L1 at
    β = 0)."""

    labels = None

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = float(beta)
        if self.beta < 0:
            raise ValueError(f"SmoothL1Loss: beta must be ≥ 0, got {beta!r}")

    def _values(self, input, target, reduction):
        if self.beta == 0:
            return mean_absolute_error(target, input, reduction)
        values = HuberLoss("none", self.beta)._values(input, target, "none")
        return _reduce(values * (1.0 / self.beta), reduction)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


# ----- the Keras-order twins (what Model.compile uses) --------------------------------------
class KerasOrder(Loss):
    """Base of the Keras-order twins: `twin(y_true, y_pred, sample_weight=None)` is
    `torch_loss(y_pred, y_true)` (Keras 3's weighted reduction with `sample_weight`).
    `twin.torch` is the PyTorch-named loss; `get_config()` is its config."""

    torch_class = None  # set on each twin

    def __init__(self, *args, **kwargs):
        self.torch = self.torch_class(*args, **kwargs)
        self.name = type(self).__name__

    @classmethod
    def of(cls, torch_loss: TorchLoss) -> KerasOrder:
        """The twin of an existing PyTorch-named loss (sharing it)."""
        made = KERAS_ORDER.get(type(torch_loss).__name__)
        if made is None or made.torch_class is not type(torch_loss):  # a subclass of the user's
            made = _make_keras_order(type(torch_loss))
        twin = object.__new__(made)
        twin.torch, twin.name = torch_loss, type(torch_loss).__name__
        return twin

    @property
    def reduction(self):
        return self.torch.reduction

    @reduction.setter
    def reduction(self, value):
        _check_reduction(self.name, value)
        self.torch.reduction = value

    @property
    def labels(self):
        return self.torch.labels

    def __getattr__(self, key):
        # Only reached for names the twin lacks: the PyTorch loss's settings (weight, ...).
        if key.startswith("__") or key == "torch":
            raise AttributeError(key)
        return getattr(self.torch, key)

    def __call__(self, y_true, y_pred, sample_weight=None) -> Tensor:
        if _looks_swapped(y_pred, y_true, self.torch.labels):
            name = self.name
            raise ValueError(
                f"the compiled loss {name} takes (y_true, y_pred) as in Keras, like every "
                f"model.loss (nn.{name}() alone takes (input, target) as in PyTorch); the first "
                f"argument looks like predictions ({_describe(y_true)}) and the second like "
                f"targets ({_describe(y_pred)}). Swap them: model.loss(y_true, y_pred)."
            )
        if sample_weight is None:
            return self.torch._values(y_pred, y_true, self.torch.reduction)
        values = self.torch._values(y_pred, y_true, "none")
        return _weighted_reduce(self.name, values, sample_weight, self.torch.reduction)

    def get_config(self) -> dict:
        return self.torch.get_config()


KERAS_ORDER: dict = {}  # PyTorch loss name → its Keras-order twin class


def _make_keras_order(torch_class):
    """Make and register `torch_class`'s twin. Its __name__ is the PyTorch name (what a
    checkpoint stores); its __qualname__ is the module attribute pickle finds it under."""
    name = torch_class.__name__
    attr = f"_KerasOrder{name}"
    twin = type(
        name,
        (KerasOrder,),
        {
            "torch_class": torch_class,
            "__qualname__": attr,
            "__module__": __name__,
            "__doc__": f"{name} in Keras's order: loss(y_true, y_pred) = {name}(y_pred, y_true).",
        },
    )
    KERAS_ORDER[name] = twin
    globals()[attr] = twin
    return twin


def keras_order(loss):
    """The Keras-order twin of a PyTorch-named loss (instance or class); other losses as is."""
    if isinstance(loss, type) and issubclass(loss, TorchLoss):
        loss = loss()
    return KerasOrder.of(loss) if isinstance(loss, TorchLoss) else loss


TORCH_LOSSES = (
    CrossEntropyLoss,
    NLLLoss,
    MSELoss,
    L1Loss,
    BCELoss,
    BCEWithLogitsLoss,
    HuberLoss,
    SmoothL1Loss,
)
for _cls in TORCH_LOSSES:
    _make_keras_order(_cls)
