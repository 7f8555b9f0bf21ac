"""Keras and PyTorch programs as their users write them, with only the imports changed: the
MIT 6.S191 lab 1 custom layer and subclassed models, add_weight's spellings, freezing, saving
a subclassed model, the model attributes of both frameworks, and the messages that say the fix.
Numbers are checked against PyTorch (float64), or as predictions equal after a reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close, to_torch

import splitgrad as sg
from splitgrad import nn
from splitgrad.checkpoint import CheckpointError


# ----- lab 1, as written (tf.keras → splitgrad) -------------------------------------------
class OurDenseLayer(nn.Layer):
    def __init__(self, n_output_nodes):
        super(OurDenseLayer, self).__init__()  # noqa: UP008 - as the lab writes it
        self.n_output_nodes = n_output_nodes

    def build(self, input_shape):
        d = int(input_shape[-1])
        # Define and initialize parameters: a weight matrix W and bias b
        # Note that parameter initialization is random!
        self.W = self.add_weight("weight", shape=[d, self.n_output_nodes])
        self.b = self.add_weight("bias", shape=[1, self.n_output_nodes])

    def call(self, x):
        z = sg.ops.matmul(x, self.W) + self.b
        y = sg.ops.sigmoid(z)
        return y


@sg.register
class SubclassModel(sg.Model):
    # In __init__, we define the Model's layers
    def __init__(self, n_output_nodes):
        super(SubclassModel, self).__init__()  # noqa: UP008 - as the lab writes it
        self.dense_layer = nn.Dense(n_output_nodes, activation="sigmoid")

    # In the call function, we define the Model's forward pass.
    def call(self, inputs):
        return self.dense_layer(inputs)


@sg.register
class IdentityModel(sg.Model):
    def __init__(self, n_output_nodes):
        super(IdentityModel, self).__init__()  # noqa: UP008 - as the lab writes it
        self.dense_layer = nn.Dense(n_output_nodes, activation="sigmoid")

    def call(self, inputs, isidentity=False):
        x = self.dense_layer(inputs)
        if isidentity:
            return inputs
        return x


def test_lab1_custom_dense_layer_registers_each_weight_once_and_matches_torch():
    sg.seed(1)
    layer = OurDenseLayer(3)
    layer.build((1, 2))
    x_input = sg.tensor([[1, 2.0]])
    y = layer.call(x_input)

    assert len(layer.get_weights()) == 2
    assert layer.count_params() == 9
    assert list(layer.named_weights()) == ["weight", "bias"]
    assert layer.built  # a direct build() counts: calling the layer does not build again
    w, b = layer.get_weights()
    expected = torch.sigmoid(to_torch([[1, 2.0]]) @ to_torch(w) + to_torch(b))
    assert_close(y.numpy(), expected, rtol=1e-6, atol=1e-7)
    again = layer(np.array([[1, 2.0]], np.float32))
    assert_close(again.numpy(), y.numpy())


def test_lab1_custom_layer_trains_in_a_model_like_torch():
    """One SGD step of fit on the lab layer equals the same step in PyTorch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2))
    y = rng.uniform(size=(8, 3))
    layer = OurDenseLayer(3)
    layer.dtype = np.dtype("float64")
    model = sg.Sequential([layer], dtype="float64")
    model.compile(optimizer=sg.optim.SGD(learning_rate=0.5), loss="mse")
    model.build((None, 2))
    assert model.count_params() == 9 and len(model.parameters()) == 2
    w0, b0 = model.get_weights()

    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    tw, tb = to_torch(w0), to_torch(b0)
    loss = ((torch.sigmoid(to_torch(x, False) @ tw + tb) - to_torch(y, False)) ** 2).mean()
    loss.backward()
    assert_close(model.get_weights()[0], (tw - 0.5 * tw.grad).detach())
    assert_close(model.get_weights()[1], (tb - 0.5 * tb.grad).detach())


def test_lab1_subclassed_models_run_as_written():
    n_output_nodes = 3
    x_input = sg.tensor([[1, 2.0]])
    model = SubclassModel(n_output_nodes)
    out = model.call(x_input)
    w, b = model.dense_layer.get_weights()
    assert_close(out.numpy(), torch.sigmoid(to_torch([[1, 2.0]]) @ to_torch(w) + to_torch(b)), 1e-6)

    model = IdentityModel(n_output_nodes)
    out_activate = model.call(x_input)
    out_identity = model.call(x_input, isidentity=True)
    assert out_activate.shape == (1, 3)
    assert np.array_equal(out_identity.numpy(), [[1.0, 2.0]])
    assert np.array_equal(model(x_input, isidentity=True).numpy(), [[1.0, 2.0]])


def test_add_weight_keras_spellings():
    class Spellings(nn.Layer):
        def build(self, input_shape):
            d = input_shape[-1]
            self.w = self.add_weight(shape=(d, 4), initializer="glorot_uniform", name="kernel")
            self.b = self.add_weight(shape=(4,), initializer="zeros", trainable=True, name="b")
            self.steps = self.add_weight(shape=(), initializer="zeros", trainable=False, name="n")
            self.k3 = self.add_weight((4, 4), "ones")  # Keras 3's positional order

        def call(self, x):
            return sg.ops.matmul(x, self.w) + self.b

    layer = Spellings()
    layer(np.zeros((2, 3), np.float32))
    assert list(layer.named_weights()) == ["kernel", "b", "n", "weight"]
    assert layer.count_params() == 12 + 4 + 1 + 16
    assert np.array_equal(layer.k3.numpy(), np.ones((4, 4)))
    assert [p.name for p in layer.non_trainable_weights] == ["n"]
    assert len(layer.trainable_weights) == 3


# ----- freezing ---------------------------------------------------------------------------
def _frozen_step(recompile):
    """A 3-layer classifier, one step, freeze the first Dense, another step: weights vs the
    same program in PyTorch (the frozen Linear with requires_grad False)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 3, 16)
    model = sg.Sequential(
        [nn.Dense(5, activation="relu", input_shape=(4,)), nn.Dense(3)], dtype="float64"
    )
    loss = sg.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=sg.optim.SGD(learning_rate=0.1, momentum=0.9), loss=loss)
    start = model.get_weights()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.layers[0].trainable = False
    if recompile:
        model.compile(optimizer=sg.optim.SGD(learning_rate=0.1, momentum=0.9), loss=loss)
    frozen = model.layers[0].get_weights()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)

    k0, b0, k1, b1 = (to_torch(a) for a in start)
    opt = torch.optim.SGD([k0, b0, k1, b1], lr=0.1, momentum=0.9)
    for step in range(2):
        if step == 1:
            k0.requires_grad_(False)
            b0.requires_grad_(False)
            if recompile:
                opt = torch.optim.SGD([k1, b1], lr=0.1, momentum=0.9)
        opt.zero_grad()
        logits = torch.relu(to_torch(x, False) @ k0 + b0) @ k1 + b1
        torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
        opt.step()
    return model, frozen, [k0, b0, k1, b1]


@pytest.mark.parametrize("recompile", [False, True])
def test_freezing_after_compile_stops_training_like_torch(recompile):
    model, frozen, torch_weights = _frozen_step(recompile)
    for ours, before in zip(model.layers[0].get_weights(), frozen):
        assert np.array_equal(ours, before)
    for ours, theirs in zip(model.get_weights(), torch_weights):
        assert_close(ours, theirs.detach())
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2
    lines = []
    model.summary(print_fn=lines.append)
    assert " Trainable params: 18 " in "\n".join(lines)
    assert " Non-trainable params: 25 " in "\n".join(lines)


def test_model_trainable_propagates_and_frozen_batchnorm_runs_in_inference(tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.normal(3.0, 2.0, size=(32, 4)).astype(np.float32), rng.integers(0, 2, 32)
    model = sg.Sequential([nn.Dense(6), nn.BatchNormalization(), nn.Dense(2)])
    model.compile(optimizer="adam", loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    model.trainable = False
    assert all(not la.trainable for la in model.layers)
    assert model.trainable_weights == [] and model.parameters() == []
    model.trainable = True
    bn = model.layers[1]
    bn.trainable = False
    stats = [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]
    model.train()
    model.fit(x, y, epochs=2, verbose=0)
    assert np.array_equal(bn.moving_mean.numpy(), stats[0])
    assert np.array_equal(bn.moving_variance.numpy(), stats[1])
    h = model.layers[0](x).numpy()
    bn.train()  # training mode, yet frozen: the moving statistics normalise (Keras 3)
    ref = torch.nn.functional.batch_norm(
        to_torch(h, False), to_torch(stats[0], False), to_torch(stats[1], False),
        to_torch(bn.gamma.numpy(), False), to_torch(bn.beta.numpy(), False),
        training=False, eps=bn.epsilon,
    )  # fmt: skip
    assert_close(bn(h).numpy(), ref, rtol=1e-5, atol=1e-5)
    # Saved frozen, loaded frozen, optimizer state and all.
    model.save(tmp_path / "m")
    loaded = sg.load_model(tmp_path / "m")
    assert not loaded.layers[1].trainable and loaded.layers[0].trainable
    assert np.array_equal(loaded.predict(x), model.predict(x))
    loaded.fit(x, y, epochs=1, verbose=0)


# ----- saving subclassed models -------------------------------------------------------------
def test_registered_subclassed_model_saves_and_loads_without_get_config(tmp_path):
    model = SubclassModel(3)
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(3).uniform(size=(8, 2)).astype(np.float32)
    model.fit(x, np.zeros((8, 3), np.float32), epochs=2, verbose=0)
    model.save(tmp_path / "m")
    loaded = sg.load_model(tmp_path / "m")
    assert type(loaded) is SubclassModel
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_loading_an_unregistered_class_says_to_register_it(tmp_path):
    class NotRegistered(sg.Model):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = NotRegistered()
    model(np.zeros((1, 3), np.float32))
    model.save(tmp_path / "m")
    with pytest.raises(CheckpointError) as err:
        sg.load_model(tmp_path / "m")
    text = str(err.value)
    assert "'NotRegistered'" in text and "@splitgrad.register" in text
    assert "corrupt" not in text


def test_a_get_config_that_does_not_rebuild_is_named_not_blamed_on_the_file(tmp_path):
    @sg.register
    class ForgetsItsArguments(sg.Model):
        def __init__(self, units):
            super().__init__()
            self.dense = nn.Dense(units)

        def call(self, x):
            return self.dense(x)

        def get_config(self):
            return {"name": self.name}

    model = ForgetsItsArguments(2)
    model(np.zeros((1, 3), np.float32))
    model.save(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"ForgetsItsArguments.from_config.*units") as err:
        sg.load_model(tmp_path / "m")
    assert "get_config" in str(err.value) and "corrupt" not in str(err.value)


# ----- model attributes of Keras and PyTorch -------------------------------------------------
class TwoLayer(sg.Model):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(4, activation="relu")
        self.bn = nn.BatchNormalization()
        self.out = nn.Dense(2)

    def call(self, x):
        return self.out(self.bn(self.hidden(x)))


def test_keras_attributes_on_every_kind_of_model():
    x = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
    sub = TwoLayer()
    sub(x)
    seq = sg.Sequential([nn.Dense(4), nn.Dense(2)])
    inputs = sg.Input((3,))
    fun = sg.Model(inputs, nn.Dense(2)(nn.Dense(4)(inputs)))
    assert [la.name for la in sub.layers] == ["dense", "batch_normalization", "dense_1"]
    assert [la.name for la in seq.layers] == ["dense", "dense_1"]
    assert [type(la).__name__ for la in fun.layers] == ["InputLayer", "Dense", "Dense"]
    assert len(sub.trainable_weights) == 6 and len(sub.trainable_variables) == 6
    assert len(sub.non_trainable_weights) == 2 and len(sub.weights) == 8
    assert sub.variables == sub.weights
    assert_close(sub.predict_on_batch(x), sub.predict(x))
    sub.compile(optimizer="sgd", loss="mse")
    assert sub.test_on_batch(x, np.zeros((5, 2)))[0] == pytest.approx(
        sub.evaluate(x, np.zeros((5, 2)), batch_size=5)[0]
    )


def test_pytorch_habits_named_parameters_and_state_dict_against_torch():
    rng = np.random.default_rng(5)
    torch_net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model = sg.Sequential([nn.Dense(4, activation="relu"), nn.Dense(2)], dtype="float64")
    model.build((None, 3))
    names = [name for name, p in model.named_parameters()]
    assert names == ["layers.0.kernel", "layers.0.bias", "layers.1.kernel", "layers.1.bias"]
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    ours = {
        name: tensor.detach().numpy().T if name.endswith("weight") else tensor.detach().numpy()
        for name, tensor in torch_net.state_dict().items()
    }
    renamed = dict(zip(model.state_dict(), ours.values()))
    missing, unexpected = model.load_state_dict(renamed)
    assert missing == [] and unexpected == []
    x = rng.normal(size=(6, 3))
    assert_close(model.predict(x), torch_net(to_torch(x, False)))
    copy = sg.Sequential([nn.Dense(4, activation="relu"), nn.Dense(2)], dtype="float64")
    copy.build((None, 3))
    copy.load_state_dict(model.state_dict())
    assert np.array_equal(copy.predict(x), model.predict(x))
    assert [name for name, _ in copy.named_modules()] == ["", "layers.0", "layers.1"]
    assert copy.children() == copy.layers


def test_load_state_dict_names_what_does_not_fit():
    model = TwoLayer()
    model.build((None, 3))
    state = model.state_dict()
    assert "bn.moving_mean" in state and "bn.moving_variance" in state
    with pytest.raises(KeyError, match=r"missing keys \['out.bias'\].*unexpected keys \['extra'\]"):
        model.load_state_dict({**{k: v for k, v in state.items() if k != "out.bias"}, "extra": 1})
    bad = {**state, "out.kernel": np.zeros((5, 2))}
    with pytest.raises(ValueError, match=r"'out.kernel' of layer 'dense_1' \(Dense\).*\(4, 2\)"):
        model.load_state_dict(bad)
    before = model.get_weights()
    with pytest.raises(ValueError):
        model.load_state_dict(bad)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    missing, _ = model.load_state_dict({"out.bias": np.ones(2)}, strict=False)
    assert "out.kernel" in missing and np.array_equal(model.out.bias.numpy(), np.ones(2))


def test_tied_weights_train_once_like_torch():
    """A weight shared by two layers is one parameter: its gradient sums both uses."""
    rng = np.random.default_rng(6)
    enc, dec = (
        nn.Dense(3, use_bias=False, dtype="float64"),
        nn.Dense(3, use_bias=False, dtype="float64"),
    )
    model = sg.Sequential([enc, dec], dtype="float64")
    model.build((None, 3))
    dec.kernel = enc.kernel  # tie
    assert len(model.parameters()) == 1 and model.count_params() == 9
    model.compile(optimizer=sg.optim.SGD(learning_rate=0.1), loss="mse")
    x = rng.normal(size=(4, 3))
    w = to_torch(enc.kernel.numpy())
    model.fit(x, x, batch_size=4, epochs=1, verbose=0, shuffle=False)
    ((to_torch(x, False) @ w @ w - to_torch(x, False)) ** 2).mean().backward()
    assert_close(enc.kernel.numpy(), (w - 0.1 * w.grad).detach())
    assert dec.kernel is enc.kernel


# ----- messages that say the fix -----------------------------------------------------------
def test_nchw_images_into_conv2d_say_channels_last_and_the_transpose():
    model = sg.Sequential([nn.Conv2D(8, 3), nn.Flatten(), nn.Dense(10)])
    with pytest.raises(
        ValueError, match=r"channels-last \(N, H, W, C\).*x\.transpose\(0, 2, 3, 1\)"
    ):
        model.predict(np.zeros((2, 1, 28, 28), np.float32))
    model.predict(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match=r"looks channels-first.*x\.transpose\(0, 2, 3, 1\)"):
        model.predict(np.zeros((2, 3, 28, 28), np.float32))


def test_a_missing_flatten_names_the_dense_layer():
    model = sg.Sequential([nn.Conv2D(4, 3, activation="relu"), nn.Dense(10, name="head")])
    model.compile(optimizer="adam", loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"layer 'head' \(Dense\).*add nn\.Flatten\(\) before"):
        model.fit(x, y, verbose=0)
