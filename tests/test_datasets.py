"""Tests for splitgrad.datasets: tabular loaders, the IDX reader, Fashion-MNIST and text data."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from splitgrad import datasets
from splitgrad.datasets import (
    CharVocab,
    IDXError,
    WordVocab,
    read_idx,
    write_idx,
)

# --- tabular -----------------------------------------------------------------------------------

TABULAR = [
    # loader, kwargs, n_total, x sample shape, task, classes
    (datasets.load_breast_cancer, {}, 569, (30,), "binary", 2),
    (datasets.load_diabetes, {}, 442, (10,), "regression", None),
    (datasets.load_digits, {}, 1797, (64,), "multiclass", 10),
    (datasets.load_digits, {"images": True}, 1797, (8, 8, 1), "multiclass", 10),
    (datasets.load_iris, {}, 150, (4,), "multiclass", 3),
]


@pytest.mark.parametrize("loader, kwargs, n, shape, task, classes", TABULAR)
def test_tabular_loader_shapes_dtypes_meta(loader, kwargs, n, shape, task, classes):
    x_tr, y_tr, x_te, y_te, meta = loader(**kwargs)
    assert len(x_tr) + len(x_te) == n and len(x_te) == pytest.approx(0.2 * n, abs=1)
    assert x_tr.shape[1:] == shape and x_te.shape[1:] == shape
    assert x_tr.dtype == x_te.dtype == np.float32
    assert y_tr.shape == (len(x_tr),) and y_te.shape == (len(x_te),)
    assert meta["task"] == task
    json.dumps(meta)  # meta must be saveable beside a model
    if classes is None:
        assert y_tr.dtype == np.float32 and meta["class_names"] is None
    else:
        assert y_tr.dtype == y_te.dtype == np.int64
        assert len(meta["class_names"]) == classes
        assert set(np.unique(y_tr)) == set(range(classes))
        # stratified: each class's share in the test part matches the train part
        np.testing.assert_allclose(
            np.bincount(y_te, minlength=classes) / len(y_te),
            np.bincount(y_tr, minlength=classes) / len(y_tr),
            atol=0.05,
        )
    if meta["standardized"]:
        np.testing.assert_allclose(x_tr.mean(0), 0, atol=1e-5)
    assert len(meta["feature_names"]) == int(np.prod(shape))


def test_tabular_split_is_fixed_and_standardisation_optional():
    a, b = datasets.load_iris(), datasets.load_iris()
    np.testing.assert_array_equal(a.x_test, b.x_test)
    raw = datasets.load_iris(standardize=False)
    assert raw.meta["standardizer"] is None and raw.x_train.min() > 0
    scaler = datasets.load_iris().meta["standardizer"]
    mean, std = np.array(scaler["mean"]), np.array(scaler["std"])
    np.testing.assert_allclose((raw.x_test - mean) / std, a.x_test, rtol=1e-5, atol=1e-5)
    imgs = datasets.load_digits(images=True).x_train
    assert imgs.min() == 0.0 and imgs.max() == 1.0


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 4) - (0 if dtype == np.uint8 else 7)).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    assert path.read_bytes().startswith(b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(path)
    assert out.dtype == dtype and out.shape == (2, 3, 4) and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_idx_gzip_detected_from_content_not_name(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    path = write_idx(tmp_path / "labels-idx1-ubyte", arr, compress=True)
    np.testing.assert_array_equal(read_idx(path), arr)


def _header(code, dims):
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, ">u4").tobytes()


@pytest.mark.parametrize(
    "content, match",
    [
        (_header(0x08, [2, 3]) + bytes(5), "truncated: shape"),
        (_header(0x08, [2, 3]) + bytes(7), "trailing bytes"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
        (b"\x00\x00", "only 2 bytes"),
        (b"PK\x03\x04" + bytes(20), "bad magic number"),
        (_header(0x0A, [2]) + bytes(2), "unknown IDX type code 0x0A"),
        (bytes([0, 0, 8, 0]), "0 dimensions"),
    ],
)
def test_idx_corrupt_files_name_file_and_problem(tmp_path, content, match):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=match) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_idx_truncated_gzip(tmp_path):
    good = gzip.compress(_header(0x08, [1000]) + bytes(range(256)) * 4)
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IDXError, match="gzip data is truncated or corrupt") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_load_mnist_format_from_written_folder(tmp_path):
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("t10k", 4)):
        write_idx(
            tmp_path / f"{part}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 5, 5), dtype=np.uint8),
        )
        write_idx(tmp_path / f"{part}-labels.idx1-ubyte", np.arange(n, dtype=np.uint8) % 3)
    split = datasets.load_mnist_format(tmp_path)
    assert split.x_train.shape == (6, 5, 5, 1) and split.x_test.shape == (4, 5, 5, 1)
    assert (
        split.x_train.dtype == np.float32 and 0 <= split.x_train.min() <= split.x_train.max() <= 1
    )
    assert split.y_train.dtype == np.int64 and split.meta["class_names"] == ["0", "1", "2"]
    raw = datasets.load_mnist_format(tmp_path, normalize=False)
    assert raw.x_train.dtype == np.uint8
    np.testing.assert_allclose(raw.x_train / 255.0, split.x_train, rtol=1e-6)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(tmp_path / "nope")


@pytest.mark.skipif(
    not datasets.idx.FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist"
)
def test_real_fashion_mnist():
    x_tr, y_tr, x_te, y_te, meta = datasets.load_fashion_mnist()
    assert x_tr.shape == (60000, 28, 28, 1) and x_te.shape == (10000, 28, 28, 1)
    assert x_tr.dtype == np.float32 and x_tr.min() == 0.0 and x_tr.max() == 1.0
    assert y_tr.dtype == np.int64 and y_tr.min() == 0 and y_tr.max() == 9
    np.testing.assert_array_equal(np.bincount(y_tr), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_te), [1000] * 10)
    assert meta["class_names"][0] == "T-shirt/top" and len(meta["class_names"]) == 10


# --- text --------------------------------------------------------------------------------------


def test_irish_songs_match_mit_lab():
    songs = datasets.load_irish_songs()
    text = datasets.irish_text()
    assert len(songs) == 817
    assert len(text) == 200_679
    assert len(set(text)) == 83
    assert songs[0].startswith("X:1\nT:Alexander's")


def test_char_vocab_round_trip_and_unknown():
    text = datasets.irish_text()
    vocab = CharVocab(text)
    assert len(vocab) == 83 and vocab.chars == sorted(vocab.chars)
    ids = vocab.encode(text)
    assert ids.dtype == np.int64 and ids.max() == 82
    assert vocab.decode(ids) == text
    assert vocab.decode(vocab.encode("X")) == "X"
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the vocabulary: '@', 'é'"):
        vocab.encode("X@é@")
    restored = CharVocab.from_json(vocab.to_json())
    assert restored.chars == vocab.chars
    with pytest.raises(ValueError, match=r"\[0, 82\]"):
        vocab.decode([83])


def test_tokenize():
    assert datasets.tokenize("Don't PANIC, it's 42!") == ["don't", "panic", ",", "it's", "42", "!"]


def test_word_vocab_unknown_min_count_max_size_json():
    corpus = ["the cat sat", "the cat ran", "the dog"]
    vocab = WordVocab.from_corpus(corpus, min_count=2)
    assert vocab.tokens == ["<unk>", "the", "cat"]
    np.testing.assert_array_equal(vocab.encode("The cat flew"), [1, 2, 0])
    assert vocab.decode([1, 0]) == ["the", "<unk>"]
    small = WordVocab.from_corpus(corpus, max_size=2)
    assert small.tokens == ["<unk>", "the"]
    everything = WordVocab.from_corpus(corpus)
    assert len(everything) == 6 and "dog" in everything
    restored = WordVocab.from_json(vocab.to_json())
    assert restored.tokens == vocab.tokens


def test_fortunes_corpus(tmp_path):
    if datasets.text.FORTUNES_DIR.is_dir():
        docs = datasets.load_text_corpus()
        assert len(docs) > 1000 and all(d and "\n%\n" not in d for d in docs)
        vocab = WordVocab.from_corpus(docs, min_count=2, max_size=5000)
        assert len(vocab) == 5000 and vocab.encode("the")[0] != vocab.unk_id
    f = tmp_path / "mine.txt"
    f.write_text("first\nthing\n%\nsecond\n%\n", encoding="utf-8")
    assert datasets.load_text_corpus(f) == ["first\nthing", "second"]
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        datasets.load_text_corpus(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        datasets.load_text_corpus(bad)


def test_random_sequence_batches():
    ids = np.arange(50)
    x, y = datasets.random_sequence_batches(
        ids, seq_len=10, batch_size=2000, rng=np.random.default_rng(0)
    )
    assert x.shape == y.shape == (2000, 10) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)  # y is x shifted by one position
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)
    assert x[:, 0].min() >= 0 and y[:, -1].max() <= 49
    assert set(x[:, 0]) == set(range(40))  # every valid start is reachable
    again = datasets.random_sequence_batches(ids, 10, 2000, np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], x)
    with pytest.raises(ValueError, match="too short"):
        datasets.random_sequence_batches(ids[:10], seq_len=10, batch_size=1)
