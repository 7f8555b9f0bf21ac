"""Checkpoints: bitwise round trips, exact resume in a new process, one manifest vouching for
every file, refusal to clobber, crash-safe replacement and recovery, clear errors (only
CheckpointError) for damaged, crafted or mismatched files, and no pickle anywhere.
(Random damage at scale: test_checkpoint_fuzz.py; real SIGKILLs: test_checkpoint_kill.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import splitgrad as sg
from splitgrad import checkpoint, losses, nn, optim
from splitgrad.checkpoint import (
    CheckpointError,
    _folder,
    _manifest,
    check_target,
    load_model,
    restore,
)

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

    def make(opt_name, seed=None):
        sg.seed(0)
        model = nn.Sequential([nn.Dense(12, activation="relu"), nn.Dropout(0.3, seed=seed),
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


def _trained(opt_name="adam", steps=3, seed=None):
    model = make(opt_name, seed)
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


def resign(folder):
    """Recompute the manifest's sizes and hashes and its own checksum after an edit, as an
    attacker could: the crafted content then reaches the deep checks."""
    folder = Path(folder)
    doc = json.loads((folder / checkpoint.MANIFEST).read_text())
    for name in doc["files"]:
        data = (folder / name).read_bytes()
        doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (folder / checkpoint.MANIFEST).write_bytes(_manifest.seal(doc))


def edit_config(folder, change):
    config = json.loads((folder / checkpoint.CONFIG).read_text())
    change(config)
    (folder / checkpoint.CONFIG).write_text(json.dumps(config))
    resign(folder)


def to_legacy(folder):
    """Turn a checkpoint into the format of splitgrad before manifests (checksums of the
    tensor files in config.json, version 1, no layer generators)."""
    config = json.loads((folder / checkpoint.CONFIG).read_text())
    config["version"] = 1
    config.pop("layer_rng_states")
    config["sha256"] = {
        n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
        for n in (checkpoint.WEIGHTS, checkpoint.OPTIMIZER)
        if (folder / n).exists()
    }
    (folder / checkpoint.CONFIG).write_text(json.dumps(config))
    (folder / checkpoint.MANIFEST).unlink()


def _no_hang(seconds=10):
    """Raise TimeoutError in this process after `seconds` (a guard against hangs only)."""

    def alarm(signum, frame):
        raise TimeoutError("a checkpoint load hung")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)


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
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        checkpoint.MANIFEST,
        checkpoint.WEIGHTS,
    ]
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
    with pytest.raises(CheckpointError, match="only weights"):
        load_model(tmp_path / "w")


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
    model = make(opt_name, seed=7)  # a seeded Dropout: its own generator travels too
    for xb, yb in batches(n):
        model.train_on_batch(xb, yb)
    model.save(tmp_path / "half")
    for xb, yb in batches(n, start=n):  # the straight run goes on in this process
        model.train_on_batch(xb, yb)

    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "half"), str(tmp_path / "full"), str(n)],
        check=True,
        cwd=tmp_path,
    )
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


def test_loading_does_not_move_the_default_generator(tmp_path):
    _trained(steps=1).save(tmp_path / "m")
    sg.seed(5)
    before = sg.random.get_state()
    load_model(tmp_path / "m", restore_rng=False)  # building draws initial weights
    assert sg.random.get_state() == before


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


def test_restore_into_a_built_model(tmp_path):
    model = _trained(steps=3, seed=11)
    checkpoint.save_model(model, tmp_path / "m", extra={"epoch": 3})
    twin = make("adam", seed=11)
    twin.build_from_sample(batches(1)[0][0])
    assert restore(twin, tmp_path / "m") == {"epoch": 3}
    _assert_same_state(model, twin)
    for xb, yb in batches(6, start=3):  # both continue identically: generators came back too
        model.train_on_batch(xb, yb)
        twin.train_on_batch(xb, yb)
    _assert_same_state(model, twin)


def test_restore_refuses_another_architecture_and_changes_nothing(tmp_path):
    _trained().save(tmp_path / "m")
    sg.seed(1)
    wide = nn.Sequential([nn.Dense(13), nn.Dropout(0.3), nn.Dense(3)])
    wide.compile(optimizer="adam", loss="mse")
    wide.build_from_sample(np.zeros((1, 6), np.float32))
    before = wide.get_weights()
    with pytest.raises(CheckpointError, match="shape"):
        restore(wide, tmp_path / "m")
    assert all(np.array_equal(a, b) for a, b in zip(before, wide.get_weights()))
    other_opt = make("sgd")
    other_opt.build_from_sample(np.zeros((1, 6), np.float32))
    before = other_opt.get_weights()
    with pytest.raises(CheckpointError, match="saved by Adam.*uses SGD"):
        restore(other_opt, tmp_path / "m")
    assert all(np.array_equal(a, b) for a, b in zip(before, other_opt.get_weights()))


def test_seeded_layer_generators_round_trip(tmp_path):
    model = _trained(seed=3)
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / checkpoint.CONFIG).read_text())
    assert list(config["layer_rng_states"]) == ["layers.1."]
    loaded = load_model(tmp_path / "m")
    assert loaded.layers[1].rng.bit_generator.state == model.layers[1].rng.bit_generator.state


# ----- the manifest ---------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m"
    _trained().save(path)
    return path


def test_manifest_vouches_for_every_file_and_itself(saved):
    doc = json.loads((saved / checkpoint.MANIFEST).read_text())
    names = sorted(p.name for p in saved.iterdir() if p.name != checkpoint.MANIFEST)
    assert (
        sorted(doc["files"])
        == names
        == [checkpoint.CONFIG, checkpoint.OPTIMIZER, checkpoint.WEIGHTS]
    )
    for name, info in doc["files"].items():
        data = (saved / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    # The documented self-checksum: SHA-256 of the canonical JSON of the other entries.
    body = {k: v for k, v in doc.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert doc["manifest_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    env = doc["environment"]
    assert env["numpy"] == np.__version__ and env["splitgrad"] == sg.__version__
    assert {"library", "architecture", "threads"} <= set(env["blas"][0])


def test_each_save_takes_the_next_generation(saved):
    gens = []
    for _ in range(3):
        gens.append(json.loads((saved / checkpoint.MANIFEST).read_text())["generation"])
        _trained(steps=1).save(saved)
    assert gens == [1, 2, 3]


@pytest.mark.parametrize("offset", [5, 60, -20])
def test_a_flipped_bit_in_the_manifest_is_detected(saved, offset):
    target = saved / checkpoint.MANIFEST
    data = bytearray(target.read_bytes())
    data[offset] ^= 0x04
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="manifest.json"):
        load_model(saved)


def test_legacy_checkpoint_loads_only_with_verify_false(saved):
    original = load_model(saved)
    to_legacy(saved)
    with pytest.raises(CheckpointError, match="verify=False"):
        load_model(saved)
    _assert_same_state(original, load_model(saved, verify=False))
    # Structural checks still run without verification.
    (saved / checkpoint.WEIGHTS).write_bytes(b"\x08" + bytes(7) + b"{}")
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        load_model(saved, verify=False)


def test_legacy_weights_folder(tmp_path):
    model = _trained()
    model.save_weights(tmp_path / "w")
    (tmp_path / "w" / checkpoint.MANIFEST).unlink()
    data = (tmp_path / "w" / checkpoint.WEIGHTS).read_bytes()
    (tmp_path / "w" / "sha256.json").write_text(
        json.dumps({checkpoint.WEIGHTS: hashlib.sha256(data).hexdigest()})
    )
    other = make("adam")
    other.build_from_sample(batches(1)[0][0])
    with pytest.raises(CheckpointError, match="verify=False"):
        other.load_weights(tmp_path / "w")
    checkpoint.load_weights(other, tmp_path / "w", verify=False)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
    model.save_weights(tmp_path / "w")  # a legacy folder is a checkpoint: no overwrite needed
    assert (tmp_path / "w" / checkpoint.MANIFEST).exists()


def test_environment_change_warns(saved):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same environment: no warning
        load_model(saved)
    doc = json.loads((saved / checkpoint.MANIFEST).read_text())
    # A kernel no machine runs, so the test holds under any OPENBLAS_CORETYPE.
    doc["environment"]["blas"][0]["architecture"] = "OtherKernel"
    doc["environment"]["blas"][0]["threads"] = 64
    (saved / checkpoint.MANIFEST).write_bytes(_manifest.seal(doc))
    with pytest.warns(RuntimeWarning, match="architecture.*OtherKernel.*bitwise identical"):
        loaded = load_model(saved)
    assert loaded.optimizer.iterations == 3
    doc["environment"]["numpy"] = "1.0.0"
    (saved / checkpoint.MANIFEST).write_bytes(_manifest.seal(doc))
    with pytest.warns(RuntimeWarning, match="numpy 1.0.0"):
        restore(loaded, saved)


# ----- damaged, crafted and mismatched files ---------------------------------------------
def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [checkpoint.WEIGHTS, checkpoint.OPTIMIZER])
@pytest.mark.parametrize(
    "damage, signed",
    [
        ("truncate", False),
        ("flip header", False),
        ("flip data", False),
        ("empty", False),
        # Re-signed, the damage reaches the safetensors parser (a re-signed flip in the data is
        # a valid file of other numbers, so it is not here).
        ("truncate", True),
        ("flip header", True),
        ("empty", True),
    ],
)
def test_corrupt_tensor_file_names_the_file(saved, name, damage, signed):
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
    if signed:
        resign(saved)
    with pytest.raises(CheckpointError, match=name):
        load_model(saved)


@pytest.mark.parametrize(
    "damage",
    [
        "truncate",
        "garbage",
        "not an object",
        "wrong format",
        "missing keys",
        "deep",
        "version text",
        "newer",
    ],
)
@pytest.mark.parametrize("signed", [False, True])
def test_corrupt_config_names_the_file(saved, damage, signed):
    config = saved / checkpoint.CONFIG
    text = config.read_text()
    data = json.loads(text)
    if damage == "truncate":
        config.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        config.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "not an object":
        config.write_text("[1, 2, 3]")
    elif damage == "wrong format":
        config.write_text(json.dumps({**data, "format": "keras"}))
    elif damage == "missing keys":
        del data["input_shape"]
        config.write_text(json.dumps(data))
    elif damage == "deep":
        config.write_text(
            json.dumps({**data, "extra": {"x": "["}}).replace('"["', "[" * 1000 + "]" * 1000)
        )
    elif damage == "version text":
        config.write_text(json.dumps({**data, "version": "1"}))
    else:
        config.write_text(json.dumps({**data, "version": 99}))
    if signed:
        resign(saved)
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(saved)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c["config"]["layers"][0]["config"].update(units=10**9), "values"),
        (lambda c: c["config"]["layers"][0]["config"].update(units=-4), "negative|must"),
        (lambda c: c.update(input_shape=[1, 10**6, 10**6]), "per sample"),
        (lambda c: c.update(input_shape=[1, -6]), "input_shape"),
        (lambda c: c.update({"class": "os.system"}), "unknown layer class"),
        (lambda c: c["config"]["layers"][0].update({"class": "__import__"}), "unknown layer"),
        (lambda c: c["config"].update(dtype="int8"), "dtype"),
        (lambda c: c["config"].update(dtype="U100000"), "dtype"),
        (lambda c: c["compile"]["optimizer"].update({"class": "os.system"}), "unknown optimizer"),
        (lambda c: c["optimizer_state"]["config"].update(learning_rate=-1.0), "learning_rate"),
        (lambda c: c["optimizer_state"]["config"].update(beta_1=5), "beta_1"),
        (
            lambda c: c["optimizer_state"]["config"].update(learning_rate=float("inf")),
            "learning_rate",
        ),
        (lambda c: c["optimizer_state"].update(step=-3), "step"),
        (lambda c: c["rng_state"].update(state={"state": "x"}), "rng_state"),
        (lambda c: c.update(rng_state=[1, 2]), "rng_state"),
        (lambda c: c["rng_state"]["state"].update(state=10**60), "rng_state"),
        (lambda c: c.update(layer_rng_states={"../../x": {}}), "generators"),
        (lambda c: c["compile"].update(metrics="zz"), "metric"),
    ],
)
def test_crafted_config_raises_checkpoint_error(saved, change, match):
    """Malicious content that passes the checksums (re-signed) still only raises
    CheckpointError, naming config.json, and allocates nothing big first."""
    edit_config(saved, change)
    with pytest.raises(CheckpointError, match="config.json") as err:
        load_model(saved)
    assert err.type is CheckpointError
    assert re.search(match, str(err.value)), str(err.value)


def test_an_oversized_config_is_refused_at_saving_and_loading(saved):
    big = {"blob": "x" * (17 << 20)}
    with pytest.raises(ValueError, match="attachment"):
        checkpoint.save_model(_trained(), saved, extra=big)
    edit_config(saved, lambda c: c.update(extra=big))  # parsed JSON would take far more
    with pytest.raises(CheckpointError, match="config.json.*more than"):
        load_model(saved)


def test_bad_optimizer_settings_are_refused_even_when_the_state_is_not_checked_first(saved):
    edit_config(saved, lambda c: c["compile"]["optimizer"].update(learning_rate=-1.0))
    with pytest.raises(CheckpointError, match="learning_rate must be ≥ 0"):
        load_model(saved)


def _rewrite_tensors(folder, name, change):
    from safetensors.numpy import load, save

    arrays = load((folder / name).read_bytes())
    change(arrays)
    (folder / name).write_bytes(save(arrays))
    resign(folder)


@pytest.mark.parametrize("dtype", [np.int8, np.bool_, np.float16, np.float64])
def test_weight_dtype_mismatch_is_refused(saved, dtype):
    def retype(arrays):
        arrays["layers.0.kernel"] = arrays["layers.0.kernel"].astype(dtype)

    _rewrite_tensors(saved, checkpoint.WEIGHTS, retype)
    with pytest.raises(CheckpointError, match=f"layers.0.kernel.*{np.dtype(dtype)}.*float32"):
        load_model(saved)


def test_optimizer_state_dtype_mismatch_is_refused(saved):
    def retype(arrays):
        key = min(arrays)
        arrays[key] = arrays[key].astype(np.float64)

    _rewrite_tensors(saved, checkpoint.OPTIMIZER, retype)
    with pytest.raises(CheckpointError, match="optimizer.safetensors.*float64"):
        load_model(saved)


def test_nan_weights_are_refused_unless_verify_false(saved):
    def poison(arrays):
        arrays["layers.2.bias"][1] = np.nan

    _rewrite_tensors(saved, checkpoint.WEIGHTS, poison)
    with pytest.raises(CheckpointError, match="NaN.*diverged.*verify=False"):
        load_model(saved)
    assert np.isnan(load_model(saved, verify=False).layers[2].bias.data[1])


def test_crafted_safetensors_headers(saved):
    target = saved / checkpoint.WEIGHTS
    good = target.read_bytes()
    n = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + n])

    def write_header(h):
        text = json.dumps(h).encode()
        target.write_bytes(len(text).to_bytes(8, "little") + text + good[8 + n :])
        resign(saved)

    crafted = [
        lambda h: h["layers.0.kernel"].update(shape=[10**12, 10**12]),
        lambda h: h["layers.0.kernel"].update(shape=[-6, 12]),
        lambda h: h["layers.0.kernel"].update(dtype="F64"),
        lambda h: h["layers.0.kernel"].update(dtype="os.system"),
        lambda h: h["layers.0.kernel"].update(data_offsets=[0, 10**15]),
        lambda h: h.update({"../../etc/passwd": h.pop("layers.0.kernel")}),
    ]
    for change in crafted:
        h = json.loads(json.dumps(header))
        change(h)
        write_header(h)
        with pytest.raises(CheckpointError, match="weights.safetensors"):
            load_model(saved)
    target.write_bytes((2**62).to_bytes(8, "little") + good[8:])
    resign(saved)
    with pytest.raises(CheckpointError, match="header claims"):
        load_model(saved)


@pytest.mark.parametrize(
    "name", [checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.OPTIMIZER, checkpoint.MANIFEST]
)
def test_missing_file_names_the_file(saved, name):
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name}.*missing"):
        load_model(saved)


@pytest.mark.parametrize("name", [checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.MANIFEST])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "outside"])
def test_special_files_are_refused_without_hanging(saved, tmp_path, name, kind):
    target = saved / name
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)  # opening it for reading would block forever
    elif kind == "dev-zero":
        target.symlink_to("/dev/zero")  # reading it would fill memory
    elif kind == "folder":
        target.mkdir()
    else:
        (tmp_path / "elsewhere").write_text("{}")
        target.symlink_to(tmp_path / "elsewhere")
    _no_hang()
    try:
        with pytest.raises(CheckpointError, match=name):
            load_model(saved)
    finally:
        signal.alarm(0)


def test_missing_folder_or_a_file_instead_of_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such model folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="got a file"):
        load_model(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="manifest.json.*missing"):
        load_model(tmp_path / "empty")


def test_shape_mismatch_names_the_layer(saved):
    def narrower(config):
        config["config"]["layers"][0]["config"]["units"] = 7
        config["config"]["layers"][0]["config"]["name"] = "hidden"

    edit_config(saved, narrower)
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


# ----- refusing to clobber ---------------------------------------------------------------
def test_a_folder_holding_other_files_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    model = _trained()
    with pytest.raises(CheckpointError, match=r"notes\.txt.*data/|data/.*notes\.txt") as err:
        model.save(out)
    assert "overwrite=True" in str(err.value)
    assert (out / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written
    with pytest.raises(CheckpointError, match="notes.txt"):
        check_target(out)
    checkpoint.save_model(model, out, overwrite=True)
    assert not (out / "notes.txt").exists()
    _assert_same_state(model, load_model(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # A checkpoint with a stray file in it is not a checkpoint any more.
    (out / "notes.txt").write_text("again")
    with pytest.raises(CheckpointError, match="notes.txt"):
        model.save(out)


def test_empty_folders_and_own_checkpoints_need_no_overwrite(tmp_path):
    (tmp_path / "empty").mkdir()
    model = _trained()
    model.save(tmp_path / "empty")
    model.save(tmp_path / "empty")  # its own checkpoint
    model.save(tmp_path / "a" / "b" / "new")  # parents are made
    check_target(tmp_path / "empty")
    legacy = tmp_path / "legacy"
    model.save(legacy)
    to_legacy(legacy)
    check_target(legacy)
    model.save(legacy)
    _assert_same_state(model, load_model(legacy))


def test_a_damaged_checkpoint_can_be_saved_over_but_not_a_stray_file(saved):
    _flip(saved / checkpoint.MANIFEST, 40)
    model = _trained(steps=1)
    model.save(saved)  # the manifest is unreadable, but every name is the checkpoint's own
    _assert_same_state(model, load_model(saved))
    _flip(saved / checkpoint.MANIFEST, 40)
    (saved / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="notes.txt"):
        model.save(saved)


def test_check_target_refuses_files_links_and_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match="is a file, not a folder"):
            check_target(tmp_path / "f", overwrite=overwrite)
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with pytest.raises(CheckpointError, match="symbolic link"):
        check_target(tmp_path / "link", overwrite=True)
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for path in (".", "..", str(tmp_path / "work"), str(work)):
        with pytest.raises(CheckpointError, match="current working folder"):
            check_target(path, overwrite=True)
    with pytest.raises(CheckpointError, match="is a file"):
        check_target(tmp_path / "f" / "sub")
    check_target("sub")  # a new folder below the working one is fine
    before = sorted(os.listdir(tmp_path))
    check_target(tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == before  # it writes nothing


def test_attachments_are_covered_and_replaced_together(tmp_path):
    model = _trained()
    out = tmp_path / "run"
    checkpoint.save_model(
        model,
        out,
        extra={"recipe": "x"},
        attachments={"history.json": b'{"loss": [1.0]}', "curves.png": b"\x89PNG"},
    )
    doc = json.loads((out / checkpoint.MANIFEST).read_text())
    assert {"history.json", "curves.png"} <= set(doc["files"])
    assert load_model(out).saved_extra == {"recipe": "x"}
    checkpoint.save_model(model, out, attachments={"metrics.json": b"{}"})  # no overwrite needed
    assert not (out / "history.json").exists() and (out / "metrics.json").exists()
    _flip(out / "metrics.json", 0)
    with pytest.raises(CheckpointError, match="metrics.json"):
        load_model(out)
    for bad in ("../x", "a/b", "", "..", checkpoint.CONFIG, checkpoint.MANIFEST):
        with pytest.raises(ValueError, match="attachment"):
            checkpoint.save_model(model, tmp_path / "other", attachments={bad: b""})
    with pytest.raises(TypeError, match="bytes"):
        checkpoint.save_model(model, tmp_path / "other", attachments={"a.txt": "text"})
    assert not (tmp_path / "other").exists()


def test_saving_a_diverged_model_keeps_the_previous_checkpoint(saved):
    before = load_model(saved)
    model = _trained(steps=4)
    model.layers[2].kernel.data[0, 1] = np.inf
    with pytest.raises(ValueError, match=r"layers.2.kernel.*dense_1.*previous checkpoint"):
        model.save(saved)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.save_weights(saved.parent / "w")
    _assert_same_state(before, load_model(saved))
    assert sorted(p.name for p in saved.parent.iterdir()) == ["m"]


# ----- crashes and recovery --------------------------------------------------------------
def _leftovers(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_interrupted_save_leaves_the_old_checkpoint_loadable(saved, monkeypatch):
    before = load_model(saved)
    calls = []
    real = _folder.write_durable

    def crash_on_second(folder, name, data):
        calls.append(name)
        real(folder, name, data)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(_folder, "write_durable", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        _trained(steps=5).save(saved)
    _assert_same_state(before, load_model(saved))
    assert _leftovers(saved) == []  # no temporary folders left


def _copy_as(src, dst, generation):
    """A complete copy of checkpoint `src` at `dst` claiming `generation`."""
    import shutil

    shutil.copytree(src, dst)
    doc = json.loads((dst / checkpoint.MANIFEST).read_text())
    doc["generation"] = generation
    (dst / checkpoint.MANIFEST).write_bytes(_manifest.seal(doc))


def test_crash_between_the_renames_loads_the_newer_copy(saved, tmp_path):
    newer = tmp_path / "newer"
    _trained(steps=6).save(newer)
    want = load_model(newer)
    os.replace(saved, saved.with_name("m.sg-old-abc123"))  # the first rename happened
    _copy_as(newer, saved.with_name("m.sg-new-def456"), 2)  # the new copy was complete
    _assert_same_state(want, load_model(saved))
    assert _leftovers(saved) == ["newer"]  # recovered into place, the old copy removed


def test_crash_before_the_renames_recovers_the_complete_new_copy(saved, tmp_path):
    newer = tmp_path / "newer"
    _trained(steps=6).save(newer)
    _copy_as(newer, saved.with_name("m.sg-new-1"), 2)
    partial = saved.with_name("m.sg-new-2")  # a save killed half way
    partial.mkdir()
    (partial / checkpoint.WEIGHTS).write_bytes(b"half")
    _trained(steps=1).save(saved)  # the next save recovers, cleans up, then writes gen 3
    assert json.loads((saved / checkpoint.MANIFEST).read_text())["generation"] == 3
    assert _leftovers(saved) == ["newer"]


def test_old_and_incomplete_leftovers_are_removed_on_load(saved):
    want = load_model(saved)
    _copy_as(saved, saved.with_name("m.sg-old-x"), 0)
    (saved.with_name("m.sg-new-y")).mkdir()
    legacy_tmp = saved.with_name("m.tmp-ab12cd34")  # splitgrad before manifests
    legacy_tmp.mkdir()
    (legacy_tmp / checkpoint.WEIGHTS).write_bytes(b"x")
    mine = saved.with_name("m.old")  # a user's folder that happens to have the legacy name
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _assert_same_state(want, load_model(saved))
    assert _leftovers(saved) == ["m.old"]


def test_the_only_complete_copy_is_never_deleted(saved):
    """PATH damaged on disk, an older complete copy beside it: loading fails loudly and the
    older copy stays for the user to recover."""
    _copy_as(saved, saved.with_name("m.sg-old-x"), 0)
    _flip(saved / checkpoint.WEIGHTS, -3)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model(saved)
    assert _leftovers(saved) == ["m.sg-old-x"]
    assert load_model(saved.with_name("m.sg-old-x")).optimizer.iterations == 3


# ----- no code from files ----------------------------------------------------------------
def test_loading_never_unpickles(saved, monkeypatch):
    names = sorted(p.name for p in saved.iterdir())
    assert names == [
        checkpoint.CONFIG,
        checkpoint.MANIFEST,
        checkpoint.OPTIMIZER,
        checkpoint.WEIGHTS,
    ]
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
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        checkpoint.CONFIG,
        checkpoint.MANIFEST,
        checkpoint.WEIGHTS,
    ]
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
    model.compile(
        optimizer="sgd",
        loss="mse",
        metrics=["mae", metrics.BinaryAccuracy(name="strict", threshold=0.7)],
    )
    model.build_from_sample(np.zeros((2, 3), np.float32))
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert [m.name for m in loaded.metrics] == ["mae", "strict"]
    assert isinstance(loaded.metrics[1], metrics.BinaryAccuracy)
    assert loaded.metrics[1].threshold == 0.7


# ----- extra optimizers (Model.extra_optimizers(): a GAN's discriminator's) ---------------------
@pytest.fixture
def two_optimizers(tmp_path):
    """A saved model with a main and an extra optimizer (a small GAN), and its folder."""
    from splitgrad.generative import GAN

    sg.seed(1)
    gan = GAN(latent_dim=2, kind="dense", hidden=(8,))
    gan.compile(d_optimizer=optim.Adam(learning_rate=1e-3))
    x = np.random.default_rng(0).random((32, 4, 4, 1)).astype(np.float32)
    gan.fit(x, x, epochs=1, batch_size=16, verbose=0)
    gan.save(tmp_path / "gan")
    return gan, tmp_path / "gan"


def test_extra_optimizer_state_is_saved_under_the_manifest(two_optimizers):
    gan, folder = two_optimizers
    name = "optimizer.discriminator.safetensors"
    manifest = json.loads((folder / checkpoint.MANIFEST).read_text())
    data = (folder / name).read_bytes()
    assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    saved = json.loads((folder / checkpoint.CONFIG).read_text())["extra_optimizer_states"]
    assert set(saved) == {"discriminator"} and saved["discriminator"]["step"] == 2
    assert b"pickle" not in data and not data.startswith(b"\x80")
    again = load_model(folder)
    a, b = gan.d_optimizer.state_dict(), again.d_optimizer.state_dict()
    assert a["step"] == b["step"] and a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert np.array_equal(a["state"][key], b["state"][key]), key


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c["extra_optimizer_states"].pop("discriminator"), "saved extra optimizers"),
        (lambda c: c.update(extra_optimizer_states=[]), "extra_optimizer_states"),
        (lambda c: c.update(extra_optimizer_states={"../x": {}}), "extra_optimizer_states"),
        (
            lambda c: c["extra_optimizer_states"]["discriminator"].update(class_name="SGD"),
            "saved by SGD",
        ),
        (
            lambda c: c["extra_optimizer_states"]["discriminator"]["config"].update(beta_1=5),
            "beta_1",
        ),
        (lambda c: c["extra_optimizer_states"]["discriminator"].update(step=-1), "step"),
        (lambda c: c.pop("extra_optimizer_states"), "holds no 'extra_optimizer_states'"),
    ],
)
def test_crafted_extra_optimizer_states_raise_checkpoint_error(two_optimizers, change, match):
    _, folder = two_optimizers
    edit_config(folder, change)
    with pytest.raises(CheckpointError, match=match):
        load_model(folder)


def test_an_extra_optimizer_file_of_the_wrong_shape_or_a_stray_one_is_refused(two_optimizers):
    _, folder = two_optimizers
    stray = folder / "optimizer.critic.safetensors"
    stray.write_bytes((folder / "optimizer.discriminator.safetensors").read_bytes())
    doc = json.loads((folder / checkpoint.MANIFEST).read_text())
    doc["files"][stray.name] = {"sha256": "0" * 64, "size": 0}  # listed; resign sums it
    (folder / checkpoint.MANIFEST).write_bytes(_manifest.seal(doc))
    resign(folder)
    with pytest.raises(CheckpointError, match="optimizer.critic.safetensors"):
        load_model(folder)
    stray.unlink()
    # The generator's arrays in the discriminator's file: names and shapes do not fit.
    (folder / "optimizer.discriminator.safetensors").write_bytes(
        (folder / checkpoint.OPTIMIZER).read_bytes()
    )
    doc = json.loads((folder / checkpoint.MANIFEST).read_text())
    del doc["files"][stray.name]
    (folder / checkpoint.MANIFEST).write_bytes(_manifest.seal(doc))
    resign(folder)
    with pytest.raises(CheckpointError, match="optimizer.discriminator.safetensors"):
        load_model(folder)


def test_restore_changes_no_optimizer_when_the_extra_one_does_not_fit(two_optimizers):
    _, folder = two_optimizers
    from splitgrad.generative import GAN

    twin = GAN(latent_dim=2, kind="dense", hidden=(8,))
    twin.compile(d_optimizer=optim.Adam(learning_rate=1e-3))
    twin.build_from_sample(np.zeros((1, 4, 4, 1), np.float32))
    before = twin.optimizer.state_dict()
    edit_config(folder, lambda c: c["extra_optimizer_states"]["discriminator"].update(step=-1))
    with pytest.raises(CheckpointError):
        restore(twin, folder)
    after = twin.optimizer.state_dict()
    assert after["step"] == before["step"] == 0
    assert all(np.array_equal(after["state"][k], before["state"][k]) for k in before["state"])


def test_extra_optimizers_at_saving(two_optimizers, tmp_path):
    gan, folder = two_optimizers
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.save_model(
            gan, tmp_path / "a", attachments={"optimizer.discriminator.safetensors": b""}
        )
    gan.d_optimizer.state_dict()  # built
    moments = gan.d_optimizer._pstate[0][0]
    moments.reshape(-1)[0] = np.nan
    with pytest.raises(ValueError, match="optimizer 'discriminator' holds 1 NaN"):
        gan.save(folder)
    assert load_model(folder).d_optimizer.iterations == 2  # the previous copy is kept
    moments.reshape(-1)[0] = 0.0
    gan.extra_optimizers = lambda: {"Bad Name": gan.d_optimizer}
    with pytest.raises(ValueError, match="extra optimizer's name"):
        gan.save(tmp_path / "b")
    gan.extra_optimizers = lambda: {"again": gan.optimizer}
    with pytest.raises(ValueError, match="saved once"):
        gan.save(tmp_path / "b")


def test_a_damaged_checkpoint_with_an_extra_optimizer_can_be_saved_over(two_optimizers):
    gan, folder = two_optimizers
    (folder / checkpoint.MANIFEST).write_text("{broken")
    gan.save(folder)  # its own files, extra optimizer included, are not "in the way"
    assert load_model(folder).d_optimizer.iterations == 2
