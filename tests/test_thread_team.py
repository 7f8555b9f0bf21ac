"""splitgrad's own thread team (_kernels/thread_team.py) and the panel products of the recurrent
loops (_kernels/panels.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info, threadpool_limits

from splitgrad import nn
from splitgrad._kernels import panels as panel_matmul
from splitgrad._kernels import thread_team
from splitgrad.ops import recurrent as rnn_ops
from splitgrad.tensor import Tensor


def _blas_counts():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def split_everything(monkeypatch):
    """Split every product, however small, over a team of at least two."""
    monkeypatch.setattr(thread_team, "_SPLIT_WORK", 0)
    real = thread_team.team_size
    monkeypatch.setattr(thread_team, "team_size", lambda: max(2, real()))


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 9),
    k=st.integers(1, 7),
    n=st.integers(1, 6),
    stack=st.integers(0, 3),
    transposed=st.booleans(),
)
def test_matmul_equals_numpy(m, k, n, stack, transposed):
    """Inside own_threads with a team of two, every product is split in row blocks."""
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = rng.standard_normal((k, m)).T if transposed else rng.standard_normal((m, k))
    b = rng.standard_normal((stack, k, n) if stack else (k, n))
    calls = []
    real_run, saved = thread_team.run_pieces, (thread_team._SPLIT_WORK, thread_team.team_size)
    thread_team.run_pieces = lambda pieces: calls.append(1) or real_run(pieces)
    try:
        with thread_team.own_threads:
            team = thread_team._team
            thread_team._SPLIT_WORK, thread_team._team = 0, 2
            thread_team.team_size = lambda: 2
            try:
                got = thread_team.matmul(a, b)
            finally:
                thread_team._team = team
    finally:
        thread_team.run_pieces = real_run
        thread_team._SPLIT_WORK, thread_team.team_size = saved
    np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-12)
    assert len(calls) == (1 if m >= 4 else 0)  # a block per member needs m ≥ 2·team


def test_matmul_outside_own_threads_is_numpy(monkeypatch):
    monkeypatch.setattr(thread_team, "_SPLIT_WORK", 0)
    monkeypatch.setattr(thread_team, "run_pieces", lambda pieces: pytest.fail("split outside"))
    a, b = np.ones((8, 3)), np.ones((3, 2))
    np.testing.assert_array_equal(thread_team.matmul(a, b), a @ b)


def test_run_pieces_reraises_a_helper_error_and_stays_usable(split_everything):
    done = []

    def boom():
        raise ValueError("piece failed")

    with pytest.raises(ValueError, match="piece failed"):
        thread_team.run_pieces([lambda: done.append(1), boom])
    with pytest.raises(ValueError, match="piece failed"):
        thread_team.run_pieces([boom, lambda: done.append(2)])
    thread_team.run_pieces([lambda: done.append(3), lambda: done.append(4)])
    assert sorted(done) == [1, 2, 3, 4]


@pytest.mark.parametrize("spin", [True, False], ids=["spinning", "locks only"])
def test_hand_offs_with_and_without_spinning(split_everything, monkeypatch, spin):
    """Helpers wait for work by spinning (spin_jit) or, where numba is missing, on their locks
    alone: either way every piece runs once, on both threads, hand-off after hand-off."""
    if not spin:
        monkeypatch.setattr(thread_team, "_spin", [None])
    seen = []
    for round_ in range(50):
        thread_team.run_pieces([lambda r=round_: seen.append(r), lambda r=round_: seen.append(r)])
    assert sorted(seen) == sorted(list(range(50)) * 2)
    assert all(not helper.flags.any() for helper in thread_team._helpers)


def test_own_threads_restores_the_blas_and_nests():
    before = _blas_counts()
    with thread_team.own_threads:
        inside = _blas_counts()
        with thread_team.own_threads:
            assert _blas_counts() == inside
        assert _blas_counts() == inside
        assert thread_team.team_size() == max(before, default=1)
    assert _blas_counts() == before
    if max(before, default=1) > 1:
        assert max(inside) == 1


def test_one_thread_blas_means_a_team_of_one():
    with threadpool_limits(1, user_api="blas"):
        assert thread_team.team_size() == 1
        assert thread_team.row_groups(8) == [slice(0, 8)]
        with thread_team.own_threads:
            assert thread_team.team_size() == 1


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("layout", [(8, 16), (4, 8), (16, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_panel_matmul_equals_numpy(monkeypatch, transposed, layout, dtype):
    """Panels of (kc, width), including K split into several panels (partial sums)."""
    monkeypatch.setattr(panel_matmul, "plan", lambda k, n, rows, dtype, small: layout)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 16) if transposed else (16, 32)).astype(dtype)
    w = w.T if transposed else w
    x = rng.standard_normal((5, w.shape[0])).astype(dtype)
    out = np.empty((5, w.shape[1]), dtype)
    pm = panel_matmul.PanelMatmul(w, 5)
    assert pm.layout == layout
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(pm(x, out), x @ w, rtol=tol, atol=tol)
    np.testing.assert_allclose(pm(x[:3], out[:3]), x[:3] @ w, rtol=tol, atol=tol)


def test_panel_plan():
    assert panel_matmul.plan(1024, 4096, 4) == (1024, 64)
    assert panel_matmul.plan(4096, 1024, 4) == (1024, 64)
    assert panel_matmul.plan(1024, 256, 16) == (512, 64)  # more rows: shorter panels
    assert panel_matmul.plan(1024, 4096, 64) is None  # many rows: one plain matmul
    assert panel_matmul.plan(32, 128, 4) is None  # small weight: one plain matmul
    assert panel_matmul.plan(1024, 4100, 4) is None  # no panel width divides N
    assert panel_matmul.plan(1024, 4096, 4, np.float64) is None  # measured for float32 only
    assert panel_matmul.plan(1024, 4096, 4, small=False) is None  # no small-matrix kernel


def test_panels_only_with_openblas_avx512_kernels(monkeypatch):
    """Panels pay off only through OpenBLAS's AVX-512 small-matrix kernel (SkylakeX here; not
    under OPENBLAS_CORETYPE=Haswell): small_kernel() says which one this process runs."""
    arch = [lib.get("architecture", "") for lib in threadpool_info() if lib["user_api"] == "blas"]
    want = bool(arch) and all(
        a.lower() in ("skylakex", "cooperlake", "sapphirerapids") for a in arch
    )
    monkeypatch.setattr(panel_matmul, "_small", [])
    assert panel_matmul.small_kernel() is want
    w = np.ones((1024, 4096), np.float32)
    assert (panel_matmul.PanelMatmul(w, 8).layout is not None) is want


@pytest.mark.parametrize("transposed", [False, True])
def test_column_split_equals_numpy(split_everything, transposed):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((9, 7) if transposed else (7, 9))
    w = w.T if transposed else w
    x = rng.standard_normal((4, 7))
    out = np.empty((4, 9))
    with thread_team.own_threads:
        split = panel_matmul.ColumnSplit(w)
        assert len(split.blocks) == 2
        np.testing.assert_allclose(split(x, out), x @ w, rtol=1e-13, atol=1e-13)


def test_column_split_only_without_panels_for_a_big_weight_and_few_rows(monkeypatch):
    monkeypatch.setattr(panel_matmul, "team_size", lambda: 2)
    big = np.ones((1024, 4096), np.float32)
    for small_kernel, want in ((True, False), (False, True)):  # with panels, they win
        monkeypatch.setattr(panel_matmul, "small_kernel", lambda s=small_kernel: s)
        assert panel_matmul.column_split(big, 8) is want
        assert panel_matmul.column_split(big.T, 8) is want  # backward: W_hhᵀ
    assert not panel_matmul.column_split(big, 64)  # many rows: split the rows
    assert not panel_matmul.column_split(np.ones((256, 1024), np.float32), 8)  # W3b's: small
    assert panel_matmul.column_split(np.ones((1024, 4096)), 8)  # float64: never panels
    monkeypatch.setattr(panel_matmul, "team_size", lambda: 1)
    assert not panel_matmul.column_split(big, 8)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_results_do_not_depend_on_row_groups(monkeypatch, kind):
    """The batch's rows may be split over threads, the per-step products may run over panels
    (forced here, with K split in several panels backward) or be split by columns: forward and
    all gradients stay those of one plain loop."""
    layer_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.SimpleRNN}[kind]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7, 3))

    def run(groups, panels=False, columns=False):
        # columns: one loop whose per-step products are split by columns over a team of two
        monkeypatch.setattr(rnn_ops, "column_split", lambda w, rows: columns)
        if panels:
            monkeypatch.setattr(
                panel_matmul, "plan", lambda k, n, rows, dtype, small: (k if k <= 16 else 8, 8)
            )
        monkeypatch.setattr(
            rnn_ops,
            "row_groups",
            lambda b: [slice(b * i // groups, b * (i + 1) // groups) for i in range(groups)],
        )
        layer = layer_cls(8, return_sequences=True, dtype="float64")
        layer(Tensor(x))  # builds the weights
        for i, p in enumerate(layer.parameters()):
            p.data[...] = np.random.default_rng(i).uniform(-0.5, 0.5, p.data.shape)
        xt = Tensor(x, requires_grad=True)
        y = layer(xt)
        (y * y).sum().backward()
        return [y.data, xt.grad] + [p.grad for p in layer.parameters()]

    plain = run(1)
    real = thread_team.team_size
    monkeypatch.setattr(thread_team, "team_size", lambda: max(2, real()))
    for other in (run(3), run(2, panels=True), run(1, columns=True)):
        for a, b in zip(plain, other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_own_threads_only_around_recurrent_models(monkeypatch):
    """A model with a recurrent layer runs forward and backward inside own_threads; others
    (and the Dense layer of a plain MLP) keep OpenBLAS's threads."""
    from splitgrad.ops import linalg

    seen = []
    real = linalg.Linear.forward

    def spy(self, *args, **kwargs):
        seen.append(thread_team._depth > 0)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(linalg.Linear, "forward", spy)
    mlp = nn.Sequential([nn.Dense(4), nn.Dense(2)])
    mlp(np.ones((3, 5)))
    rnn = nn.Sequential([nn.LSTM(4, return_sequences=True), nn.Dense(2)])
    y = rnn(np.ones((3, 6, 5)))
    assert seen == [False, False, True]
    assert nn.Sequential([nn.Dense(2)]).threads() is not thread_team.own_threads
    assert rnn.threads() is thread_team.own_threads

    inside = []
    real_bptt = rnn_ops.LSTMSeq.bptt
    monkeypatch.setattr(
        rnn_ops.LSTMSeq,
        "bptt",
        lambda self, r: inside.append(thread_team._depth > 0) or real_bptt(self, r),
    )
    y.sum().backward()
    assert inside and all(inside) and thread_team._depth == 0


def test_recurrent_model_data_parallel_equals_one_place():
    """Replicas that each run on splitgrad's own threads still add up to one-place training."""
    import splitgrad as sg
    from splitgrad.split import DataParallel

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, (32, 12)), rng.integers(0, 5, 32)

    def trained(way=None):
        sg.seed(0)
        model = nn.Sequential([nn.Embedding(20, 16), nn.LSTM(32), nn.Dense(5)])
        model.compile(
            optimizer=sg.optim.SGD(learning_rate=0.1),
            loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=1, way=way)
        return model.get_weights()

    for a, b in zip(trained(), trained(DataParallel(2))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
