"""Data plumbing: Dataset, a resumable DataLoader, splits, standardisation and input checks.

    loader = DataLoader((x, y), batch_size=64, shuffle=True, seed=0)
    for xb, yb in loader: ...
    state = loader.state_dict()          # JSON-able; load_state_dict(state) resumes mid-epoch

`batch_order` is the one function that decides which rows make each batch of an epoch: `fit`,
the DataLoader and every way of splitting training use it.

Everything works on NumPy arrays; batches are gathered with one fancy-indexing call per array.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .random import get_rng

__all__ = [
    "ArrayBatches",
    "DataLoader",
    "DataSplit",
    "Dataset",
    "Standardizer",
    "batch_order",
    "check_finite",
    "one_hot",
    "train_test_split",
]


class Dataset:
    """Paired arrays x, y of equal length; `ds[i]` is `(x[i], y[i])` for any NumPy index."""

    def __init__(self, x, y):
        # Contiguous once here, so every batch gather later reads memory in order.
        self.x = np.ascontiguousarray(x)
        self.y = np.ascontiguousarray(y)
        if self.x.ndim == 0 or self.y.ndim == 0:
            raise ValueError(
                f"Dataset: x and y need a leading sample axis; got x.shape={self.x.shape}, "
                f"y.shape={self.y.shape}."
            )
        if len(self.x) != len(self.y):
            raise ValueError(
                f"Dataset: x has {len(self.x)} samples but y has {len(self.y)}; "
                "pass arrays with the same first dimension (one label row per sample)."
            )

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        return f"Dataset(x={self.x.shape} {self.x.dtype}, y={self.y.shape} {self.y.dtype})"


@dataclass
class DataSplit:
    """A fixed train/test split plus a JSON-able `meta` dict; unpacks as a 5-tuple.

    x_train, y_train, x_test, y_test, meta = load_iris()
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.x_train, self.y_train, self.x_test, self.y_test, self.meta))


def _as_dataset(dataset_or_arrays) -> Dataset:
    if isinstance(dataset_or_arrays, Dataset):
        return dataset_or_arrays
    if isinstance(dataset_or_arrays, (tuple, list)) and len(dataset_or_arrays) == 2:
        return Dataset(*dataset_or_arrays)
    raise TypeError(
        "DataLoader: expected a Dataset or a pair (x, y) of arrays, got "
        f"{type(dataset_or_arrays).__name__}; for unlabelled data pass (x, x)."
    )


def batch_order(n: int, batch_size: int, shuffle: bool, seed, epoch: int) -> list:
    """The index arrays of one epoch's batches: THE batch order of splitgrad.

    Shuffled, the order is a permutation drawn from a generator seeded with (seed, epoch), so it
    depends on nothing else: a run resumed at any epoch, or split across places, sees exactly
    the batches an uninterrupted run would. `seed` is an int (or a list of ints).
    """
    if shuffle:
        key = [*seed, epoch] if isinstance(seed, (list, tuple)) else [int(seed), epoch]
        order = np.random.default_rng(key).permutation(n)
    else:
        order = np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class ArrayBatches:
    """A batch source over arrays x, y (what `Model.fit(x, y)` trains on).

    `indices(epoch)` gives the epoch's index arrays (`batch_order`); `batches(epoch)` yields the
    (x_batch, y_batch) pairs. The ways of splitting training read `x`, `y` and `indices`:
    they ship the arrays to their places once and then send only indices.
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool = True, seed: int = 0):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), seed

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)  # batches per epoch

    def indices(self, epoch: int) -> list:
        return batch_order(len(self.x), self.batch_size, self.shuffle, self.seed, epoch)

    def batches(self, epoch: int):
        for idx in self.indices(epoch):
            yield self.x[idx], self.y[idx]


class DataLoader:
    """Yields (x_batch, y_batch) arrays; with shuffle, a fresh permutation each epoch.

    The order is `batch_order(n, batch_size, shuffle, seed, epoch)`. Iteration resumes where the
    previous one stopped; a complete pass ends the epoch. `state_dict()` is the position (epoch,
    next batch, seed), so a restored loader yields the same batches. Without a seed, one is
    drawn from the default generator, so splitgrad.seed(n) still makes the run reproducible.
    """

    def __init__(
        self,
        dataset_or_arrays,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
    ):
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}.")
        self.dataset = _as_dataset(dataset_or_arrays)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed) if seed is not None else int(get_rng().integers(2**63))
        self._epoch = 0
        self._batch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def epoch(self) -> int:
        """Index of the epoch the next batch belongs to (0-based)."""
        return self._epoch

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._batch >= len(self):
            self._epoch, self._batch = self._epoch + 1, 0  # the last pass ended on its last batch
        x, y = self.dataset.x, self.dataset.y
        order = batch_order(
            len(self.dataset), self.batch_size, self.shuffle, self.seed, self._epoch
        )
        while self._batch < len(self):
            idx = order[self._batch]
            # Advance before yielding: a checkpoint taken after this batch resumes at the next.
            self._batch += 1
            if not self.shuffle:
                yield x[idx[0] : idx[-1] + 1], y[idx[0] : idx[-1] + 1]  # slices: no copies
            else:
                yield x[idx], y[idx]
        self._epoch, self._batch = self._epoch + 1, 0

    def state_dict(self) -> dict:
        """JSON-able position: the epoch, the next batch index and the seed of the order."""
        epoch, batch = self._epoch, self._batch
        if batch >= len(self):
            epoch, batch = epoch + 1, 0
        return {
            "epoch": epoch,
            "batch": batch,
            "seed": self.seed,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state`'s position; the dataset size and batching must be the same."""
        for key, mine in (
            ("num_samples", len(self.dataset)),
            ("batch_size", self.batch_size),
            ("shuffle", self.shuffle),
            ("drop_last", self.drop_last),
        ):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"DataLoader.load_state_dict: the state was saved with {key}={state[key]!r} "
                    f"but this loader has {key}={mine!r}; build the loader with the same data "
                    "and batching as the saved run."
                )
        self.seed = int(state["seed"])
        self._epoch = int(state["epoch"])
        self._batch = int(state["batch"])

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, batches={len(self)})"
        )


def train_test_split(x, y, test_size: float = 0.2, seed: int = 0, stratify: bool = False):
    """Seeded split → `(x_train, x_test, y_train, y_test)` (scikit-learn's order).

    With `stratify=True` each class keeps its share in both parts.
    """
    from sklearn.model_selection import train_test_split as sk_split

    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            f"train_test_split: x has {len(x)} samples but y has {len(y)}; they must match."
        )
    return sk_split(x, y, test_size=test_size, random_state=seed, stratify=y if stratify else None)


class Standardizer:
    """Per-feature z-score fitted on training data: (x − mean) / std, with std 0 replaced by 1.

    Statistics are taken over axis 0; `get_config()` is JSON-able for saving beside a model.
    """

    def __init__(self):
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, x) -> Standardizer:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"Standardizer.fit: need at least one sample, got shape {x.shape}.")
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        # A constant column can come out with a rounding-sized std rather than exactly 0;
        # dividing by it would blow the column up, so treat it as constant too.
        constant = std <= 1e-12 * np.maximum(1.0, np.abs(self.mean))
        self.std = np.where(constant, 1.0, std)
        return self

    def _check(self, x: np.ndarray, what: str) -> None:
        if self.mean is None:
            raise RuntimeError(f"Standardizer.{what}: call fit(x_train) first.")
        if x.shape[1:] != self.mean.shape:
            raise ValueError(
                f"Standardizer.{what}: fitted on samples of shape {self.mean.shape} but got "
                f"samples of shape {x.shape[1:]}; transform data with the same features."
            )

    @staticmethod
    def _out_dtype(x: np.ndarray):
        return x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32

    def transform(self, x) -> np.ndarray:
        x = np.asarray(x)
        self._check(x, "transform")
        dtype = self._out_dtype(x)
        return ((x - self.mean) / self.std).astype(dtype, copy=False)

    def fit_transform(self, x) -> np.ndarray:
        return self.fit(x).transform(x)

    def inverse_transform(self, z) -> np.ndarray:
        z = np.asarray(z)
        self._check(z, "inverse_transform")
        return (z * self.std + self.mean).astype(self._out_dtype(z), copy=False)

    def get_config(self) -> dict:
        if self.mean is None:
            raise RuntimeError("Standardizer.get_config: call fit(x_train) first.")
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_config(cls, config: dict) -> Standardizer:
        s = cls()
        s.mean = np.asarray(config["mean"], dtype=np.float64)
        s.std = np.asarray(config["std"], dtype=np.float64)
        return s


def one_hot(labels, num_classes: int) -> np.ndarray:
    """float32 array of shape labels.shape + (num_classes,) with a 1 at each label."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(
                f"one_hot: labels must be integer class ids, got dtype {labels.dtype}."
            )
        labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"one_hot: labels must lie in [0, {num_classes - 1}] but range from {labels.min()} "
            f"to {labels.max()}; pass num_classes large enough or remap the labels."
        )
    return np.eye(num_classes, dtype=np.float32)[labels]


def check_finite(x, name: str = "x") -> np.ndarray:
    """Return x unchanged, or raise ValueError saying how many NaN/inf values it holds and where."""
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating)):
        return x
    bad = ~np.isfinite(arr)
    count = int(bad.sum())
    if count == 0:
        return x
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    first_str = str(first[0]) if len(first) == 1 else str(first)
    n_nan = int(np.isnan(arr).sum())
    raise ValueError(
        f"{name} has {count} non-finite value(s) ({n_nan} NaN, {count - n_nan} inf) out of "
        f"{arr.size}; the first is at index {first_str}. Drop or impute those samples "
        f"(e.g. keep rows where np.isfinite({name}).all(axis=1), or use np.nan_to_num) "
        "before training."
    )
