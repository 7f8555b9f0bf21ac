"""Small tabular and image datasets from scikit-learn's bundled files (no network needed).

Each loader returns a `DataSplit` (x_train, y_train, x_test, y_test, meta) with a fixed seeded
split: 20 % test, stratified for classification. Features are float32, class labels int64,
regression targets float32 of shape (N,). When standardised, the statistics come from the training
part only and are kept in `meta["standardizer"]` (a `Standardizer` config) for use at inference.
"""

from __future__ import annotations

import numpy as np

from ..data import DataSplit, Standardizer, train_test_split

__all__ = ["load_breast_cancer", "load_diabetes", "load_digits", "load_iris"]

SPLIT_SEED = 42
TEST_SIZE = 0.2


def _split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    feature_names,
    class_names,
    standardize: bool,
) -> DataSplit:
    classification = task != "regression"
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, seed=SPLIT_SEED, stratify=classification
    )
    meta = {
        "name": name,
        "task": task,
        "feature_names": [str(f) for f in feature_names],
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "num_classes": None if class_names is None else len(class_names),
        "split_seed": SPLIT_SEED,
        "test_size": TEST_SIZE,
        "standardized": bool(standardize),
        "standardizer": None,
    }
    if standardize:
        scaler = Standardizer().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
        meta["standardizer"] = scaler.get_config()
    label_dtype = np.float32 if not classification else np.int64
    return DataSplit(
        np.ascontiguousarray(x_train, dtype=np.float32),
        np.ascontiguousarray(y_train, dtype=label_dtype),
        np.ascontiguousarray(x_test, dtype=np.float32),
        np.ascontiguousarray(y_test, dtype=label_dtype),
        meta,
    )


def load_breast_cancer(standardize: bool = True) -> DataSplit:
    """Wisconsin breast cancer: 569 × 30 features, binary (0 = malignant, 1 = benign)."""
    from sklearn import datasets

    b = datasets.load_breast_cancer()
    return _split(
        "breast_cancer",
        b.data,
        b.target,
        task="binary",
        feature_names=b.feature_names,
        class_names=b.target_names,
        standardize=standardize,
    )


def load_diabetes(standardize: bool = True) -> DataSplit:
    """Diabetes progression: 442 × 10 raw features, regression target (disease score 25–346)."""
    from sklearn import datasets

    # scaled=False: scikit-learn's default pre-scaling uses all rows, test rows included.
    b = datasets.load_diabetes(scaled=False)
    return _split(
        "diabetes",
        b.data,
        b.target,
        task="regression",
        feature_names=b.feature_names,
        class_names=None,
        standardize=standardize,
    )


def load_iris(standardize: bool = True) -> DataSplit:
    """Fisher's iris: 150 × 4 features, 3 classes."""
    from sklearn import datasets

    b = datasets.load_iris()
    return _split(
        "iris",
        b.data,
        b.target,
        task="multiclass",
        feature_names=b.feature_names,
        class_names=b.target_names,
        standardize=standardize,
    )


def load_digits(images: bool = False, standardize: bool = False) -> DataSplit:
    """8×8 handwritten digits: 1797 samples, 10 classes, pixels scaled from 0–16 to [0, 1].

    images=False gives (N, 64) features; images=True gives (N, 8, 8, 1) NHWC images.
    """
    from sklearn import datasets

    b = datasets.load_digits()
    x = b.data / 16.0
    if images:
        x = x.reshape(-1, 8, 8, 1)
    return _split(
        "digits",
        x,
        b.target,
        task="multiclass",
        feature_names=b.feature_names,
        class_names=b.target_names,
        standardize=standardize,
    )
