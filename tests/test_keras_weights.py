"""Weights from Keras 3, written as a user would: the same model built and saved by real
Keras 3, loaded into splitgrad, gives the same outputs (float32 to 1e-5). A model that differs
is named in the error.

Keras runs in a subprocess with the torch backend (KERAS_BACKEND=torch in that process only),
once per test module: it writes the weights files and its own predictions, which the tests
compare with splitgrad's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from splitgrad import nn
from splitgrad.interop.keras_weights import load_keras_weights

F32 = {"rtol": 1e-5, "atol": 1e-5}

KERAS_SCRIPT = r"""
import json, sys
import numpy as np
import keras
from keras import layers

out_dir = sys.argv[1]
rng = np.random.default_rng(0)


def randomize(model):
    # Keras starts biases at zero; random values make every array count.
    for v in model.weights:
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        else:
            v.assign(rng.normal(0.0, 0.5, v.shape).astype("float32"))


def save(name, model, x, archive=False):
    randomize(model)
    if archive:
        model.save(f"{out_dir}/{name}.keras")
    else:
        model.save_weights(f"{out_dir}/{name}.weights.h5")
    np.save(f"{out_dir}/{name}_x.npy", x)
    np.save(f"{out_dir}/{name}_y.npy", np.asarray(model.predict(x, verbose=0)))


save("mlp", keras.Sequential([
    keras.Input((6,)), layers.Dense(8, activation="relu"), layers.Dense(8),
    layers.BatchNormalization(scale=False), layers.Dense(3),
]), rng.normal(size=(5, 6)).astype("float32"))

save("cnn", keras.Sequential([
    keras.Input((8, 8, 3)), layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(2),
    layers.Conv2D(5, 3, padding="same"), layers.BatchNormalization(), layers.Flatten(),
    layers.Dense(6, activation="relu"), layers.Dense(2),
]), rng.normal(size=(4, 8, 8, 3)).astype("float32"))

save("recurrent", keras.Sequential([
    keras.Input((7,), dtype="int32"), layers.Embedding(20, 4),
    layers.LSTM(5, return_sequences=True), layers.GRU(3, return_sequences=True),
    layers.Bidirectional(layers.SimpleRNN(2)), layers.Dense(2),
]), rng.integers(0, 20, size=(4, 7)).astype("int32"), archive=True)

save("nested", keras.Sequential([
    keras.Input((5,)), layers.Dense(4, activation="tanh"),
    keras.Sequential([layers.Dense(3, activation="tanh"), layers.Dense(2)]),
]), rng.normal(size=(3, 5)).astype("float32"))


save("variants", keras.Sequential([
    keras.Input((6, 6, 3)), layers.Conv2DTranspose(2, 3, strides=2),
    layers.BatchNormalization(center=False), layers.Flatten(), layers.Dense(4, use_bias=False),
    layers.Reshape((2, 2)), layers.LSTM(3, use_bias=False, return_sequences=True),
    layers.GRU(2, use_bias=False),
]), rng.normal(size=(2, 6, 6, 3)).astype("float32"))


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.zz = [layers.Dense(3, activation="tanh"), layers.Dense(3, activation="tanh")]
        self.a = layers.Dense(4, activation="tanh")
        self.mm = layers.Dense(2)

    def call(self, x):
        return self.mm(self.a(self.zz[1](self.zz[0](x))))


net = Net()
x = rng.normal(size=(3, 5)).astype("float32")
net(x)
save("subclassed", net, x)

old_gru = keras.Sequential([keras.Input((4, 3)), layers.GRU(2, reset_after=False)])
old_gru.save_weights(f"{out_dir}/old_gru.weights.h5")
print(json.dumps({"keras": keras.__version__, "backend": keras.backend.backend()}))
"""


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """The folder where Keras 3 wrote its weights files and predictions (one run per module)."""
    pytest.importorskip("h5py")
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (it is in the test extra)")
    folder = tmp_path_factory.mktemp("keras")
    script = folder / "make_keras_models.py"
    script.write_text(KERAS_SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "torch", "KERAS_HOME": str(folder / "keras_home")}
    done = subprocess.run(
        [sys.executable, str(script), str(folder)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["keras"].startswith("3.") and info["backend"] == "torch"
    return folder


def _keras_case(folder, name, model, suffix=".weights.h5"):
    x, y = np.load(folder / f"{name}_x.npy"), np.load(folder / f"{name}_y.npy")
    model.predict(x[:1])  # builds every layer (in inference mode: BatchNorm takes 1 sample)
    report = load_keras_weights(model, folder / f"{name}{suffix}")
    np.testing.assert_allclose(model.predict(x), y, **F32)
    return report


def test_a_keras_mlp_with_batchnorm(keras_files):
    model = nn.Sequential(
        [
            nn.Dense(8, activation="relu"),
            nn.Dense(8),
            nn.BatchNormalization(scale=False),
            nn.Dense(3),
        ]
    )
    report = _keras_case(keras_files, "mlp", model)
    assert ("layers.2.moving_variance", "layers/batch_normalization/vars/2") in report.loaded


def test_a_keras_cnn(keras_files):
    model = nn.Sequential(
        [
            nn.Conv2D(4, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(5, 3, padding="same"),
            nn.BatchNormalization(),
            nn.Flatten(),
            nn.Dense(6, activation="relu"),
            nn.Dense(2),
        ]
    )
    _keras_case(keras_files, "cnn", model)


def test_keras_recurrent_layers_from_a_dot_keras_archive(keras_files):
    """Embedding, LSTM (gates i|f|c|o), GRU (z|r|h and reset_after's two biases), and a
    Bidirectional SimpleRNN, read from the weights inside a .keras file."""
    model = nn.Sequential(
        [
            nn.Embedding(20, 4),
            nn.LSTM(5, return_sequences=True),
            nn.GRU(3, return_sequences=True),
            nn.Bidirectional(nn.SimpleRNN(2)),
            nn.Dense(2),
        ]
    )
    _keras_case(keras_files, "recurrent", model, suffix=".keras")


def test_keras_transposed_convolution_and_layers_without_biases(keras_files):
    model = nn.Sequential(
        [
            nn.Conv2DTranspose(2, 3, strides=2),
            nn.BatchNormalization(center=False),
            nn.Flatten(),
            nn.Dense(4, use_bias=False),
            nn.Reshape((2, 2)),
            nn.LSTM(3, return_sequences=True),
            nn.GRU(2),
        ]
    )
    _keras_case(keras_files, "variants", model)
    np.testing.assert_array_equal(model.layers[6].b_hh.data, 0.0)


def test_a_keras_sequential_inside_a_sequential(keras_files):
    inner = nn.Sequential([nn.Dense(3, activation="tanh"), nn.Dense(2)])
    model = nn.Sequential([nn.Dense(4, activation="tanh"), inner])
    report = _keras_case(keras_files, "nested", model)
    assert ("layers.1.layers.1.kernel", "layers/sequential/layers/dense_1/vars/0") in (
        report.loaded
    )


class _Net(nn.Model):
    """The Keras subclassed model of the script, attribute for attribute."""

    def __init__(self):
        super().__init__()
        self.zz = [nn.Dense(3, activation="tanh"), nn.Dense(3, activation="tanh")]
        self.a = nn.Dense(4, activation="tanh")
        self.mm = nn.Dense(2)

    def call(self, x):
        return self.mm(self.a(self.zz[1](self.zz[0](x))))


def test_a_keras_subclassed_model_into_the_same_splitgrad_subclass(keras_files):
    """Keras files a subclassed model's layers by attribute name, and the ones it reaches
    first through `model.layers` under layers/<class>: splitgrad follows the same walk."""
    report = _keras_case(keras_files, "subclassed", _Net())
    keys = dict(report.loaded)
    assert keys["a.kernel"] == "a/vars/0"
    assert keys["zz.1.kernel"] == "layers/dense_1/vars/0"
    assert keys["mm.kernel"] == "layers/dense_3/vars/0"


def test_a_different_keras_architecture_names_the_layer(keras_files):
    x = np.load(keras_files / "mlp_x.npy")
    wide = nn.Sequential(
        [nn.Dense(8, activation="relu"), nn.Dense(9), nn.BatchNormalization(scale=False)]
        + [nn.Dense(3)]
    )
    wide.predict(x[:1])
    with pytest.raises(ValueError) as info:
        load_keras_weights(wide, keras_files / "mlp.weights.h5")
    text = str(info.value)
    for part in ("'dense_1' (Dense", "'layers/dense_1/vars/0'", "(8, 9)", "(8, 8)"):
        assert part in text, text

    subclass = _Net()
    subclass(x[:1, :5])
    with pytest.raises(ValueError, match=r"at 'zz.0'.*'layers/dense/vars/0'.*\(5, 3\)"):
        load_keras_weights(subclass, keras_files / "mlp.weights.h5")

    # The subclassed Keras model filed its layer `a` under "a", not under layers/dense_2.
    flat = nn.Sequential([nn.Dense(3), nn.Dense(3), nn.Dense(4), nn.Dense(2)])
    flat.predict(np.load(keras_files / "subclassed_x.npy")[:1])
    with pytest.raises(ValueError, match=r"Keras address 'layers/dense_2'.*a \[\(3, 4\), \(4,\)\]"):
        load_keras_weights(flat, keras_files / "subclassed.weights.h5")
    with pytest.warns(UserWarning, match="a/vars/0"):
        report = load_keras_weights(flat, keras_files / "subclassed.weights.h5", strict=False)
    assert report.missing_keys == ["layers.2.kernel", "layers.2.bias"]
    assert sorted(report.unexpected_keys) == ["a/vars/0", "a/vars/1"]


def test_a_reset_after_false_keras_gru_is_refused(keras_files):
    model = nn.Sequential([nn.GRU(2)])
    model(np.zeros((1, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"'gru' \(GRU.*reset_after=True"):
        load_keras_weights(model, keras_files / "old_gru.weights.h5")


def test_keras_loading_errors_say_what_to_do(tmp_path):
    pytest.importorskip("h5py")
    model = nn.Sequential([nn.Dense(2)])
    model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="no such file.*save_weights"):
        load_keras_weights(model, tmp_path / "absent.weights.h5")
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_keras_weights(model, junk)
