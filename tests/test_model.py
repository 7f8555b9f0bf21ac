"""The Keras-style model API: Dense/Sequential against torch, fit/evaluate/predict, metrics.

Numerical checks run in float64 against torch 2.13 (the oracle); the training-loop checks use
small synthetic data so the whole file stays fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close, to_torch

import splitgrad as sg
from splitgrad import losses, metrics, nn, optim
from splitgrad.tensor import Tensor


def _torch_linear(dense):
    """A torch Linear holding the same weights as a built float64 Dense (W is in × out)."""
    fan_in, units = dense.kernel.shape
    lin = torch.nn.Linear(fan_in, units, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(dense.kernel.data.T.copy()))
        lin.bias.copy_(torch.from_numpy(dense.bias.data.copy()))
    return lin


def _blobs(n=240, features=4, classes=3, seed=0):
    """Separable Gaussian blobs with integer labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = (centres[y] + rng.normal(0, 0.7, size=(n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def _classifier(seed=0, **compile_kw):
    sg.seed(seed)
    model = nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(3)])
    model.compile(
        optimizer=compile_kw.pop("optimizer", optim.Adam(learning_rate=0.01)),
        loss=compile_kw.pop("loss", losses.SparseCategoricalCrossentropy(from_logits=True)),
        metrics=compile_kw.pop("metrics", ["accuracy"]),
    )
    return model


# ----- layers against torch ----------------------------------------------------------------
def test_dense_forward_backward_matches_torch_linear():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 5))
    dense = nn.Dense(3, dtype="float64")
    xt = Tensor(x.copy(), requires_grad=True)
    y = dense(xt)
    lin = _torch_linear(dense)
    x_ref = to_torch(x)
    y_ref = lin(x_ref)
    assert_close(y.data, y_ref, what="forward")
    g = rng.normal(size=(7, 3))
    y.backward(g)
    y_ref.backward(torch.from_numpy(g))
    assert_close(xt.grad, x_ref.grad, what="dx")
    assert_close(dense.kernel.grad, lin.weight.grad.T, what="dW")
    assert_close(dense.bias.grad, lin.bias.grad, what="db")


def test_dense_init_is_torch_uniform_and_orientation_is_in_by_out():
    sg.seed(0)
    dense = nn.Dense(50, dtype="float64")
    dense(np.zeros((1, 400)))
    assert dense.kernel.shape == (400, 50) and dense.bias.shape == (50,)
    bound = 1 / np.sqrt(400)
    assert np.abs(dense.kernel.data).max() <= bound
    assert np.abs(dense.kernel.data).max() > 0.95 * bound  # spans the whole interval


def test_sequential_mlp_loss_and_all_gradients_match_torch():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 6)), rng.integers(0, 4, size=9)
    model = nn.Sequential(
        [nn.Dense(8, activation="tanh"), nn.Dense(5, activation="relu"), nn.Dense(4)],
        dtype="float64",
    )
    model(x[:1])
    denses = model.layers
    ref = torch.nn.Sequential(
        _torch_linear(denses[0]),
        torch.nn.Tanh(),
        _torch_linear(denses[1]),
        torch.nn.ReLU(),
        _torch_linear(denses[2]),
    )
    loss = losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
    loss.backward()
    ref_loss = torch.nn.functional.cross_entropy(ref(to_torch(x, False)), torch.from_numpy(y))
    ref_loss.backward()
    assert_close(loss.data, ref_loss, what="loss")
    for i, dense in enumerate(denses):
        lin = ref[2 * i]
        assert_close(dense.kernel.grad, lin.weight.grad.T, what=f"dW{i}")
        assert_close(dense.bias.grad, lin.bias.grad, what=f"db{i}")


def test_softmax_output_with_sparse_ce_uses_the_logits_and_trains():
    x, y = _blobs()
    sg.seed(3)
    model = nn.Sequential(
        [nn.Dense(16, activation="relu"), nn.Dense(3, activation="softmax")], dtype="float64"
    )
    model.compile(
        optimizer=optim.Adam(learning_rate=0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.build_from_sample(x)
    # The same network without the softmax gives the logits.
    logits_model = nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(3)], dtype="float64")
    logits_model(x[:1])
    logits_model.set_weights(model.get_weights())
    probs = model(x)
    loss = model.loss(y, probs)
    ref = losses.sparse_categorical_crossentropy(y, logits_model(x), from_logits=True)
    assert_close(loss.data, ref.data, rtol=1e-12, what="loss from the logits")
    assert_close(probs.data.sum(-1), np.ones(len(x)), what="softmax rows sum to 1")

    first = model.evaluate(x, y)[0]
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0, seed=0)
    last, acc = model.evaluate(x, y)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert last < 0.5 * first and acc > 0.95


@pytest.mark.parametrize("kind, rate", [("l1", 0.03), ("l2", 0.05)])
def test_kernel_regularizer_penalty_value_and_gradient_match_torch(kind, rate):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    reg = nn.regularizers.L1(rate) if kind == "l1" else nn.regularizers.L2(rate)
    model = nn.Sequential([nn.Dense(2, kernel_regularizer=reg)], dtype="float64")
    model.compile(optimizer="sgd", loss="mse")
    model.build_from_sample(x)
    loss = model.compute_loss(x, y)
    loss.backward()
    lin = _torch_linear(model.layers[0])
    w = lin.weight
    penalty = rate * (w.abs().sum() if kind == "l1" else (w * w).sum())
    ref = torch.nn.functional.mse_loss(lin(to_torch(x, False)), to_torch(y, False)) + penalty
    ref.backward()
    assert_close(loss.data, ref, what="loss + penalty")
    assert_close(model.layers[0].kernel.grad, w.grad.T, what="dW with penalty")
    assert_close(model.layers[0].bias.grad, lin.bias.grad, what="bias is not penalised")


def test_dropout_training_scales_kept_units_and_inference_is_identity():
    sg.seed(5)
    drop = nn.Dropout(0.25, dtype="float64")
    x = np.ones((200, 50))
    y = drop(x).data
    kept = y != 0
    assert np.allclose(y[kept], 1 / 0.75)
    assert 0.70 < kept.mean() < 0.80
    drop.eval()
    assert np.array_equal(drop(x).data, x)
    # predict runs in inference mode even if the model is in training mode
    model = nn.Sequential([nn.Dropout(0.5)])
    assert np.array_equal(model.predict(x.astype(np.float32)), x)


def test_subclassed_model_with_call_trains_and_tracks_sublayers():
    class TwoLayer(nn.Model):
        def __init__(self, name=None, dtype="float32"):
            super().__init__(name=name, dtype=dtype)
            self.hidden = nn.Dense(16, activation="relu")
            self.out = nn.Dense(3)

        def call(self, x):
            return self.out(self.hidden(x))

    x, y = _blobs()
    sg.seed(6)
    model = TwoLayer()
    model.compile(
        optimizer=optim.Adam(learning_rate=0.01),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=10, verbose=0, seed=0)
    assert list(model.named_weights()) == ["hidden.kernel", "hidden.bias", "out.kernel", "out.bias"]
    assert len(model.parameters()) == 4
    assert model.evaluate(x, y)[1] > 0.95
    model.eval()
    assert not model.hidden.training and not model.out.training


def test_sequential_add_and_lazy_build():
    model = nn.Sequential()
    model.add(nn.Dense(8, activation="relu"))
    model.add(nn.Dense(2))
    assert not model.built and not model.layers[0].built
    out = model(np.zeros((3, 5), dtype=np.float32))
    assert out.shape == (3, 2)
    assert model.layers[0].kernel.shape == (5, 8)
    assert model.layers[1].kernel.shape == (8, 2)
    assert model.count_params() == 5 * 8 + 8 + 8 * 2 + 2
    with pytest.raises(TypeError, match="Layer"):
        model.add("dense")


def test_feature_count_change_after_build_names_layer_and_shapes():
    model = nn.Sequential([nn.Dense(4, name="hidden"), nn.Dense(1)])
    model(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError) as err:
        model(np.zeros((2, 5), dtype=np.float32))
    text = str(err.value)
    assert "hidden" in text and "3" in text and "(2, 5)" in text


@pytest.mark.parametrize("where", ["x", "y"])
def test_nan_input_to_fit_and_evaluate_is_a_clear_error(where):
    x, y = _blobs(40)
    y = y.astype(np.float32)
    if where == "x":
        x[3, 2] = np.nan
    else:
        y[7] = np.inf
    model = nn.Sequential([nn.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.evaluate(x, y)):
        with pytest.raises(ValueError, match=f"{where} contains 1 NaN or infinite"):
            call()


def test_x_y_length_mismatch_is_a_clear_error():
    x, y = _blobs(40)
    model = _classifier()
    with pytest.raises(ValueError, match="40 inputs and 39 targets"):
        model.fit(x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match="same number of samples"):
        model.evaluate(x[:-2], y)
    with pytest.raises(ValueError, match="no samples"):
        model.evaluate(x[:0], y[:0])
    with pytest.raises(ValueError, match="validation_split took all"):
        model.fit(x[:1], y[:1], validation_split=0.5, verbose=0)


def test_validation_split_takes_the_last_fraction_before_shuffling():
    x, y = _blobs(100)
    seen = {}

    class Spy(nn.Model):
        """Records every sample fed to it, by its first feature."""

        def __init__(self, name=None, dtype="float32"):
            super().__init__(name=name, dtype=dtype)
            self.dense = nn.Dense(3)

        def call(self, t):
            seen.setdefault("train" if self.training else "val", set()).update(
                t.data[:, 0].tolist()
            )
            return self.dense(t)

    model = Spy()
    model.compile(optimizer="sgd", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    seen.clear()
    model.fit(x, y, validation_split=0.2, epochs=1, shuffle=True, verbose=0, seed=0)
    assert seen["train"] == set(x[:80, 0].tolist())
    assert set(x[80:, 0].tolist()) <= seen["val"]
    assert not seen["train"] & set(x[80:, 0].tolist())


def test_history_keys_epochs_and_initial_epoch():
    x, y = _blobs(120)
    model = _classifier()
    history = model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, seed=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in history.history.values())
    assert model.history is history
    later = model.fit(x, y, epochs=5, initial_epoch=3, verbose=0, seed=0)
    assert later.epoch == [3, 4] and len(later.history["loss"]) == 2


def test_seeded_fit_is_reproducible_and_seed_changes_the_order():
    x, y = _blobs(120)
    runs = []
    for seed in (0, 0, 1):
        model = _classifier(seed=7)
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=seed)
        runs.append((history.history["loss"], model.get_weights()))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0] != runs[2][0]
    # No explicit seed: sg.seed fixes initialisation and shuffling alike.
    again = []
    for _ in range(2):
        model = _classifier(seed=8)
        again.append(model.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"])
    assert again[0] == again[1]


def test_evaluate_returns_loss_then_metrics_and_predict_shape():
    x, y = _blobs(50)
    model = _classifier(metrics=["accuracy", "sparse_categorical_accuracy"])
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    result = model.evaluate(x, y, batch_size=7)
    assert isinstance(result, list) and len(result) == 3
    as_dict = model.evaluate(x, y, return_dict=True)
    assert list(as_dict) == ["loss", "accuracy", "sparse_categorical_accuracy"]
    logits = model.predict(x, batch_size=7)
    assert logits.shape == (50, 3)
    ref = losses.sparse_categorical_crossentropy(y, Tensor(logits), from_logits=True)
    assert result[0] == pytest.approx(float(ref.data), rel=1e-5)
    assert result[1] == pytest.approx(np.mean(logits.argmax(-1) == y))
    assert result[1] == result[2]


def test_fit_requires_compile_and_evaluate_matches_train_mode_free_loss():
    model = nn.Sequential([nn.Dense(1)])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((4, 2)), np.zeros(4), verbose=0)
    with pytest.raises(ValueError, match="loss is required"):
        model.compile(optimizer="sgd")


def test_metrics_values():
    y_int = np.array([0, 2, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.7, 0.2]])
    m = metrics.SparseCategoricalAccuracy()
    m.update(y_int, probs)
    assert m.result() == pytest.approx(0.75)
    m.update(np.array([0]), np.array([[0.0, 1.0, 0.0]]))  # accumulates over batches
    assert m.result() == pytest.approx(3 / 5)

    m = metrics.CategoricalAccuracy()
    m.update(np.eye(3)[y_int], probs)
    assert m.result() == pytest.approx(0.75)

    m = metrics.BinaryAccuracy()
    m.update(np.array([1, 0, 1, 0]), np.array([[0.9], [0.4], [0.2], [0.6]]))
    assert m.result() == pytest.approx(0.5)

    t, p = np.array([1.0, 2.0, 3.0]), np.array([[1.5], [2.0], [1.0]])
    m = metrics.get("mae")
    m.update(t, p)
    assert m.result() == pytest.approx((0.5 + 0 + 2) / 3)
    m = metrics.get("mse")
    m.update(t, p)
    assert m.result() == pytest.approx((0.25 + 0 + 4) / 3)
    m.reset()
    assert np.isnan(m.result())


def test_accuracy_resolves_from_the_loss():
    assert isinstance(
        metrics.get("accuracy", losses.get("sparse_categorical_crossentropy")),
        metrics.SparseCategoricalAccuracy,
    )
    assert isinstance(
        metrics.get("accuracy", losses.get("categorical_crossentropy")), metrics.CategoricalAccuracy
    )
    binary = metrics.get("accuracy", losses.BinaryCrossentropy(from_logits=True))
    assert isinstance(binary, metrics.BinaryAccuracy) and binary.threshold == 0.0
    assert metrics.get("accuracy", losses.get("binary_crossentropy")).threshold == 0.5
    with pytest.raises(ValueError, match="classification loss"):
        metrics.get("accuracy", losses.get("mse"))
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.get("f1")


def test_binary_model_with_sigmoid_and_categorical_labels_train():
    x, y = _blobs(160, classes=2)
    sg.seed(9)
    model = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(1, activation="sigmoid")])
    model.compile(
        optimizer=optim.Adam(learning_rate=0.02), loss="binary_crossentropy", metrics=["accuracy"]
    )
    model.fit(x, y.astype(np.float32), epochs=10, verbose=0, seed=0)
    assert model.evaluate(x, y.astype(np.float32))[1] > 0.95

    x, y = _blobs(160)
    sg.seed(9)
    model = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3, activation="softmax")])
    model.compile(
        optimizer=optim.Adam(learning_rate=0.02),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    onehot = np.eye(3, dtype=np.float32)[y]
    model.fit(x, onehot, epochs=10, verbose=0, seed=0)
    assert model.evaluate(x, onehot)[1] > 0.95


def test_train_on_batch_and_custom_train_step():
    x, y = _blobs(64)
    calls = []

    class Counting(nn.Sequential):
        def train_step(self, xb, yb):
            calls.append(len(xb))
            return super().train_step(xb, yb)

    sg.seed(10)
    model = Counting([nn.Dense(3)])
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=20, epochs=1, verbose=0, seed=0)
    assert calls == [20, 20, 20, 4]
    logs = model.train_on_batch(x, y)
    assert set(logs) == {"loss"} and np.isfinite(logs["loss"])


def test_adding_a_layer_after_compile_is_not_silently_left_untrained():
    x, y = _blobs(64)
    model = _classifier()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    model.add(nn.Dense(3))
    with pytest.raises(ValueError, match="new optimizer"):
        model.fit(x, y, epochs=1, verbose=0, seed=0)
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.layers[-1].kernel.data.copy()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    assert not np.array_equal(before, model.layers[-1].kernel.data)


# ----- arguments checked at the door -----------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, None, 2.5, True, "32"])
def test_a_batch_size_that_is_not_a_positive_integer_is_one_clear_error(bad):
    x, y = _blobs(20)
    model = _classifier()
    for call in (
        lambda: model.fit(x, y, batch_size=bad, verbose=0),
        lambda: model.evaluate(x, y, batch_size=bad),
        lambda: model.predict(x, batch_size=bad),
    ):
        with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got"):
            call()


@pytest.mark.parametrize("bad", [-1, 1.5, None])
def test_negative_or_fractional_epochs_are_refused(bad):
    x, y = _blobs(20)
    with pytest.raises(ValueError, match=r"fit: epochs must be an integer >= 0"):
        _classifier().fit(x, y, epochs=bad, verbose=0)


def test_zero_epochs_train_nothing():
    x, y = _blobs(20)
    model = _classifier()
    model.build_from_sample(x)
    before = model.get_weights()
    history = model.fit(x, y, epochs=0, verbose=0)
    assert history.epoch == [] and all(
        np.array_equal(a, b) for a, b in zip(before, model.get_weights())
    )


@pytest.mark.parametrize(
    "data, words",
    [
        ([[1.0, 2.0], [3.0]], "rows of shapes"),
        (np.array([{"a": 1}, {"b": 2}], dtype=object), "numeric array"),
        (["a", "b"], "numeric array"),
    ],
)
def test_ragged_or_object_input_names_the_argument(data, words):
    model = _classifier()
    with pytest.raises(TypeError, match=rf"x: could not turn the data into a {words}|{words}"):
        model.fit(data, [0, 1], verbose=0)
    with pytest.raises(TypeError, match="x: could not"):
        model.predict(data)


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0])
def test_a_learning_rate_that_is_not_finite_or_positive_is_refused(lr):
    with pytest.raises(ValueError, match="learning_rate"):
        optim.Adam(learning_rate=lr)


def test_fit_trains_on_a_batch_source_and_on_a_dataloader():
    x, y = _blobs(64)
    loader = sg.data.DataLoader((x, y), batch_size=16, shuffle=True, seed=0)
    model = _classifier()
    history = model.fit(loader, epochs=2, verbose=0, validation_data=(x, y))
    assert len(history.history["loss"]) == 2 and "val_accuracy" in history.history
    windows = sg.datasets.RandomWindows(np.arange(200) % 7, seq_len=5, batch_size=4, steps=3)
    assert len(windows) == 3 and len(list(windows.batches(0))) == 3

    def one_pass():
        yield from ((x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16))

    with pytest.raises(ValueError, match="generator is used up after one pass"):
        _classifier().fit(one_pass(), epochs=2, verbose=0)


def test_a_model_built_by_a_call_after_compile_fits_a_batch_source():
    # The optimizer is built when fit first sees the model built, whichever way it was built.
    x, y = _blobs(64)
    model = _classifier()
    model(x[:1])
    loader = sg.data.DataLoader((x, y), batch_size=16, shuffle=True, seed=0)
    before = [p.data.copy() for p in model.parameters()]
    history = model.fit(loader, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


def test_building_from_a_batch_source_loses_no_batch():
    x, y = _blobs(64)
    seen = []

    class Counting(nn.Sequential):
        def train_step(self, xb, yb):
            seen.append(len(xb))
            return super().train_step(xb, yb)

    def make():
        sg.seed(0)
        model = Counting([nn.Dense(3)])
        model.compile(optimizer="sgd", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    make().fit((b for b in [(x[:40], y[:40]), (x[40:], y[40:])]), epochs=1, verbose=0)
    assert seen == [40, 24]
    seen.clear()
    loader = sg.data.DataLoader((x, y), batch_size=16)
    make().fit(loader, epochs=2, verbose=0)
    assert seen == [16] * 8
