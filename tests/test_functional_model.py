"""Keras's functional API as its users write it: `Input`, layers called on symbolic tensors,
`Model(inputs, outputs)` with several inputs and outputs, shared layers and nested models,
trained with losses per output, saved and loaded; checked against the same program in
PyTorch (float64) and by predictions equal after a reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close, to_torch

import splitgrad as sg
from splitgrad import nn


def _two_input_model():
    """Two inputs, one Dense shared by both branches, two outputs (a regression and a
    3-class classification), all float64."""
    a = sg.Input(shape=(4,), name="a", dtype="float64")
    b = sg.Input(shape=(3,), name="b", dtype="float64")
    shared = nn.Dense(5, activation="tanh", dtype="float64")
    left = shared(nn.Dense(5, dtype="float64")(a))
    right = shared(nn.Dense(5, dtype="float64")(b))
    h = nn.Concatenate(dtype="float64")([left, right])
    price = nn.Dense(1, name="price", dtype="float64")(h)
    kind = nn.Dense(3, name="kind", dtype="float64")(h)
    return sg.Model(inputs=[a, b], outputs=[price, kind], name="two_heads", dtype="float64")


def _torch_forward(weights, xa, xb):
    """The same graph in PyTorch from splitgrad's weights (kernels are (in, out))."""
    w = dict(weights)
    shared = lambda h: torch.tanh(h @ w["layers.3.kernel"] + w["layers.3.bias"])
    left = shared(xa @ w["layers.2.kernel"] + w["layers.2.bias"])
    right = shared(xb @ w["layers.4.kernel"] + w["layers.4.bias"])
    h = torch.cat([left, right], dim=-1)
    price = h @ w["layers.6.kernel"] + w["layers.6.bias"]
    kind = h @ w["layers.7.kernel"] + w["layers.7.bias"]
    return price, kind


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 4)),
        rng.normal(size=(n, 3)),
        rng.normal(size=(n, 1)),
        rng.integers(0, 3, n),
    )


def test_symbolic_tensors_and_the_layers_of_a_functional_model():
    x = sg.Input(shape=(64,), name="features")
    assert x.shape == (None, 64)
    h = nn.Dense(32, activation="relu")(x)
    assert h.shape == (None, 32)
    model = sg.Model(x, nn.Dense(10)(h))
    assert model.count_params() == 64 * 32 + 32 + 32 * 10 + 10
    assert [type(la).__name__ for la in model.layers] == ["InputLayer", "Dense", "Dense"]
    assert [la.name for la in model.layers] == ["features", "dense", "dense_1"]
    seq = sg.Model(inputs=x, outputs=nn.Dense(3)(x))
    assert seq.predict(np.zeros((2, 64), np.float32)).shape == (2, 3)


def test_two_input_two_output_forward_and_gradients_match_torch():
    model = _two_input_model()
    assert len(model.layers) == 8  # the shared Dense once
    xa, xb, _, _ = _data()
    price, kind = model([xa, xb])
    loss = (price * price).sum() + (kind * kind).mean()
    loss.backward()

    weights = {k: to_torch(p.numpy()) for k, p in model.named_weights().items()}
    t_price, t_kind = _torch_forward(weights, to_torch(xa, False), to_torch(xb, False))
    assert_close(price.numpy(), t_price)
    assert_close(kind.numpy(), t_kind)
    ((t_price * t_price).sum() + (t_kind * t_kind).mean()).backward()
    for key, p in model.named_weights().items():
        assert_close(p.grad, weights[key].grad, what=key)
    # Inputs by name give the same outputs.
    named = model.predict({"b": xb, "a": xa})
    assert_close(named[1], kind.numpy())


def test_fit_with_losses_per_output_and_loss_weights_matches_torch():
    """One SGD step on a dict of losses weighted 0.5 / 1.0 equals the same step in torch."""
    model = _two_input_model()
    xa, xb, y_price, y_kind = _data()
    start = {k: to_torch(p.numpy()) for k, p in model.named_weights().items()}
    model.compile(
        optimizer=sg.optim.SGD(learning_rate=0.1),
        loss={"price": "mse", "kind": sg.losses.SparseCategoricalCrossentropy(from_logits=True)},
        loss_weights={"price": 0.5, "kind": 1.0},
        metrics={"kind": ["sparse_categorical_accuracy"]},
    )
    history = model.fit(
        {"a": xa, "b": xb}, [y_price, y_kind], batch_size=16, epochs=1, shuffle=False, verbose=0
    )
    assert "kind_sparse_categorical_accuracy" in history.history

    t_price, t_kind = _torch_forward(start, to_torch(xa, False), to_torch(xb, False))
    loss = 0.5 * ((t_price - to_torch(y_price, False)) ** 2).mean()
    loss = loss + torch.nn.functional.cross_entropy(t_kind, torch.tensor(y_kind))
    loss.backward()
    assert history.history["loss"][0] == pytest.approx(loss.item(), rel=1e-10)
    for key, p in model.named_weights().items():
        assert_close(p.numpy(), (start[key] - 0.1 * start[key].grad).detach(), what=key)
    logs = model.evaluate([xa, xb], {"price": y_price, "kind": y_kind}, return_dict=True)
    assert set(logs) == {"loss", "kind_sparse_categorical_accuracy"}


def test_functional_model_saves_and_loads_with_its_training_state(tmp_path):
    model = _two_input_model()
    xa, xb, y_price, y_kind = _data(32, seed=1)
    model.compile(
        optimizer="adam",
        loss=["mse", sg.losses.SparseCategoricalCrossentropy(from_logits=True)],
        loss_weights=[0.5, 1.0],
    )
    model.fit([xa, xb], [y_price, y_kind], epochs=2, verbose=0)
    model.save(tmp_path / "m")
    loaded = sg.load_model(tmp_path / "m")
    assert [la.name for la in loaded.layers] == [la.name for la in model.layers]
    for ours, theirs in zip(model.predict([xa, xb]), loaded.predict([xa, xb])):
        assert np.array_equal(ours, theirs)
    # The optimizer state came back too: one more epoch is the same on both.
    for m in (model, loaded):
        m.fit([xa, xb], [y_price, y_kind], epochs=1, verbose=0, seed=3)
    for ours, theirs in zip(model.get_weights(), loaded.get_weights()):
        assert_close(ours, theirs)
    same = sg.Model.from_config(model.get_config())
    same.set_weights(model.get_weights())
    assert_close(same.predict([xa, xb])[0], model.predict([xa, xb])[0])
    twin = sg.clone_model(model)
    assert np.array_equal(twin.predict([xa, xb])[1], model.predict([xa, xb])[1])


def test_nested_models_and_sequences_with_a_free_length(tmp_path):
    rng = np.random.default_rng(2)
    encoder = sg.Sequential([nn.Dense(6, activation="relu"), nn.Dense(4)], name="encoder")
    tokens = sg.Input(shape=(None,), dtype="int64", name="tokens")
    assert tokens.shape == (None, None)
    seq = nn.Embedding(20, 5)(tokens)
    assert seq.shape == (None, None, 5)
    summary = nn.LSTM(7)(seq)
    extra = sg.Input(shape=(3,), name="extra")
    joined = nn.Concatenate()([summary, encoder(extra)])
    model = sg.Model([tokens, extra], nn.Dense(2)(joined))
    assert encoder in model.layers
    ids, feats = rng.integers(0, 20, (5, 9)), rng.normal(size=(5, 3)).astype(np.float32)
    out = model.predict([ids, feats])
    lstm, dense = model.layers[3], model.layers[-1]
    manual = dense(np.concatenate([lstm(model.layers[2](ids)).numpy(), encoder(feats).numpy()], -1))
    assert_close(out, manual.numpy(), rtol=1e-6)
    assert model.predict([ids[:, :4], feats]).shape == (5, 2)  # another length
    model.save(tmp_path / "nested")
    loaded = sg.load_model(tmp_path / "nested")
    assert np.array_equal(loaded.predict([ids, feats]), out)


def test_inputs_and_outputs_that_do_not_fit_are_named():
    model = _two_input_model()
    xa, xb, _, _ = _data()
    with pytest.raises(ValueError, match=r"2 inputs \(a, b\)"):
        model.predict(xa)
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        model.predict({"a": xa, "c": xb})
    loose = sg.Input((4,))
    with pytest.raises(ValueError, match="not among the model's inputs"):
        sg.Model(sg.Input((4,)), nn.Dense(2)(loose))
    x = sg.Input((4,))
    with pytest.raises(ValueError, match="two layers are named 'head'"):
        sg.Model(x, [nn.Dense(1, name="head")(x), nn.Dense(1, name="head")(x)])


def test_input_shapes_build_sequential_at_once():
    for model in (
        sg.Sequential([sg.Input((64,)), nn.Dense(32), nn.Dense(10)]),
        sg.Sequential([nn.Dense(32, input_shape=(64,)), nn.Dense(10)]),
        sg.Sequential([nn.Dense(32, input_dim=64), nn.Dense(10)]),
    ):
        assert model.built and model.count_params() == 64 * 32 + 32 + 330
    model = sg.Sequential()
    model.add(sg.Input((64,)))
    model.add(nn.Dense(32))
    assert model.count_params() == 64 * 32 + 32
    model.add(nn.Dense(10))
    assert model.count_params() == 64 * 32 + 32 + 330
    later = sg.Sequential([nn.Dense(32), nn.Dense(10)])
    assert later.count_params() == 0
    later.build((None, 64))
    assert later.built and later.count_params() == 64 * 32 + 32 + 330
    assert later.input_shape == (None, 64)


def test_dict_inputs_and_outputs_and_layers_made_frozen():
    inputs = {"title": sg.Input((5,)), "body": sg.Input((7,))}
    encode = nn.Dense(4, trainable=False)  # Keras's constructor keyword
    merged = nn.Add()([encode(nn.Dense(5)(inputs["title"])), encode(nn.Dense(5)(inputs["body"]))])
    model = sg.Model(inputs=inputs, outputs={"score": nn.Dense(1)(merged)})
    assert encode.trainable_weights == [] and len(model.trainable_weights) == 6
    rng = np.random.default_rng(7)
    data = {"title": rng.normal(size=(6, 5)), "body": rng.normal(size=(6, 7))}
    out = model.predict(data)
    assert set(out) == {"score"} and out["score"].shape == (6, 1)
    model.compile(optimizer="sgd", loss={"score": "mse"})
    before = encode.get_weights()
    model.fit(data, {"score": np.ones((6, 1))}, epochs=2, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, encode.get_weights()))
    twin = sg.Model.from_config(model.get_config())
    assert [la.trainable for la in twin.layers] == [la.trainable for la in model.layers]
