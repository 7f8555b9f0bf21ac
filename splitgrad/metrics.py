"""Metrics computed from predictions during fit and evaluate (plain NumPy, no gradients).

Each metric accumulates over batches with `update(y_true, y_pred)` and reports `result()`.
"accuracy" resolves to the right kind from the loss, as in Keras.
"""

from __future__ import annotations

import numpy as np

from .config import Configurable, deserialize, serialize


class Metric(Configurable):
    """Running mean of a per-sample score: result = Σ score / Σ count."""

    name = "metric"

    def __init__(self, name=None):
        self.name = name or self.name
        self.reset()

    def get_config(self) -> dict:
        return {"name": self.name}

    def reset(self):
        self.total = 0.0
        self.count = 0

    def scores(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, y_true, y_pred):
        s = self.scores(np.asarray(y_true), np.asarray(y_pred))
        self.total += float(np.sum(s))
        self.count += int(np.size(s))

    def result(self) -> float:
        return self.total / self.count if self.count else float("nan")


class SparseCategoricalAccuracy(Metric):
    """mean(argmax(y_pred) == y_true) for integer labels."""

    name = "sparse_categorical_accuracy"

    def scores(self, y_true, y_pred):
        y_true = y_true.reshape(y_pred.shape[:-1])
        return y_pred.argmax(axis=-1) == y_true


class CategoricalAccuracy(Metric):
    """mean(argmax(y_pred) == argmax(y_true)) for one-hot or probability labels."""

    name = "categorical_accuracy"

    def scores(self, y_true, y_pred):
        return y_pred.argmax(axis=-1) == y_true.argmax(axis=-1)


class BinaryAccuracy(Metric):
    """mean((y_pred > threshold) == y_true); threshold 0.5 on probabilities, 0 on logits."""

    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = threshold
        super().__init__(name)

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold}

    def scores(self, y_true, y_pred):
        return (y_pred > self.threshold) == (y_true.reshape(y_pred.shape) > 0.5)


class MeanAbsoluteError(Metric):
    """mean|y_pred − y_true|."""

    name = "mae"

    def scores(self, y_true, y_pred):
        return np.abs(y_pred - y_true.reshape(y_pred.shape))


class MeanSquaredError(Metric):
    """mean (y_pred − y_true)²."""

    name = "mse"

    def scores(self, y_true, y_pred):
        return (y_pred - y_true.reshape(y_pred.shape)) ** 2


_BY_NAME = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def _accuracy_for(loss) -> Metric:
    """Keras's rule: the accuracy that matches the loss's label format."""
    kind = type(loss).__name__.lower() if loss is not None else ""
    kind = getattr(loss, "keras_equivalent", None) or kind  # a PyTorch-named loss's Keras kind
    from_logits = bool(getattr(loss, "from_logits", False))
    if "sparse" in kind:
        return SparseCategoricalAccuracy("accuracy")
    if "binary" in kind:
        return BinaryAccuracy("accuracy", threshold=0.0 if from_logits else 0.5)
    if "categorical" in kind:
        return CategoricalAccuracy("accuracy")
    raise ValueError(
        f"metric 'accuracy' needs a classification loss to know the label format, but the "
        f"loss is {type(loss).__name__}; name the metric explicitly (e.g. "
        "'sparse_categorical_accuracy') or drop it"
    )


_CLASSES = {
    cls.__name__: cls
    for cls in (
        SparseCategoricalAccuracy,
        CategoricalAccuracy,
        BinaryAccuracy,
        MeanAbsoluteError,
        MeanSquaredError,
    )
}


def to_spec(metric):
    """What a checkpoint stores for a compile() metric: its name, or a Metric's class and
    settings (so a renamed or re-thresholded metric comes back as it was)."""
    return serialize(metric) if isinstance(metric, Metric) else metric


def get(spec, loss=None) -> Metric:
    """A fresh Metric for a name or a `to_spec` dict (a Metric instance passes through)."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, dict):
        return deserialize(spec, _CLASSES, "metric")
    if spec in ("accuracy", "acc"):
        return _accuracy_for(loss)
    try:
        return _BY_NAME[spec](spec)
    except KeyError:
        raise ValueError(
            f"unknown metric {spec!r}; choose 'accuracy' or one of {sorted(_BY_NAME)}"
        ) from None


def get_list(specs, loss=None) -> list:
    if specs is None:
        return []
    if isinstance(specs, (str, Metric)):
        specs = [specs]
    return [get(s, loss) for s in specs]
