"""An Embedding feeding a SimpleRNN, LSTM or GRU in a Sequential looks its input projection up
by id (layers/fusion.py, ops/recurrent.py's `ids=`): forward and every weight gradient equal
PyTorch's Embedding → RNN in float64, equal the layers run one by one (hypothesis over sizes,
layer kinds, go_backwards), carry a stateful layer's state the same way, and every case the
fused path does not cover runs the layers one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close, to_torch
from hypothesis import given, settings
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import nn
from splitgrad.layers import fusion, per_example
from splitgrad.ops.embedding import EmbeddingLookup

_KINDS = {"SimpleRNN": (nn.SimpleRNN, torch.nn.RNN), "LSTM": (nn.LSTM, torch.nn.LSTM)}
_KINDS["GRU"] = (nn.GRU, torch.nn.GRU)


def _model(kind="LSTM", vocab=7, dim=5, units=6, dtype="float64", build=True, **rnn):
    """Embedding → RNN → Dense(3), built by a one-id call (the first call runs one by one)."""
    sg.seed(0)
    model = nn.Sequential(
        [
            nn.Embedding(vocab, dim, dtype=dtype),
            _KINDS[kind][0](units, return_sequences=True, dtype=dtype, **rnn),
            nn.Dense(3, dtype=dtype),
        ]
    )
    if build:
        model(np.zeros((1, 1), int))
        model.reset_states()
    return model


def _run(model, ids, r):
    """(output, every weight's gradient, the ops that read the ids) for the loss Σ y·r."""
    model.zero_grad()
    y = model(ids)
    (y * sg.Tensor(r)).sum().backward()
    return (
        y.numpy().copy(),
        [None if w.grad is None else w.grad.copy() for w in model.weights],
        _lookups(y),
    )


def _lookups(y):
    """How many EmbeddingLookup ops the graph of y holds (0 when the fused path ran)."""
    seen, stack, count = set(), [y], 0
    while stack:
        t = stack.pop()
        ctx = getattr(t, "_ctx", None)
        if ctx is None or id(ctx) in seen:
            continue
        seen.add(id(ctx))
        count += isinstance(ctx, EmbeddingLookup)
        stack.extend(p for p in ctx.parents if p is not None)
    return count


def _unfused(monkeypatch):
    monkeypatch.setattr(fusion, "embedding_recurrent", lambda embedding, rnn, x: None)


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_fused_embedding_rnn_matches_torch(kind):
    rng = np.random.default_rng(1)
    model = _model(kind)
    ids = rng.integers(0, 7, (3, 4))  # 12 ids ≥ 7 rows: the fused path
    r = rng.standard_normal((3, 4, 3))
    y, grads, lookups = _run(model, ids, r)
    assert lookups == 0

    emb, rnn, dense = model.layers
    table = to_torch(emb.embeddings.data)
    ref = _KINDS[kind][1](5, 6, batch_first=True)
    ref.load_state_dict({k: torch.tensor(v) for k, v in rnn.torch_state_dict().items()})
    h = ref(torch.nn.functional.embedding(torch.tensor(ids), table))[0]
    w, b = to_torch(dense.kernel.data), to_torch(dense.bias.data)
    yt = h @ w + b
    (yt * to_torch(r, False)).sum().backward()
    assert_close(y, yt, what="forward")
    assert_close(grads[0], table.grad, what="dE")
    torch_grads = [p.grad.numpy() for p in ref.parameters()]  # w_ih, w_hh, b_ih, b_hh
    assert_close(grads[1], torch_grads[0].T, what="dW_ih")
    assert_close(grads[2], torch_grads[1].T, what="dW_hh")
    assert_close(grads[3], torch_grads[2], what="db_ih")
    assert_close(grads[4], torch_grads[3], what="db_hh")
    assert_close(grads[5], w.grad, what="dense dW")


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(_KINDS)),
    vocab=st.integers(1, 9),
    dim=st.integers(1, 6),
    units=st.integers(1, 7),
    batch=st.integers(1, 4),
    steps=st.integers(1, 6),
    backwards=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_equals_layers_one_by_one(kind, vocab, dim, units, batch, steps, backwards, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, steps))
    r = rng.standard_normal((batch, steps, 3))
    results = []
    for fused in (True, False):
        model = _model(kind, vocab, dim, units, go_backwards=backwards)
        if not fused:
            with pytest.MonkeyPatch.context() as patch:
                _unfused(patch)
                results.append(_run(model, ids, r))
        else:
            results.append(_run(model, ids, r))
    (y, grads, lookups), (y1, grads1, lookups1) = results
    assert lookups1 == 1 and lookups == (0 if ids.size >= vocab else 1)
    assert_close(y, y1, rtol=1e-10, atol=1e-12, what="forward")
    for g, g1 in zip(grads, grads1):
        assert_close(g, g1, rtol=1e-10, atol=1e-12, what="gradient")


def test_music_model_in_float32_agrees_with_layers_one_by_one(monkeypatch):
    # The irish-lstm shapes (scaled down in units): float32, ids repeat many times.
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 83, (8, 100))
    r = rng.standard_normal((8, 100, 3)).astype(np.float32)
    y, grads, lookups = _run(_model("LSTM", 83, 32, 64, dtype="float32"), ids, r)
    _unfused(monkeypatch)
    y1, grads1, _ = _run(_model("LSTM", 83, 32, 64, dtype="float32"), ids, r)
    assert lookups == 0 and y.dtype == np.float32
    assert_close(y, y1, rtol=1e-5, atol=1e-6, what="forward")
    for g, g1 in zip(grads, grads1):
        scale = np.abs(g1).max()
        assert_close(g / scale, g1 / scale, rtol=0, atol=1e-5, what="gradient")


def test_stateful_layer_carries_the_same_state(monkeypatch):
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 7, (2, 5)) for _ in range(3)]
    outs = []
    for fused in (True, False):
        if not fused:
            _unfused(monkeypatch)
        model = _model("LSTM", stateful=True)
        outs.append([model(c).numpy().copy() for c in chunks])
        assert model.layers[1].states is not None
    for a, b in zip(*outs):
        assert_close(a, b, rtol=1e-12, atol=1e-13, what="stateful output")


def test_frozen_embedding_and_inference(monkeypatch):
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 7, (4, 3))
    model = _model("GRU")
    model.layers[0].trainable = False
    y, grads, lookups = _run(model, ids, np.ones((4, 3, 3)))
    assert lookups == 0 and grads[0] is None  # the frozen table
    assert all(g is not None for g in grads[1:])  # W_ih's gradient still comes through it
    with sg.no_grad():
        y_eval = model(ids).numpy()
    assert_close(y_eval, y, rtol=1e-12, atol=1e-13)
    _unfused(monkeypatch)
    assert_close(_model("GRU")(ids).numpy(), y, rtol=1e-12, atol=1e-13, what="unfused")


def test_cases_the_fused_path_does_not_cover_run_one_by_one():
    rng = np.random.default_rng(5)
    # fewer ids than table rows: the table would cost more than it saves
    model = _model("LSTM", vocab=50)
    assert _run(model, rng.integers(0, 50, (2, 3)), np.ones((2, 3, 3)))[2] == 1
    # layers of different dtypes
    sg.seed(0)
    mixed = nn.Sequential(
        [nn.Embedding(3, 4, dtype="float32"), nn.LSTM(2, return_sequences=True), nn.Dense(1)]
    )
    mixed.layers[1].dtype = np.dtype("float64")
    ids = rng.integers(0, 3, (2, 4))
    mixed(ids)
    assert fusion.embedding_recurrent(mixed.layers[0], mixed.layers[1], ids) is None
    # per-example gradients are being recorded (DP-SGD)
    model = _model("LSTM")
    model(ids)
    with per_example.recording():
        assert fusion.embedding_recurrent(model.layers[0], model.layers[1], ids) is None
    # three axes of ids, and layers not built yet
    assert fusion.embedding_recurrent(model.layers[0], model.layers[1], np.zeros((2, 2, 2))) is None
    fresh = _model("LSTM", build=False)
    assert fusion.embedding_recurrent(fresh.layers[0], fresh.layers[1], ids) is None


def test_errors_name_the_layer_as_one_by_one():
    model = _model("LSTM")
    with pytest.raises(ValueError, match="got id 9, but input_dim is 7"):
        model(np.full((2, 5), 9))
    with pytest.raises(TypeError, match="expects integer ids"):
        model(np.full((2, 5), 0.5))
