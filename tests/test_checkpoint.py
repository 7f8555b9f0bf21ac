"""Checkpoints: bitwise round trips, exact resume in a new process, clear errors for damaged
or mismatched files, atomic saves, and no pickle anywhere.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import splitgrad as sg
from splitgrad import checkpoint, losses, nn, optim
from splitgrad.checkpoint import CheckpointError, atomic_folder, load_model

REPO = Path(__file__).resolve().parents[1]

# Shared by this process and the resuming subprocess, so both build the same data and model.
SETUP = textwrap.dedent("""
    import numpy as np
    import splitgrad as sg
    from splitgrad import losses, nn, optim

    def batches(n, start=0):
        rng = np.random.default_rng(123)
        x = rng.normal(size=(4 * n, 16, 6)).astype(np.float32)
        y = rng.integers(0, 3, size=(4 * n, 16))
        return [(x[i], y[i]) for i in range(start, start + n)]

    def make(opt_name):
        sg.seed(0)
        model = nn.Sequential([nn.Dense(12, activation="relu"), nn.Dropout(0.3),
                               nn.Dense(3)])
        opt = {"adam": optim.Adam(learning_rate=0.01),
               "sgd": optim.SGD(learning_rate=0.05, momentum=0.9, nesterov=True)}[opt_name]
        model.compile(optimizer=opt,
                      loss=losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model
""")
ns: dict = {}
exec(SETUP, ns)  # noqa: S102 - our own constant source, shared with the subprocess
batches, make = ns["batches"], ns["make"]


def _trained(opt_name="adam", steps=3):
    model = make(opt_name)
    for xb, yb in batches(steps):
        model.train_on_batch(xb, yb)
    return model


def _assert_same_state(a, b):
    assert list(a.named_weights()) == list(b.named_weights())
    for (key, p), q in zip(a.named_weights().items(), b.weights):
        assert p.data.dtype == q.data.dtype and np.array_equal(p.data, q.data), key
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["step"] == sb["step"] and sa["param_steps"] == sb["param_steps"]
    assert sa["config"] == sb["config"]
    assert set(sa["state"]) == set(sb["state"])
    for key in sa["state"]:
        assert np.array_equal(sa["state"][key], sb["state"][key]), key


# ----- round trip and resume ----------------------------------------------------------------
@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_round_trip_is_bitwise(tmp_path, opt_name):
    model = _trained(opt_name)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    _assert_same_state(model, loaded)
    x = batches(4)[3][0]
    assert np.array_equal(model.predict(x), loaded.predict(x))
    assert model.evaluate(x, batches(4)[3][1]) == loaded.evaluate(x, batches(4)[3][1])
    assert type(loaded.loss) is type(model.loss) and loaded.loss.from_logits
    assert [m.name for m in loaded.metrics] == ["accuracy"]


def test_save_weights_and_load_weights(tmp_path):
    model = _trained()
    model.save_weights(tmp_path / "w")
    other = make("adam")
    other.build_from_sample(batches(1)[0][0])
    other.load_weights(tmp_path / "w")
    for a, b in zip(model.get_weights(), other.get_weights()):
        assert np.array_equal(a, b)
    # A flipped bit in the tensor data still parses as safetensors: the checksum catches it.
    target = tmp_path / "w" / "weights.safetensors"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0x10
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        other.load_weights(tmp_path / "w")


RESUME = SETUP + textwrap.dedent("""
    import sys
    from splitgrad.checkpoint import load_model
    path, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = load_model(path)
    for xb, yb in batches(n, start=n):
        model.train_on_batch(xb, yb)
    model.save(out)
""")


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_resume_in_a_new_process_equals_straight_training(tmp_path, opt_name):
    n = 4
    model = make(opt_name)
    for xb, yb in batches(n):
        model.train_on_batch(xb, yb)
    model.save(tmp_path / "half")
    for xb, yb in batches(n, start=n):  # the straight run goes on in this process
        model.train_on_batch(xb, yb)

    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    subprocess.run([sys.executable, str(script), str(tmp_path / "half"), str(tmp_path / "full"),
                    str(n)], check=True, cwd=REPO)
    resumed = load_model(tmp_path / "full")
    assert resumed.optimizer.iterations == 2 * n
    _assert_same_state(model, resumed)


def test_resume_needs_the_rng_restored(tmp_path):
    """Guards the test above: without the saved RNG state, dropout masks differ."""
    model = _trained(steps=2)
    model.save(tmp_path / "m")
    sg.seed(999)
    loaded = load_model(tmp_path / "m", restore_rng=False)
    xb, yb = batches(3)[2]
    model.train_on_batch(xb, yb)
    loaded.train_on_batch(xb, yb)
    assert not np.array_equal(model.get_weights()[0], loaded.get_weights()[0])


def test_fit_resumes_with_initial_epoch(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    straight = make("adam")
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0, seed=3)
    first = make("adam")
    first.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=3)
    first.save(tmp_path / "m")
    second = load_model(tmp_path / "m")
    second.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0, seed=3)
    _assert_same_state(straight, second)


# ----- damaged and mismatched files ----------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m"
    _trained().save(path)
    return path


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [checkpoint.WEIGHTS, checkpoint.OPTIMIZER])
@pytest.mark.parametrize("damage", ["truncate", "flip header", "flip data", "empty"])
def test_corrupt_tensor_file_names_the_file(saved, name, damage):
    target = saved / name
    size = target.stat().st_size
    if damage == "truncate":
        os.truncate(target, size - 10)
    elif damage == "flip header":
        _flip(target, 12)
    elif damage == "flip data":
        _flip(target, size - 3)
    else:
        target.write_bytes(b"")
    with pytest.raises(CheckpointError, match=name):
        load_model(saved)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not an object", "wrong format",
                                    "missing keys"])
def test_corrupt_config_names_the_file(saved, damage):
    config = saved / checkpoint.CONFIG
    text = config.read_text()
    if damage == "truncate":
        config.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        config.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "not an object":
        config.write_text("[1, 2, 3]")
    elif damage == "wrong format":
        config.write_text(json.dumps({**json.loads(text), "format": "keras"}))
    else:
        data = json.loads(text)
        del data["input_shape"]
        config.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(saved)


@pytest.mark.parametrize("name", [checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.OPTIMIZER])
def test_missing_file_names_the_file(saved, name):
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name}.*missing"):
        load_model(saved)


def test_missing_folder_or_a_file_instead_of_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such model folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="got a file"):
        load_model(tmp_path / "file")


def test_shape_mismatch_names_the_layer(saved, tmp_path):
    config = json.loads((saved / checkpoint.CONFIG).read_text())
    config["config"]["layers"][0]["config"]["units"] = 7
    config["config"]["layers"][0]["config"]["name"] = "hidden"
    (saved / checkpoint.CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_model(saved)
    text = str(err.value)
    assert "weights.safetensors" in text and "hidden" in text and "layers.0.kernel" in text
    assert "(6, 12)" in text and "(6, 7)" in text

    other = nn.Sequential([nn.Dense(5, name="wide"), nn.Dropout(0.3), nn.Dense(3)])
    other(np.zeros((1, 6), dtype=np.float32))
    with pytest.raises(CheckpointError, match="wide"):
        other.load_weights(saved)
    fewer = nn.Sequential([nn.Dense(3)])
    fewer(np.zeros((1, 6), dtype=np.float32))
    with pytest.raises(CheckpointError, match="different architecture"):
        fewer.load_weights(saved)


def test_interrupted_save_leaves_the_old_checkpoint_loadable(saved, monkeypatch):
    before = load_model(saved)
    with pytest.raises(RuntimeError, match="power cut"), atomic_folder(saved) as tmp:
        (tmp / checkpoint.WEIGHTS).write_bytes(b"half-written")
        raise RuntimeError("power cut")
    _assert_same_state(before, load_model(saved))

    # A crash inside save_model after the weights are written, before the optimizer file.
    calls = []
    real = checkpoint._write_tensors

    def crash_on_second(path, arrays):
        calls.append(path)
        real(path, arrays)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_tensors", crash_on_second)
    newer = _trained(steps=5)
    with pytest.raises(OSError, match="disk full"):
        newer.save(saved)
    _assert_same_state(before, load_model(saved))
    assert sorted(p.name for p in saved.parent.iterdir()) == ["m"]  # no temp folders left


def test_crash_between_the_renames_loads_the_old_copy(saved):
    before = load_model(saved)
    os.replace(saved, saved.with_name("m.old"))
    _assert_same_state(before, load_model(saved))


def test_loading_never_unpickles(saved, monkeypatch):
    names = sorted(p.name for p in saved.iterdir())
    assert names == [checkpoint.CONFIG, checkpoint.OPTIMIZER, checkpoint.WEIGHTS]
    for p in saved.iterdir():
        assert not p.read_bytes().startswith(b"\x80"), f"{p.name} looks like a pickle"

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    load_model(saved)


def test_save_needs_a_built_model_and_optimizer_free_models_save(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        nn.Sequential([nn.Dense(2)]).save(tmp_path / "x")
    plain = nn.Sequential([nn.Dense(2, activation="tanh")])
    x = np.ones((3, 4), dtype=np.float32)
    plain(x)
    plain.save(tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [checkpoint.CONFIG,
                                                                      checkpoint.WEIGHTS]
    loaded = load_model(tmp_path / "plain")
    assert loaded.optimizer is None and np.array_equal(loaded.predict(x), plain.predict(x))
    # SGD without momentum has no arrays of state: no optimizer file, still loadable.
    sgd = nn.Sequential([nn.Dense(2)])
    sgd.compile(optimizer=optim.SGD(learning_rate=0.1), loss=losses.MeanSquaredError())
    sgd.fit(x, np.zeros((3, 2), dtype=np.float32), verbose=0)
    sgd.save(tmp_path / "sgd")
    assert load_model(tmp_path / "sgd").optimizer.iterations == 1


def test_save_right_after_compile_and_a_plain_call(tmp_path):
    model = nn.Sequential([nn.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model(np.zeros((1, 3), dtype=np.float32))  # built by a call, never trained
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.optimizer.iterations == 0
    x, y = np.ones((4, 3), dtype=np.float32), np.zeros((4, 2), dtype=np.float32)
    model.fit(x, y, verbose=0, seed=0)
    loaded.fit(x, y, verbose=0, seed=0)
    _assert_same_state(model, loaded)


def test_metric_settings_round_trip(tmp_path):
    """A metric object with its own name and settings comes back as it was compiled."""
    from splitgrad import metrics, nn

    model = nn.Sequential([nn.Dense(1)])
    model.compile(optimizer="sgd", loss="mse",
                  metrics=["mae", metrics.BinaryAccuracy(name="strict", threshold=0.7)])
    model.build_from_sample(np.zeros((2, 3), np.float32))
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert [m.name for m in loaded.metrics] == ["mae", "strict"]
    assert isinstance(loaded.metrics[1], metrics.BinaryAccuracy)
    assert loaded.metrics[1].threshold == 0.7
