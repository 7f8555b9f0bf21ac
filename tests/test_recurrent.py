"""Recurrent layers and Embedding against PyTorch (float64), plus finite-difference checks of the
fused sequence primitives, state carrying and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close, numeric_grad, to_torch
from hypothesis import given
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import nn
from splitgrad.ops import recurrent as rnn_ops
from splitgrad.ops.embedding import EmbeddingLookup

KINDS = {
    "rnn": (nn.SimpleRNN, torch.nn.RNN, 1),
    "lstm": (nn.LSTM, torch.nn.LSTM, 2),
    "gru": (nn.GRU, torch.nn.GRU, 1),
}
TOL = {"rtol": 1e-9, "atol": 1e-11}


def make_pair(kind, units, features, **options):
    """Our float64 layer, built, and a torch module holding the same weights."""
    ours_cls, torch_cls, _ = KINDS[kind]
    layer = ours_cls(units, dtype="float64", **options)
    layer.build((None, None, features))
    layer.built = True
    ref = torch_cls(features, units, batch_first=True)
    with torch.no_grad():
        for key, value in layer.torch_state_dict().items():
            getattr(ref, key).copy_(torch.from_numpy(value))
    return layer, ref


def torch_states(kind, states):
    return (states[0][None], states[1][None]) if kind == "lstm" else states[0][None]


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(
    batch=st.integers(1, 3),
    steps=st.integers(1, 5),
    features=st.integers(1, 4),
    units=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_layer_matches_torch_all_outputs_and_gradients(kind, batch, steps, features, units, seed):
    rng = np.random.default_rng(seed)
    sg.seed(seed)
    layer, ref = make_pair(kind, units, features, return_sequences=True, return_state=True)
    nstates = KINDS[kind][2]
    x = rng.standard_normal((batch, steps, features))
    s0 = [rng.standard_normal((batch, units)) for _ in range(nstates)]
    x_sg = sg.Tensor(x, requires_grad=True)
    s0_sg = [sg.Tensor(s, requires_grad=True) for s in s0]
    out_sg = layer(x_sg, initial_state=s0_sg)

    x_t = to_torch(x)
    s0_t = [to_torch(s) for s in s0]
    seq_t, fin_t = ref(x_t, torch_states(kind, s0_t))
    fin_t = list(fin_t) if kind == "lstm" else [fin_t]
    outs_t = [seq_t] + [f[0] for f in fin_t]

    weights = [rng.standard_normal(o.shape) for o in outs_t]
    loss_sg = sum((o * w).sum() for o, w in zip(out_sg, weights))
    loss_t = sum((o * to_torch(w, False)).sum() for o, w in zip(outs_t, weights))
    loss_sg.backward()
    loss_t.backward()
    for ours, theirs in zip(out_sg, outs_t):
        assert_close(ours.data, theirs, **TOL, what="forward")
    assert_close(x_sg.grad, x_t.grad, **TOL, what="dx")
    for ours, theirs in zip(s0_sg, s0_t):
        assert_close(ours.grad, theirs.grad, **TOL, what="d initial state")
    grads = {
        "w_ih": ref.weight_ih_l0.grad.T,
        "w_hh": ref.weight_hh_l0.grad.T,
        "b_ih": ref.bias_ih_l0.grad,
        "b_hh": ref.bias_hh_l0.grad,
    }
    for key, theirs in grads.items():
        assert_close(getattr(layer, key).grad, theirs, **TOL, what=key)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_output_selection_and_go_backwards(kind, go_backwards, return_sequences):
    rng = np.random.default_rng(1)
    layer, ref = make_pair(kind, 3, 2, return_sequences=return_sequences, go_backwards=go_backwards)
    x = rng.standard_normal((2, 4, 2))
    x_sg = sg.Tensor(x, requires_grad=True)
    y = layer(x_sg)
    x_t = to_torch(x)
    seq_t, _ = ref(torch.flip(x_t, [1]) if go_backwards else x_t)
    y_t = seq_t if return_sequences else seq_t[:, -1]
    assert y.shape == tuple(y_t.shape)
    w = rng.standard_normal(y.shape)
    (y * w).sum().backward()
    (y_t * to_torch(w, False)).sum().backward()
    assert_close(y.data, y_t, **TOL)
    assert_close(x_sg.grad, x_t.grad, **TOL)
    assert_close(layer.w_hh.grad, ref.weight_hh_l0.grad.T, **TOL)


def test_simple_rnn_relu_matches_torch():
    rng = np.random.default_rng(2)
    layer = nn.SimpleRNN(4, activation="relu", return_sequences=True, dtype="float64")
    x = rng.standard_normal((3, 5, 2))
    y = layer(x)
    ref = torch.nn.RNN(2, 4, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        for key, value in layer.torch_state_dict().items():
            getattr(ref, key).copy_(torch.from_numpy(value))
    assert_close(y.data, ref(to_torch(x))[0], **TOL)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_bidirectional_matches_torch(kind, merge_mode):
    rng = np.random.default_rng(3)
    ours_cls, torch_cls, _ = KINDS[kind]
    layer = nn.Bidirectional(
        ours_cls(3, return_sequences=True), merge_mode=merge_mode, dtype="float64"
    )
    x = rng.standard_normal((2, 5, 4))
    x_sg = sg.Tensor(x, requires_grad=True)
    y = layer(x_sg)
    ref = torch_cls(4, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for key, value in layer.torch_state_dict().items():
            getattr(ref, key).copy_(torch.from_numpy(value))
    x_t = to_torch(x)
    y_t = ref(x_t)[0]
    if merge_mode == "sum":
        y_t = y_t[..., :3] + y_t[..., 3:]
    w = rng.standard_normal(y.shape)
    (y * w).sum().backward()
    (y_t * to_torch(w, False)).sum().backward()
    assert_close(y.data, y_t, **TOL)
    assert_close(x_sg.grad, x_t.grad, **TOL)
    assert_close(layer.backward_layer.w_ih.grad, ref.weight_ih_l0_reverse.grad.T, **TOL)


def test_bidirectional_final_states_and_config():
    rng = np.random.default_rng(4)
    layer = nn.Bidirectional(nn.LSTM(3, return_state=True), dtype="float64")
    x = rng.standard_normal((2, 5, 4))
    y, hf, cf, hb, cb = layer(x)
    ref = torch.nn.LSTM(4, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for key, value in layer.torch_state_dict().items():
            getattr(ref, key).copy_(torch.from_numpy(value))
    _, (h_n, c_n) = ref(to_torch(x))
    assert_close(y.data, torch.cat([h_n[0], h_n[1]], dim=-1), **TOL)
    for ours, theirs in zip((hf, hb, cf, cb), (h_n[0], h_n[1], c_n[0], c_n[1])):
        assert_close(ours.data, theirs, **TOL)
    clone = nn.Bidirectional.from_config(layer.get_config())
    assert clone.backward_layer.go_backwards and not clone.forward_layer.go_backwards


@pytest.mark.parametrize(
    "op,nstates,options",
    [
        (rnn_ops.SimpleRNNSeq, 1, {"activation": "tanh"}),
        (rnn_ops.SimpleRNNSeq, 1, {"activation": "relu"}),
        (rnn_ops.LSTMSeq, 2, {}),
        (rnn_ops.GRUSeq, 1, {}),
    ],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_primitive_finite_differences(op, nstates, options, reverse):
    rng = np.random.default_rng(5)
    batch, steps, features, units = 2, 3, 2, 3
    width = op.gates * units
    arrays = [
        rng.standard_normal((batch, steps, features)),
        rng.standard_normal((features, width)) * 0.5,
        rng.standard_normal((units, width)) * 0.5,
        rng.standard_normal(width) * 0.5,
        rng.standard_normal(width) * 0.5,
    ]
    arrays += [rng.standard_normal((batch, units)) for _ in range(nstates)]
    out_shape = (batch, steps + (1 if nstates == 2 else 0), units)
    w = rng.standard_normal(out_shape)

    def loss():
        return float((op.apply(*arrays, reverse=reverse, **options).data * w).sum())

    tensors = [sg.Tensor(a, requires_grad=True) for a in arrays]
    (op.apply(*tensors, reverse=reverse, **options) * w).sum().backward()
    for i, (a, t) in enumerate(zip(arrays, tensors)):
        assert_close(t.grad, numeric_grad(loss, a), rtol=1e-5, atol=1e-7, what=f"input {i}")


def test_embedding_matches_torch_with_repeated_ids():
    rng = np.random.default_rng(6)
    layer = nn.Embedding(7, 3, dtype="float64")
    ids = np.array([[1, 1, 6, 0], [6, 1, 2, 1]])
    y = layer(ids)
    ref = torch.nn.Embedding(7, 3)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.embeddings.data))
    y_t = ref(torch.from_numpy(ids))
    w = rng.standard_normal(y.shape)
    (y * w).sum().backward()
    (y_t * to_torch(w, False)).sum().backward()
    assert_close(y.data, y_t, **TOL)
    assert_close(layer.embeddings.grad, ref.weight.grad, **TOL)
    assert layer.embeddings.grad[[3, 4, 5]].sum() == 0


def test_embedding_lookup_finite_differences_and_init():
    rng = np.random.default_rng(7)
    table = rng.standard_normal((5, 2))
    ids = np.array([4, 0, 4, 4, 2])
    w = rng.standard_normal((5, 2))
    t = sg.Tensor(table, requires_grad=True)
    (EmbeddingLookup.apply(t, ids) * w).sum().backward()
    expected = numeric_grad(lambda: (table[ids] * w).sum(), table)
    assert_close(t.grad, expected, rtol=1e-6, atol=1e-8)
    sg.seed(0)
    big = nn.Embedding(400, 50)
    big.build(None)
    assert abs(big.embeddings.data.std() - 1.0) < 0.02 and big.embeddings.dtype == np.float32


def test_embedding_errors_and_integer_inputs():
    layer = nn.Embedding(5, 2)
    with pytest.raises(ValueError, match=r"embedding.*got id 5.*input_dim is 5"):
        layer(np.array([[0, 5]]))
    with pytest.raises(ValueError, match="got id -1"):
        layer(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="integer ids"):
        layer(np.array([0.5]))
    assert layer(np.array([[1, 2]], dtype=np.int32)).shape == (1, 2, 2)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_carried_state_step_by_step_equals_full_sequence(kind):
    rng = np.random.default_rng(8)
    layer, _ = make_pair(kind, 4, 3, return_sequences=True, return_state=True)
    x = rng.standard_normal((2, 7, 3))
    full, *final = layer(x)
    states, steps = None, []
    for t in range(7):
        y, *states = layer(x[:, t : t + 1], initial_state=states)
        states = [s.detach() for s in states]  # truncated BPTT: cut the graph at each chunk
        steps.append(y.data)
    assert_close(np.concatenate(steps, axis=1), full.data, rtol=1e-12, atol=1e-12)
    for ours, theirs in zip(states, final):
        assert_close(ours.data, theirs.data, rtol=1e-12, atol=1e-12)


def test_long_sequence_trains_without_recursion_errors():
    rng = np.random.default_rng(9)
    model = nn.Sequential(
        [nn.Embedding(11, 4), nn.LSTM(8, return_sequences=True), nn.GRU(5), nn.Dense(1)]
    )
    ids = rng.integers(0, 11, size=(2, 200))
    loss = (model(ids) ** 2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert model.layers[1].w_hh.grad.dtype == np.float32


def test_layer_errors_name_layer_and_shapes():
    layer = nn.LSTM(3, name="enc")
    with pytest.raises(ValueError, match=r"'enc'.*3-D input"):
        layer(np.zeros((2, 4)))
    layer(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"'enc'.*expects 5 features.*\(2, 4, 6\)"):
        layer(np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match=r"'enc'.*initial state c.*\(2, 3\).*\(2, 4\)"):
        layer(np.zeros((2, 4, 5)), initial_state=[np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"'enc'.*expects 2 initial state"):
        layer(np.zeros((2, 4, 5)), initial_state=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="length 0"):
        layer(np.zeros((2, 0, 5)))


def test_configs_round_trip_and_init_bounds():
    sg.seed(0)
    layer = nn.GRU(16, return_sequences=True, go_backwards=True)
    clone = nn.GRU.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    layer.build((None, None, 5))
    bound = 1 / np.sqrt(16)
    for p in layer.weights:
        assert p.dtype == np.float32 and np.abs(p.data).max() <= bound
    assert layer.w_ih.shape == (5, 48) and layer.w_hh.shape == (16, 48)
    assert nn.SimpleRNN(2, activation="relu").get_config()["activation"] == "relu"
    with pytest.raises(ValueError, match="activation"):
        nn.SimpleRNN(2, activation="sigmoid")


def test_reused_buffers_keep_two_live_graphs_apart():
    rng = np.random.default_rng(10)
    layer, _ = make_pair("lstm", 3, 2, return_sequences=True)
    x1, x2 = rng.standard_normal((2, 2, 4, 2))
    with sg.no_grad():
        layer(x1)  # an inference call in between returns its buffers at once
    expected = []
    for x in (x1, x2):
        layer.zero_grad()
        layer(x).sum().backward()
        expected.append(layer.w_hh.grad.copy())
    layer.zero_grad()
    y1, y2 = layer(x1), layer(x2)  # both graphs alive: their buffers must differ
    y1.sum().backward()
    assert_close(layer.w_hh.grad, expected[0], rtol=1e-12, atol=1e-12)
    layer.zero_grad()
    y2.sum().backward()
    assert_close(layer.w_hh.grad, expected[1], rtol=1e-12, atol=1e-12)


def test_torch_layout_round_trip_and_mismatch_error():
    ref = torch.nn.GRU(3, 2, batch_first=True)
    layer = nn.GRU(2, dtype="float64")
    layer.load_torch_state_dict(ref.state_dict())  # builds the unbuilt layer from the shapes
    assert layer.built and layer.w_ih.shape == (3, 6)
    for key, value in layer.torch_state_dict().items():
        assert_close(value, ref.state_dict()[key], rtol=1e-7, atol=1e-8)
    with pytest.raises(ValueError, match=r"w_hh.*\(6, 2\).*\(9, 3\)"):
        nn.GRU(3).load_torch_state_dict({**ref.state_dict(), "weight_ih_l0": torch.zeros(9, 3)})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_compiled_steps_give_the_numpy_bits(dtype):
    """The LSTM's compiled time steps (_kernels/recurrent_jit.py) against the NumPy loops they
    replace: the same bits for the outputs and every gradient, with the final cell state as an
    output too (its gradient starts the carried dc) and an initial state that needs gradients."""
    pytest.importorskip("numba")
    from helpers import assert_bitwise_equal, compiled_and_numpy

    rng = np.random.default_rng(5)
    layer = nn.LSTM(7, return_sequences=True, return_state=True, dtype=dtype)
    x = rng.standard_normal((5, 9, 3)).astype(dtype)
    h0, c0 = (rng.standard_normal((5, 7)).astype(dtype) for _ in range(2))
    layer(x)

    def step():
        xt, ht, ct = (sg.Tensor(a, requires_grad=True) for a in (x, h0, c0))
        seq, h, c = layer(xt, initial_state=[ht, ct])
        ((seq * seq).sum() + (h * 3).sum() + (c * c).sum()).backward()
        out = [seq.data, h.data, c.data, xt.grad, ht.grad, ct.grad]
        out += [w.grad.copy() for w in layer.weights]
        for w in layer.weights:
            w.grad = None
        return out

    assert_bitwise_equal(*compiled_and_numpy(step))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_compiled_gradient_gives_the_numpy_bits(dtype):
    """The embedding's compiled scatter (_kernels/embedding_jit.py) against the sorted
    reduceat it replaces (which sums pairwise): equal to rounding, with ids repeated, ids
    unused and −0 rows, and the same bits run to run."""
    pytest.importorskip("numba")
    from helpers import compiled_and_numpy

    from splitgrad.ops.embedding import embedding

    rng = np.random.default_rng(2)
    weight = rng.standard_normal((11, 6)).astype(dtype)
    ids = rng.integers(0, 9, (7, 13))  # ids 9 and 10 never appear
    g = rng.standard_normal((7, 13, 6)).astype(dtype)
    g[ids == 3] = -0.0

    def grad():
        w = sg.Tensor(weight, requires_grad=True)
        (embedding(w, ids) * sg.Tensor(g)).sum().backward()
        return [w.grad]

    (compiled,), (numpy_path,) = compiled_and_numpy(grad)  # compiled: same bits twice
    tol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(compiled, numpy_path, rtol=tol, atol=tol)
    assert np.signbit(compiled[3]).all() and np.signbit(numpy_path[3]).all()  # −0 stays
    assert not compiled[9:].any()
