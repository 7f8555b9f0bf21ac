"""Tests for splitgrad.data: Dataset, DataLoader, splits, Standardizer, one_hot, check_finite."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad.data import (
    DataLoader,
    Dataset,
    DataSplit,
    Standardizer,
    check_finite,
    one_hot,
    train_test_split,
)


def arrays(n, features=3):
    x = np.arange(n * features, dtype=np.float32).reshape(n, features)
    return x, np.arange(n, dtype=np.int64)


def epoch_labels(loader):
    return np.concatenate([yb for _, yb in loader])


def test_dataset_len_getitem_and_length_mismatch():
    x, y = arrays(5)
    ds = Dataset(x, y)
    assert len(ds) == 5
    xi, yi = ds[2]
    np.testing.assert_array_equal(xi, x[2])
    assert yi == 2
    _, yb = ds[np.array([4, 0])]
    np.testing.assert_array_equal(yb, [4, 0])
    with pytest.raises(ValueError, match="x has 5 samples but y has 4"):
        Dataset(x, y[:4])


def test_loader_batches_in_order_without_shuffle():
    x, y = arrays(10)
    loader = DataLoader((x, y), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 == len(batches)
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)
    np.testing.assert_array_equal(epoch_labels(loader), y)  # the next epoch is the same order


def test_drop_last():
    x, y = arrays(10)
    loader = DataLoader(Dataset(x, y), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [len(yb) for _, yb in loader] == [4, 4]


def test_shuffle_is_seeded_and_differs_per_epoch():
    x, y = arrays(50)
    a = DataLoader((x, y), batch_size=7, shuffle=True, seed=3)
    b = DataLoader((x, y), batch_size=7, shuffle=True, seed=3)
    a1, a2 = epoch_labels(a), epoch_labels(a)
    np.testing.assert_array_equal(a1, epoch_labels(b))
    np.testing.assert_array_equal(a2, epoch_labels(b))
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(np.sort(a1), y)
    assert a.epoch == 2
    # x rows travel with their labels
    for xb, yb in DataLoader((x, y), batch_size=7, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb, x[yb])


def test_unseeded_loader_follows_global_seed():
    x, y = arrays(30)
    sg.seed(11)
    first = epoch_labels(DataLoader((x, y), batch_size=8, shuffle=True))
    sg.seed(11)
    second = epoch_labels(DataLoader((x, y), batch_size=8, shuffle=True))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("stop_after", [0, 1, 3, 4])
def test_state_dict_round_trip_resumes_at_same_position(stop_after):
    x, y = arrays(30)
    ref = DataLoader((x, y), batch_size=8, shuffle=True, seed=5)
    expected = [yb for _ in range(3) for _, yb in ref]  # 3 epochs of 4 batches

    loader = DataLoader((x, y), batch_size=8, shuffle=True, seed=5)
    seen = []
    it = iter(loader)
    for _ in range(stop_after):
        seen.append(next(it)[1])
    state = json.loads(json.dumps(loader.state_dict()))  # must survive JSON

    resumed = DataLoader((x, y), batch_size=8, shuffle=True, seed=999)
    resumed.load_state_dict(state)
    while len(seen) < len(expected):
        seen.extend(yb for _, yb in resumed)
    for got, want in zip(seen, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_iteration_continues_after_break_and_state_checks_config():
    x, y = arrays(20)
    loader = DataLoader((x, y), batch_size=5, shuffle=True, seed=0)
    ref = epoch_labels(DataLoader((x, y), batch_size=5, shuffle=True, seed=0))
    got = []
    for _, yb in loader:
        got.append(yb)
        break
    got.extend(yb for _, yb in loader)
    np.testing.assert_array_equal(np.concatenate(got), ref)
    other = DataLoader(arrays(21), batch_size=5, shuffle=True)
    with pytest.raises(ValueError, match="num_samples=20"):
        other.load_state_dict(loader.state_dict())


def test_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(arrays(4), batch_size=0)
    with pytest.raises(TypeError, match="pair"):
        DataLoader(np.zeros((4, 2)))


@given(
    n=st.integers(0, 60),
    batch_size=st.integers(1, 20),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)
def test_loader_covers_every_sample_once(n, batch_size, shuffle, drop_last):
    x, y = arrays(n, features=2)
    loader = DataLoader((x, y), batch_size=batch_size, shuffle=shuffle, seed=0, drop_last=drop_last)
    sizes = [len(yb) for _, yb in loader]
    assert len(sizes) == len(loader)
    assert all(s == batch_size for s in sizes[:-1])
    if drop_last:
        assert sizes == [batch_size] * (n // batch_size)
    else:
        assert sum(sizes) == n
        labels = epoch_labels(loader) if n else np.array([], dtype=np.int64)
        np.testing.assert_array_equal(np.sort(labels), y)


def test_train_test_split_stratified_and_seeded():
    y = np.array([0] * 80 + [1] * 20)
    x = np.arange(100, dtype=np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    assert len(x_te) == 20 and len(x_tr) == 80
    assert (y_te == 1).sum() == 4 and (y_tr == 1).sum() == 16
    np.testing.assert_array_equal(y[x_tr[:, 0].astype(int)], y_tr)
    again = train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    np.testing.assert_array_equal(again[1], x_te)
    with pytest.raises(ValueError, match="x has 100 samples but y has 99"):
        train_test_split(x, y[:99])


def test_standardizer_fit_transform_constant_column_and_config():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(200, 3)).astype(np.float32)
    x[:, 2] = 7.0  # constant: std 0 → 1, so the column becomes 0 rather than NaN
    s = Standardizer().fit(x)
    z = s.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-4)
    np.testing.assert_array_equal(z[:, 2], 0)
    restored = Standardizer.from_config(json.loads(json.dumps(s.get_config())))
    np.testing.assert_allclose(restored.transform(x), z)
    np.testing.assert_allclose(restored.inverse_transform(z), x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
        s.transform(x[:, :2])
    with pytest.raises(RuntimeError, match="fit"):
        Standardizer().transform(x)


def test_one_hot():
    out = one_hot([2, 0, 1], 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(3)[[2, 0, 1]])
    assert one_hot(np.zeros((2, 4), dtype=int), 5).shape == (2, 4, 5)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        one_hot([3], 3)


def test_check_finite():
    x = np.ones((4, 3), dtype=np.float32)
    assert check_finite(x, "x_train") is x
    assert check_finite(np.arange(3), "ids") is not None
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    with pytest.raises(ValueError) as err:
        check_finite(x, "x_train")
    msg = str(err.value)
    assert "x_train" in msg and "2 non-finite" in msg and "1 NaN, 1 inf" in msg
    assert "(1, 2)" in msg and "impute" in msg


def test_datasplit_unpacks():
    split = DataSplit(*arrays(4), *arrays(2), meta={"task": "x"})
    x_tr, y_tr, x_te, y_te, meta = split
    assert (len(x_tr), len(y_tr), len(x_te), len(y_te)) == (4, 4, 2, 2)
    assert meta == {"task": "x"}
