"""Per-sample weights for `fit` and `evaluate`: Keras's `class_weight` and `sample_weight`.

Each sample i gets one weight w_i = class_weight[y_i] · sample_weight_i (either factor is 1 when
not given). The loss of a batch of B samples is then Keras 3's weighted mean

    L = Σ_i w_i · ℓ_i / B        (reduction "mean"; Σ_i w_i · ℓ_i for "sum")

so a class weighted 2 counts as if its rows were there twice. The weights travel with the
targets through the batch order: `WeightedTargets(y, w)` is indexed like an array, and
`Model.compute_loss` passes `w` to the loss as its `sample_weight` (losses/checks.py
`_weighted_reduce`). A batch source may also yield (x, y, sample_weight) triples, as in Keras.
"""

from __future__ import annotations

import numpy as np


class WeightedTargets:
    """Targets `y` and one weight per sample `w`, sliced together (y[idx] with w[idx])."""

    __slots__ = ("w", "y")

    def __init__(self, y, w):
        self.y, self.w = y, w

    def __len__(self) -> int:
        return len(self.w)

    def __getitem__(self, index):
        return WeightedTargets(self.y[index], self.w[index])


def split(y):
    """(the targets, their weights or None): unwraps WeightedTargets."""
    if isinstance(y, WeightedTargets):
        return y.y, y.w
    return y, None


def weigh(y, class_weight=None, sample_weight=None, where="fit"):
    """`y` with its per-sample weights attached (WeightedTargets), or `y` itself when neither
    `class_weight` nor `sample_weight` is given."""
    if class_weight is None and sample_weight is None:
        return y
    n = len(y)
    w = np.ones(n, dtype=np.float64)
    if sample_weight is not None:
        w = w * _checked_sample_weight(sample_weight, n, where)
    if class_weight is not None:
        w = w * _class_weights(class_weight, y, where)
    return WeightedTargets(y, w)


def _checked_sample_weight(sample_weight, n, where) -> np.ndarray:
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiub":
        raise ValueError(f"{where}: sample_weight must be numbers, got dtype {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(
            f"{where}: sample_weight has shape {w.shape}; expected one weight per sample, "
            f"shape ({n},)"
        )
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(
            f"{where}: sample_weight must be finite and non-negative; found "
            f"{w[~np.isfinite(w) | (w < 0)][:3].tolist()}"
        )
    return w


def _class_weights(class_weight, y, where) -> np.ndarray:
    """class_weight[y_i] for each sample: y holds integer labels (N,) or (N, 1), or one-hot
    rows (N, C), whose class is the arg-max (as in Keras)."""
    if not isinstance(class_weight, dict):
        raise TypeError(
            f"{where}: class_weight must be a dict {{class id: weight}}, got "
            f"{type(class_weight).__name__}"
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        labels = y.argmax(axis=1)
    elif y.ndim in (1, 2) and (y.ndim == 1 or y.shape[1] == 1):
        labels = y.reshape(-1)
        if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
            raise ValueError(
                f"{where}: class_weight needs class labels as y; found non-integer values "
                f"such as {labels[labels != np.round(labels)][:3].tolist()}"
            )
    else:
        raise ValueError(
            f"{where}: class_weight needs one class per sample: y of shape (N,), (N, 1) or "
            f"one-hot (N, C); found {y.shape}. Use sample_weight for other targets"
        )
    labels = labels.astype(np.int64)
    table = {int(k): float(v) for k, v in class_weight.items()}
    missing = sorted(set(np.unique(labels).tolist()) - set(table))
    if missing:
        raise ValueError(
            f"{where}: class_weight has no weight for class(es) {missing[:5]}, which occur in "
            f"y; give every class a weight (1.0 for unchanged)"
        )
    bad = {k: v for k, v in table.items() if not np.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"{where}: class weights must be finite and non-negative, got {bad}")
    return np.array([table[int(c)] for c in labels], dtype=np.float64)


class LimitedSteps:
    """A batch source cut to `steps` batches per epoch (Keras's `steps_per_epoch`). A
    generator goes on where the previous epoch stopped; a source that starts each epoch
    afresh (arrays, a DataLoader, a list) gives its first `steps` batches of that epoch."""

    def __init__(self, source, steps: int):
        self.source, self.steps = source, steps
        self.batch_size = getattr(source, "batch_size", 32)

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int):
        for taken, batch in enumerate(self.source.batches(epoch), start=1):
            yield batch
            if taken == self.steps:
                return
