"""stateful=True and reset_states() on the recurrent layers (Keras 3): each batch continues from
the previous batch's final state, as a constant (truncated BPTT), checked against PyTorch
(float64) fed batch after batch with its hidden state carried and detached; the MIT 6.S191
lab 1 music model's generation loop, written as the lab writes it; the batch-size error; and
what saving and ONNX export do with a stateful layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close

import splitgrad as sg
from splitgrad import nn
from splitgrad.tensor import Tensor

KINDS = {
    "rnn": (nn.SimpleRNN, torch.nn.RNN),
    "lstm": (nn.LSTM, torch.nn.LSTM),
    "gru": (nn.GRU, torch.nn.GRU),
}
TOL = {"rtol": 1e-9, "atol": 1e-11}


def make_pair(kind, units, features, **options):
    """Our float64 layer, built, and a torch module holding the same weights."""
    ours_cls, torch_cls = KINDS[kind]
    layer = ours_cls(units, dtype="float64", **options)
    layer.build((None, None, features))
    ref = torch_cls(features, units, batch_first=True)
    with torch.no_grad():
        for key, value in layer.torch_state_dict().items():
            getattr(ref, key).copy_(torch.from_numpy(value))
    return layer, ref


def build_resets():
    """True when Model.build leaves a stateful layer fresh (the lead's lines in model.py)."""
    model = nn.Sequential([nn.LSTM(2, stateful=True)])
    model.build((1, 3, 2))
    return model.layers[0].states is None


needs_build_reset = pytest.mark.skipif(
    not build_resets(), reason="needs Model.build/build_from_sample to call reset_states()"
)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_three_batches_match_torch_with_the_state_carried_and_detached(kind, return_sequences):
    rng = np.random.default_rng(1)
    layer, ref = make_pair(kind, 4, 3, stateful=True, return_sequences=return_sequences)
    state = None
    for step in range(3):
        x = rng.standard_normal((2, 5, 3))
        out_w = rng.standard_normal((2, 5, 4) if return_sequences else (2, 4))
        xt = Tensor(x.copy(), requires_grad=True)
        y = layer(xt)
        (y * out_w).sum().backward()

        x_ref = torch.tensor(x, requires_grad=True)
        y_ref, state = ref(x_ref, state)
        state = tuple(s.detach() for s in state) if kind == "lstm" else state.detach()
        y_ref = y_ref if return_sequences else y_ref[:, -1]
        (y_ref * torch.from_numpy(out_w)).sum().backward()

        what = f"{kind} batch {step}"
        assert_close(y.data, y_ref, **TOL, what=what)
        assert_close(xt.grad, x_ref.grad, **TOL, what=what + " dx")
        grads = {
            "w_ih": ref.weight_ih_l0.grad.T,
            "w_hh": ref.weight_hh_l0.grad.T,
            "b_ih": ref.bias_ih_l0.grad,
            "b_hh": ref.bias_hh_l0.grad,
        }
        for key, expected in grads.items():
            assert_close(getattr(layer, key).grad, expected, **TOL, what=f"{what} d{key}")
        layer.zero_grad()
        ref.zero_grad()
    # the carried state is torch's final (h[, c]) of the third batch
    theirs = state if kind == "lstm" else (state,)
    for ours, t in zip(layer.states, theirs):
        assert_close(ours, t[0], **TOL)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_chunks_equal_the_whole_sequence_and_reset_restores_a_fresh_start(kind):
    rng = np.random.default_rng(2)
    layer, _ = make_pair(kind, 5, 3, stateful=True, return_sequences=True)
    plain = KINDS[kind][0].from_config({**layer.get_config(), "stateful": False})
    plain.build((None, None, 3))
    plain.set_weights(layer.get_weights())
    x = rng.standard_normal((3, 12, 3))
    whole = plain(x).data
    chunks = [layer(x[:, i : i + 4]).data for i in (0, 4, 8)]
    assert_close(np.concatenate(chunks, axis=1), whole, rtol=1e-12, atol=1e-12)
    assert layer.states is not None and layer.states[0].shape == (3, 5)

    layer.reset_states()
    assert layer.states is None
    assert_close(layer(x[:, :4]).data, whole[:, :4], rtol=1e-12, atol=1e-12)
    layer.reset_state()  # Keras 3's name
    assert_close(layer(x[:, :4]).data, whole[:, :4], rtol=1e-12, atol=1e-12)


def test_a_different_batch_size_is_a_clear_error_until_reset():
    layer = nn.LSTM(3, stateful=True, name="melody")
    layer(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError) as info:
        layer(np.zeros((3, 4, 5)))
    message = str(info.value)
    for part in ("'melody'", "stateful", "state of 2 sequences", "batch of 3", "reset_states()"):
        assert part in message
    assert "stateful=False" in message
    layer.reset_states()
    assert layer(np.zeros((3, 4, 5))).shape == (3, 3)  # any size after a reset


def test_initial_state_wins_for_that_batch_and_return_state_reports_the_carried_state():
    rng = np.random.default_rng(3)
    layer, _ = make_pair("lstm", 4, 2, stateful=True, return_state=True)
    x = rng.standard_normal((2, 3, 2))
    start = [rng.standard_normal((2, 4)), rng.standard_normal((2, 4))]
    _, h, c = layer(x, initial_state=start)
    assert_close(layer.states[0], h.data, rtol=0, atol=0)
    assert_close(layer.states[1], c.data, rtol=0, atol=0)
    plain = nn.LSTM(4, return_state=True, dtype="float64")
    plain.build((None, None, 2))
    plain.set_weights(layer.get_weights())
    y2 = layer(x)[0]  # continues from (h, c)
    assert_close(y2.data, plain(x, initial_state=[h.data, c.data])[0].data, rtol=0, atol=1e-15)


def test_the_state_is_not_a_weight_and_stateful_is_in_the_config():
    layer = nn.GRU(3, stateful=True, return_sequences=True)
    layer(np.ones((2, 4, 5)))
    assert len(layer.get_weights()) == 4 and len(layer.state_dict()) == 4
    assert layer.count_params() == 3 * (5 * 3 + 3 * 3 + 2 * 3)
    clone = nn.GRU.from_config(layer.get_config())
    assert clone.stateful and clone.states is None
    assert not nn.GRU(3).stateful


def test_bidirectional_carries_both_directions_and_resets_both():
    rng = np.random.default_rng(4)
    sg.seed(4)
    wrap = nn.Bidirectional(nn.LSTM(3, stateful=True, return_sequences=True, dtype="float64"))
    x = rng.standard_normal((2, 4, 2))
    first = wrap(x).data
    assert wrap.stateful and len(wrap.states) == 4
    assert not np.allclose(wrap(x).data, first)  # the second batch starts from the first's state
    wrap.reset_states()
    assert wrap.states is None
    assert_close(wrap(x).data, first, rtol=0, atol=0)
    with pytest.raises(AttributeError, match="stateful=True"):
        nn.Bidirectional(nn.GRU(2)).reset_states()


def test_model_reset_states_reaches_every_stateful_layer_inside():
    model = nn.Sequential(
        [
            nn.LSTM(3, stateful=True, return_sequences=True),
            nn.Bidirectional(nn.GRU(2, stateful=True, return_sequences=True)),
            nn.SimpleRNN(2),  # not stateful: left alone, never an error
        ]
    )
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    model.reset_states()
    first = model(x).data
    assert model.layers[0].states is not None and model.layers[1].states is not None
    model.reset_states()
    assert model.layers[0].states is None and model.layers[1].states is None
    assert_close(model(x).data, first, rtol=0, atol=0)
    model.reset_state()  # Keras 3's name
    assert model.layers[0].states is None


def test_keras_constructor_spellings_of_the_lab_and_the_ones_refused():
    sg.seed(0)
    layer = nn.LSTM(
        8, recurrent_initializer="glorot_uniform", recurrent_activation="sigmoid", stateful=True
    )
    layer.build((None, None, 5))
    bound = np.sqrt(6 / (8 + 32))  # Keras's glorot on the (units, 4·units) recurrent kernel
    assert np.abs(layer.w_hh.data).max() <= bound
    assert np.abs(layer.w_hh.data).max() > 1 / np.sqrt(8)  # not PyTorch's default bound
    assert np.abs(layer.w_ih.data).max() <= 1 / np.sqrt(8)  # the kernel keeps PyTorch's
    zero = nn.GRU(4, bias_initializer="zeros")
    zero.build((None, None, 2))
    assert not zero.b_ih.data.any() and not zero.b_hh.data.any()
    assert nn.LSTM.from_config(layer.get_config()).initializers == layer.initializers
    with pytest.raises(ValueError, match="recurrent_activation must be 'sigmoid'"):
        nn.LSTM(2, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="activation must be 'tanh'"):
        nn.GRU(2, activation="relu")
    with pytest.raises(ValueError, match="unknown initializer 'orthogonal'"):
        nn.LSTM(2, recurrent_initializer="orthogonal")


# ----- the MIT 6.S191 lab 1 music model, as the lab writes it --------------------------------
def LSTM(rnn_units):
    return nn.LSTM(
        rnn_units,
        return_sequences=True,
        recurrent_initializer="glorot_uniform",
        recurrent_activation="sigmoid",
        stateful=True,
    )


def build_model(vocab_size, embedding_dim, rnn_units, batch_size):
    return sg.Sequential(
        [
            nn.Embedding(vocab_size, embedding_dim, batch_input_shape=[batch_size, None]),
            LSTM(rnn_units),
            nn.Dense(vocab_size),
        ]
    )


def test_lab1_generation_one_token_at_a_time_matches_the_whole_sequence():
    sg.seed(6)
    vocab, rng = 12, np.random.default_rng(6)
    trained = build_model(vocab, 8, 16, batch_size=4)
    loss = sg.losses.SparseCategoricalCrossentropy(from_logits=True)
    trained.compile(optimizer=sg.optim.Adam(1e-2), loss=loss)
    trained.reset_states()
    ids = rng.integers(0, vocab, size=(8, 10))
    trained.fit(ids[:, :-1], ids[:, 1:], batch_size=4, epochs=2, shuffle=False, verbose=0)

    model = build_model(vocab, 8, 16, batch_size=1)  # the lab rebuilds for one sequence
    model.build((1, None))
    model.set_weights(trained.get_weights())

    model.reset_states()  # the lab's generate_text starts here
    input_eval = np.array([[3, 1, 4]])
    tokens = [3, 1, 4]
    step_logits = []
    for _ in range(12):
        predictions = model(input_eval)[0]  # (time, vocab) logits
        step_logits.append(predictions.data[-1])
        predicted_id = int(rng.choice(vocab, p=_softmax(predictions.data[-1])))
        input_eval = np.array([[predicted_id]])
        tokens.append(predicted_id)

    plain = sg.Sequential([nn.Embedding(vocab, 8), nn.LSTM(16, return_sequences=True)])
    plain.add(nn.Dense(vocab))
    plain(np.array([tokens]))
    plain.set_weights(trained.get_weights())
    whole = plain(np.array([tokens[:-1]])).data[0]
    assert_close(np.array(step_logits), whole[2:], rtol=1e-4, atol=1e-5)

    model.reset_states()  # a new song starts from zeros again
    assert_close(model(np.array([[3, 1, 4]])).data[0, -1], step_logits[0], rtol=0, atol=0)


def _softmax(z):
    e = np.exp(z - z.max())
    return (e / e.sum()).astype(np.float64) / (e / e.sum()).astype(np.float64).sum()


@needs_build_reset
def test_building_leaves_the_state_fresh_and_fit_keeps_the_batch_size():
    model = build_model(10, 4, 6, batch_size=1)  # built at once, by a probe on zeros
    assert model.layers[1].states is None
    fresh = build_model(10, 4, 6, batch_size=None)
    fresh.compile("adam", sg.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.random.default_rng(7).integers(0, 10, size=(8, 6))
    fresh.fit(ids[:, :-1], ids[:, 1:], batch_size=4, shuffle=False, verbose=0)  # probe of 1 row
    assert fresh.layers[1].states[0].shape == (4, 6)


@needs_build_reset
def test_a_functional_model_starts_fresh_after_its_shape_probes():
    inputs = sg.Input(shape=(None, 3), batch_size=2)
    lstm = nn.LSTM(4, stateful=True, return_sequences=True)
    model = sg.Model(inputs, nn.Dense(1)(lstm(inputs)))
    assert lstm.states is None
    x = np.random.default_rng(9).standard_normal((2, 6, 3))
    whole = model(x).data
    model.reset_states()
    halves = [model(x[:, :3]).data, model(x[:, 3:]).data]
    assert_close(np.concatenate(halves, axis=1), whole, rtol=1e-5, atol=1e-6)


@needs_build_reset
def test_a_saved_stateful_model_loads_with_a_fresh_state(tmp_path):
    # Declared without a batch_input_shape: a declared free axis (None) is a separate matter.
    model = sg.Sequential([nn.Embedding(10, 4), LSTM(6), nn.Dense(10)])
    ids = np.random.default_rng(8).integers(0, 10, size=(2, 5))
    first = model(ids).data
    model(ids)
    model.save(tmp_path / "m")
    loaded = sg.load_model(tmp_path / "m")
    assert loaded.layers[1].stateful and loaded.layers[1].states is None
    assert_close(loaded(ids).data, first, rtol=0, atol=0)


def test_onnx_export_refuses_a_stateful_layer_by_name():
    pytest.importorskip("onnx")
    from splitgrad.interop import onnx_export as ox
    from splitgrad.interop.onnx_graph import UnsupportedLayer

    model = sg.Sequential([nn.Embedding(10, 4), nn.LSTM(6, stateful=True, name="song")])
    model.build((1, 5))
    with pytest.raises(UnsupportedLayer, match=r"'song'.*stateful=True.*stateful=False"):
        ox.to_onnx(model, sample=np.zeros((1, 5)))
