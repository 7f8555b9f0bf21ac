"""Ways that cut through the layers and the step, on the Inline place: pipeline (#7), tensor
parallel (#8), activation checkpointing (#15) and data parallel × pipeline, each way's
equivalence property as an exact assertion (docs/split-training.md).

Models are float64 so that "allclose" can be tight; "bitwise" means array_equal.
"""

import numpy as np
import pytest
from helpers import numeric_grad
from hypothesis import given
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import nn, optim
from splitgrad.layers.layer import Parameter
from splitgrad.layers.recompute import Recompute
from splitgrad.ops.checkpointing import recompute
from splitgrad.split import WAYS, blocks, compare, make_way, register
from splitgrad.split import pipeline_schedule as schedules
from splitgrad.split.catalogue import catalogue
from splitgrad.split.pipeline import Pipeline
from splitgrad.split.recompute import ActivationCheckpointing
from splitgrad.split.tensor_parallel import TensorParallel
from splitgrad.split.tensor_shards import (
    MegatronPair,
    column_parallel,
    find_pairs,
    row_parallel,
    slices,
)
from splitgrad.tensor import Function, Tensor, activation_meter

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 10, 10, 1))
Y = RNG.integers(0, 3, 48)
LOSS = sg.losses.SparseCategoricalCrossentropy(from_logits=True)


def cnn_layers(dropout=0.0, regularizer=None, bn=False):
    """conv4 (8x8x4) · pool (4x4x4 = 64) · conv6 same (4x4x6) · pool (2x2x6) · flatten (24) ·
    [dropout] · dense8 tanh · dense3: parameters 40, 222, 200, 27."""
    layers = [nn.Conv2D(4, 3, activation="relu"), nn.MaxPool2D(2)]
    layers += [nn.BatchNormalization()] if bn else []
    layers += [nn.Conv2D(6, 3, padding="same", activation="relu"), nn.MaxPool2D(2), nn.Flatten()]
    layers += [nn.Dropout(dropout)] if dropout else []
    return layers + [nn.Dense(8, activation="tanh", kernel_regularizer=regularizer), nn.Dense(3)]


def cnn(opt="sgd", lr=0.1, seed=0, clipnorm=None, layers=None, **kw):
    sg.seed(seed)
    model = nn.Sequential(layers or cnn_layers(**kw), dtype="float64")
    extra = {} if clipnorm is None else {"global_clipnorm": clipnorm}
    rule = optim.SGD if opt == "sgd" else optim.Adam
    model.compile(optimizer=rule(learning_rate=lr, **extra), loss=LOSS)
    return model


def fit(way=None, batch_size=16, epochs=2, x=X, y=Y, callbacks=None, **kw):
    model = cnn(**kw)
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, seed=3, verbose=0, way=way, callbacks=callbacks
    )
    return model, history


def flat(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(flat(a), flat(b), rtol=tol, atol=tol)


@pytest.fixture
def registered():
    """The three ways known by name (as the registry will list them), then forgotten again."""
    saved = dict(WAYS)
    for cls in (Pipeline, TensorParallel, ActivationCheckpointing):
        register(cls)
    yield
    WAYS.clear()
    WAYS.update(saved)


# ----- #7 pipeline: schedules and the bubble ---------------------------------------------------
@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
@pytest.mark.parametrize("micro", [1, 2, 4, 8])
def test_schedules_leave_the_textbook_bubble_and_hold_their_micro_batches(name, stages, micro):
    plan = schedules.make(name, stages, micro)
    # Equal op times (forward 1, backward 2 here): every stage idles (S-1)/(M+S-1) of the step.
    replay = schedules.simulate(plan)
    assert replay["bubble"] == pytest.approx([schedules.bubble_formula(stages, micro)] * stages)
    assert replay["makespan"] == pytest.approx(3 * (micro + stages - 1))
    held = schedules.in_flight(plan)
    expected = (
        [micro] * stages if name == "gpipe" else [min(micro, stages - s) for s in range(stages)]
    )
    assert held == expected
    order = schedules.submission_order(plan)  # every action once, after what it needs
    assert len(order) == 2 * stages * micro and len(set(order)) == len(order)


def test_schedule_replay_with_unequal_stages_idles_the_faster_one():
    plan = schedules.make("1f1b", 2, 4)
    replay = schedules.simulate(
        plan, lambda s, kind, j: (1.0 if s == 0 else 3.0) * (1 + (kind == "B"))
    )
    assert replay["bubble"][0] > replay["bubble"][1] > 0
    with pytest.raises(ValueError, match="schedule must be one of"):
        schedules.make("zigzag", 2, 4)


# ----- #7 pipeline: gradients, weights, bytes ----------------------------------------------------
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages, micro", [(2, 4), (3, 3), (2, 5), (4, 1), (7, 2)])
def test_pipeline_gradients_are_the_full_batch_gradients(schedule, stages, micro):
    # SGD with learning rate 1, one batch of 20 rows: the weights move by minus the gradient.
    ref = cnn(lr=1.0)
    ref.build_from_sample(X)
    before = flat(ref)
    loss = ref.compute_loss(X[:20], Y[:20])
    loss.backward()
    grad = np.concatenate([p.grad.ravel() for p in ref.parameters()])
    model, history = fit(Pipeline(stages, micro, schedule), 20, 1, X[:20], Y[:20], lr=1.0)
    np.testing.assert_allclose(before - flat(model), grad, rtol=1e-12, atol=1e-13)
    assert history.history["loss"][0] == pytest.approx(float(loss.data), rel=1e-13)


@pytest.mark.parametrize("stages", [2, 3])
def test_pipeline_trains_like_one_place_and_gpipe_equals_1f1b_bitwise(stages):
    ref, _ = fit(opt="adam", lr=0.01, batch_size=20)  # batches of 20, 20, 8
    runs = {}
    for schedule in ("gpipe", "1f1b"):
        runs[schedule], history = fit(Pipeline(stages, 3, schedule), 20, opt="adam", lr=0.01)
        close(runs[schedule], ref)
        assert history.traffic["steps"] == 6
    # Both schedules add each stage's micro-batch gradients in the same order.
    assert np.array_equal(flat(runs["gpipe"]), flat(runs["1f1b"]))


def test_pipeline_bytes_at_each_cut_are_two_b_over_m_d():
    way = Pipeline(3, 4, cuts="2,5")  # stages conv-pool | conv-pool-flatten | dense-dense
    _, history = fit(way, batch_size=16)
    t, steps, b, m = history.traffic, 6, 16, 4
    for c, d in enumerate([64, 24]):  # widths after the first pool and after the flatten
        per_micro = (b // m) * d * 8
        assert t["by_boundary"][f"stage{c}->stage{c + 1}"] == steps * m * per_micro
        assert t["by_boundary"][f"stage{c + 1}->stage{c}"] == steps * m * per_micro
        assert (
            t["cuts"][c]["d"] == d and t["cuts"][c]["textbook_bytes"] == 2 * steps * m * per_micro
        )
    assert t["messages"] == {"activations": steps * m * 2, "gradients": steps * m * 2}
    assert t["total_bytes"] == t["textbook_bytes"]
    assert set(t["busy_s"]) == {"stage0", "stage1", "stage2"}


@pytest.mark.parametrize("schedule, held", [("1f1b", [2, 1]), ("gpipe", [4, 4])])
def test_pipeline_records_each_stage_bubble_next_to_the_formula(schedule, held):
    _, history = fit(Pipeline(2, 4, schedule))
    bubble = history.traffic["bubble"]
    assert bubble["formula"] == pytest.approx(1 / 5)
    assert bubble["schedule"] == pytest.approx([0.2, 0.2])
    assert len(bubble["replayed"]) == 2 and all(0 <= v < 1 for v in bubble["replayed"])
    assert bubble["timed"] is None  # inline stages take turns: only Ray times them side by side
    assert history.traffic["in_flight"] == held  # micro-batches of activations held at the peak


def test_pipeline_stages_by_hand_by_parameters_and_by_time():
    model = cnn()
    model.build_from_sample(X)
    # Parameters per layer 40, 0, 222, 0, 0, 200, 27: the best largest stage is 262 whichever
    # of boundaries 3, 4, 5 is cut; the narrowest there (24 values after the pool) wins.
    assert blocks.param_counts(model) == [40, 0, 222, 0, 0, 200, 27]
    assert blocks.plan(model, 2, by="params", x=X[:4]) == [0, 4, 7]
    bounds = blocks.plan(model, 3, by="time", x=X[:8])
    assert blocks.check_bounds(bounds, 7) == bounds and len(bounds) == 4
    ref, _ = fit(batch_size=16)
    for way in (Pipeline(2, 2, cuts=[1]), Pipeline(3, 2, balance="time")):
        close(fit(way, batch_size=16)[0], ref)


def test_balance_breaks_ties_by_the_narrowest_cut():
    costs = [160, 0, 4640, 0, 0, 8256, 650]
    assert blocks.balance(costs, 2) == [0, 3, 7]  # the first cut with the smallest maximum
    widths = [64, 1024, 256, 512, 128, 128, 64, 10]
    assert blocks.balance(costs, 2, cut_costs=widths) == [0, 4, 7]
    assert blocks.balance([1, 1, 1, 1], 2, cut_costs=[0, 1, 5, 1, 0]) == [0, 2, 4]  # unique best
    with pytest.raises(ValueError, match="one entry per boundary"):
        blocks.balance(costs, 2, cut_costs=[1, 2])


def test_a_model_given_as_blocks_is_cut_between_its_blocks():
    def build():
        sg.seed(0)
        parts = [
            nn.Sequential(cnn_layers()[i:j], dtype="float64") for i, j in ((0, 2), (2, 5), (5, 7))
        ]
        model = nn.Sequential(parts, dtype="float64")
        model.compile(optimizer=optim.Adam(learning_rate=0.01), loss=LOSS)
        return model

    ref, way = build(), Pipeline(3, 2, balance="params")
    ref.fit(X, Y, batch_size=16, epochs=2, seed=3, verbose=0)
    model = build()
    model.fit(X, Y, batch_size=16, epochs=2, seed=3, verbose=0, way=way)
    assert way.bounds == [0, 1, 2, 3]
    close(model, ref)


def test_block_optimizer_state_round_trips():
    model, _ = fit(opt="adam", lr=0.01)
    state = model.optimizer.state_dict()
    parts = blocks.cut(model, [0, 4, 7])
    where = [blocks.positions(model, b) for b in parts]
    assert where == [[0, 1, 2, 3], [4, 5, 6, 7]]
    pieces = [blocks.block_state(state, w) for w in where]
    assert sorted(pieces[1]["state"]) == sorted(
        f"{i}.{k}" for i in range(4) for k in ("exp_avg", "exp_avg_sq")
    )
    merged = blocks.merge_state(state, list(zip(where, pieces)))
    for key, value in state["state"].items():
        assert np.array_equal(merged["state"][key], value)


def test_pipeline_with_clipnorm_and_penalties_equals_one_place():
    kw = {"clipnorm": 0.05, "regularizer": nn.regularizers.L2(0.01), "batch_size": 20}
    ref, _ = fit(**kw)
    model, history = fit(Pipeline(3, 2), **kw)
    close(model, ref)
    assert history.history["loss"] == pytest.approx(ref.history.history["loss"], rel=1e-12)
    with pytest.raises(ValueError, match="global_clipnorm with replicas > 1"):
        fit(Pipeline(2, 2, replicas=2), clipnorm=0.05)


def test_pipeline_with_dropout_is_reproducible_and_says_it_differs_from_one_place():
    a, _ = fit(Pipeline(2, 4), dropout=0.3)
    b, _ = fit(Pipeline(2, 4), dropout=0.3)
    assert np.array_equal(flat(a), flat(b))
    should, note = Pipeline(2, 4).expectation(cnn(dropout=0.3))
    assert not should and "dropout" in note
    assert not Pipeline(2, 4).expectation(cnn(bn=True))[0]


def test_pipeline_mistakes_are_clear_errors():
    with pytest.raises(ValueError, match="9 stages need at least 9 layers"):
        fit(Pipeline(9, 2))
    with pytest.raises(ValueError, match="make 3 stages, not stages=2"):
        Pipeline(2, 2, cuts="2,5")
    with pytest.raises(ValueError, match="boundaries must rise"):
        fit(Pipeline(3, 2, cuts="5,2"))
    with pytest.raises(ValueError, match="microbatches must be >= 1"):
        Pipeline(2, 0)

    class Custom(nn.Model):
        def __init__(self):
            super().__init__(dtype="float64")
            self.dense = nn.Dense(3, dtype="float64")

        def call(self, x):
            return self.dense(x)

    model = Custom()
    model.compile(optimizer="sgd", loss=LOSS)
    with pytest.raises(TypeError, match="needs a Sequential or a list"):
        model.fit(X.reshape(48, -1), Y, epochs=1, verbose=0, way=Pipeline(2, 2))


# ----- data parallel × pipeline ------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_data_parallel_times_pipeline_equals_one_place(schedule):
    ref, _ = fit(opt="adam", lr=0.01, batch_size=20)
    way = Pipeline(2, 2, schedule, replicas=2)  # 2 stages × 2 replicas = 4 places
    model, history = fit(way, 20, opt="adam", lr=0.01)
    close(model, ref)
    t, by = history.traffic, history.traffic["by_boundary"]
    assert way.bounds == [0, 4, 7] and way.workers == 4
    cuts = {f"stage{a}.r{r}->stage{b}.r{r}" for r in (0, 1) for a, b in ((0, 1), (1, 0))}
    reduces = {f"stage{s}.r{a}->stage{s}.r{b}" for s in (0, 1) for a, b in ((0, 1), (1, 0))}
    assert set(by) == cuts | reduces  # each cut and each stage's all-reduce on its own
    for s, p in enumerate([262, 227]):  # two copies swap their whole gradient each step
        assert by[f"stage{s}.r0->stage{s}.r1"] == by[f"stage{s}.r1->stage{s}.r0"] == 6 * p * 8
    rows = 2 * 48  # two epochs of every row, each crossing the cut once each way
    assert t["cuts"][0]["activations_bytes"] == t["cuts"][0]["gradients_bytes"] == rows * 24 * 8
    assert t["total_bytes"] == t["textbook_bytes"]


def test_data_parallel_times_pipeline_with_three_replicas_uses_the_reduce_scatter():
    ref, _ = fit(opt="adam", lr=0.01, batch_size=20)
    model, history = fit(Pipeline(2, 2, replicas=3), 20, opt="adam", lr=0.01)
    close(model, ref)
    assert history.traffic["total_bytes"] == history.traffic["textbook_bytes"]


# ----- #8 tensor parallel: the layers ------------------------------------------------------------
def _built(layer, shape, seed=0):
    sg.seed(seed)
    layer(np.zeros(shape))
    return layer


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_column_parallel_shards_concatenate_to_the_layer(kind, n):
    if kind == "dense":
        layer, x = (
            _built(nn.Dense(7, activation="relu", dtype="float64"), (1, 5)),
            RNG.normal(size=(6, 5)),
        )
    else:
        layer = _built(nn.Conv2D(5, 3, activation="relu", dtype="float64"), (1, 6, 6, 2))
        x = RNG.normal(size=(3, 6, 6, 2))
    full_in = Tensor(x, requires_grad=True)
    full = layer(full_in)
    g = RNG.normal(size=full.shape)
    full.backward(g)
    shards = column_parallel(layer, n)
    ins = [Tensor(x, requires_grad=True) for _ in shards]
    outs = [s(t) for s, t in zip(shards, ins)]
    np.testing.assert_allclose(np.concatenate([o.data for o in outs], -1), full.data, atol=1e-14)
    for idx, s, o in zip(slices(full.shape[-1], n), shards, outs):
        o.backward(g[..., idx])
        np.testing.assert_allclose(s.kernel.grad, layer.kernel.grad[..., idx], atol=1e-12)
        np.testing.assert_allclose(s.bias.grad, layer.bias.grad[idx], atol=1e-12)
    np.testing.assert_allclose(sum(t.grad for t in ins), full_in.grad, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_row_parallel_partial_sums_add_up_to_the_layer(n):
    layer = _built(nn.Dense(4, activation="tanh", dtype="float64"), (1, 7))
    x = RNG.normal(size=(5, 7))
    full = layer(Tensor(x))
    full.backward(np.ones(full.shape))
    rows = slices(7, n)
    shards, bias = row_parallel(layer, rows)
    parts = [s(Tensor(x[:, idx])) for s, idx in zip(shards, rows)]
    b = Parameter(bias)
    out = (sum(parts[1:], parts[0]) + b).tanh()
    np.testing.assert_allclose(out.data, full.data, atol=1e-14)
    out.backward(np.ones(out.shape))
    np.testing.assert_allclose(
        np.concatenate([s.kernel.grad for s in shards]), layer.kernel.grad, atol=1e-12
    )
    np.testing.assert_allclose(b.grad, layer.bias.grad, atol=1e-12)


def _pair_layers(kind):
    if kind == "mlp":
        layers, shape = [nn.Dense(6, activation="relu"), nn.Dense(4, activation="tanh")], (1, 5)
    elif kind == "conv":
        layers = [
            nn.Conv2D(6, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(3, 3, padding="same"),
        ]
        shape = (1, 8, 8, 2)
    else:
        layers = [nn.Conv2D(5, 3, activation="relu"), nn.AvgPool2D(2), nn.Flatten(), nn.Dense(4)]
        shape = (1, 8, 8, 2)
    model = nn.Sequential(layers, dtype="float64")
    sg.seed(1)
    model(np.zeros(shape))
    return model.layers, shape


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kind", ["mlp", "conv", "conv-flatten-dense"])
def test_megatron_pair_equals_the_unsharded_pair_forward_and_gradients(kind, n):
    layers, shape = _pair_layers(kind)
    assert find_pairs(layers, n) == [(0, len(layers) - 1)]
    x = RNG.normal(size=(4, *shape[1:]))
    ref_in = Tensor(x, requires_grad=True)
    ref = ref_in
    for layer in layers:
        ref = layer(ref)
    g = RNG.normal(size=ref.shape)
    ref.backward(g)
    pair = MegatronPair(layers[0], layers[1:-1], layers[-1], n)
    ins = [Tensor(x, requires_grad=True) for _ in range(n)]
    total = None
    for c in range(n):  # what place c computes on its own
        part = pair.partial(c, ins[c])
        total = part if total is None else total + part  # the one reduction
    bias = Parameter(pair.bias)
    out = pair.finish(total, bias)
    np.testing.assert_allclose(out.data, ref.data, atol=1e-13)
    out.backward(g)
    # Each shard's gradients are the matching slices of the full ones; input grads add up.
    for c, sources in enumerate(pair.sources):
        for weight, (layer, name, axis, idx) in zip(pair.weights(c), sources):
            full = np.take(getattr(layer, name).grad, idx, axis=axis)
            np.testing.assert_allclose(weight.grad, full, atol=1e-12)
    np.testing.assert_allclose(bias.grad, layers[-1].bias.grad, atol=1e-12)
    np.testing.assert_allclose(sum(t.grad for t in ins), ref_in.grad, atol=1e-12)


@given(st.integers(1, 6), st.integers(1, 9), st.integers(1, 5), st.integers(1, 4))
def test_megatron_mlp_pair_on_any_sizes(n_in, hidden, n_out, n):
    sg.seed(0)
    first, second = nn.Dense(hidden, activation="relu"), nn.Dense(n_out)
    model = nn.Sequential([first, second], dtype="float64")
    model(np.zeros((1, n_in)))
    if hidden < n:
        assert find_pairs(model.layers, n) == []  # a shard would be empty: left whole
        return
    x = np.random.default_rng(n_in).normal(size=(3, n_in))
    np.testing.assert_allclose(
        MegatronPair(first, [], second, n)(Tensor(x)).data, model(x).data, atol=1e-13
    )


# ----- #8 tensor parallel: the way ---------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_tensor_parallel_trains_like_one_place(n):
    kw = {"opt": "adam", "lr": 0.01, "dropout": 0.3, "batch_size": 20}
    ref, _ = fit(**kw)
    stream = sg.random.get_state()
    model, history = fit(TensorParallel(n), **kw)
    # The replicated dropout draws the one-place masks from the driver's stream, continued.
    close(model, ref)
    assert sg.random.get_state() == stream
    t = history.traffic
    assert [p["layers"] for p in t["pairs"]] == [["conv2d", "conv2d_1"], ["dense", "dense_1"]]
    # Pair 1's input comes from pair 0: its gradient is reduced too; pair 0 reads the data.
    assert [(p["d_out"], p["d_in"]) for p in t["pairs"]] == [(96, 0), (3, 24)]
    assert t["total_bytes"] == t["textbook_bytes"] == 2 * (n - 1) * 2 * 48 * (96 + 3 + 24) * 8
    if n > 1:
        assert t["bytes"]["activations"] and t["bytes"]["gradients"]


def test_tensor_parallel_says_what_it_shards_and_refuses_the_rest():
    with pytest.raises(ValueError, match="tensor-parallel shards consecutive layer pairs"):
        fit(TensorParallel(2), layers=[nn.Flatten(), nn.Dense(3)])
    with pytest.raises(ValueError, match="clipnorm"):
        fit(TensorParallel(2), clipnorm=1.0)


# ----- #15 activation checkpointing ------------------------------------------------------------
def _grads_and_peak(wrap, dropout=0.3, bn=True):
    layers = cnn_layers(dropout=dropout, bn=bn)
    if wrap:
        layers = [
            Recompute(nn.Sequential(layers[:3])),
            Recompute(nn.Sequential(layers[3:7])),
            *layers[7:],
        ]
    model = cnn(layers=layers, opt="adam")
    model.build_from_sample(X)
    sg.seed(5)
    with activation_meter() as meter:
        loss = model.compute_loss(X[:16], Y[:16])
        loss.backward()
    arrays = [p.grad.copy() for p in model.parameters()] + model.get_weights()
    return arrays, float(loss.data), meter.peak


@pytest.mark.parametrize("fused", [True, False])
def test_recomputed_gradients_are_bitwise_the_stored_ones_and_take_less_memory(monkeypatch, fused):
    if not fused:  # the first conv and pool one by one (layers/fusion.py): a bigger activation
        from splitgrad.layers import fusion

        monkeypatch.setattr(fusion, "conv_relu_pool", lambda conv, pool, x: None)
    plain, loss, peak = _grads_and_peak(False)
    again, loss_again, peak_again = _grads_and_peak(True)
    # Dropout draws the same masks again, batch norm updates its statistics once.
    assert loss == loss_again and len(plain) == len(again)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))
    # Fused, the first block stores only its pooled output anyway: recompute saves less.
    assert peak_again < (0.9 if fused else 0.8) * peak


def test_recompute_op_gradient_matches_finite_differences():
    w = Tensor(RNG.normal(size=(4, 3)), requires_grad=True)
    x = RNG.normal(size=(5, 4))

    def fn(t):
        return (t @ w).tanh() * 2.0

    def value():
        return float((recompute(fn, Tensor(x), [w]) ** 2).sum().data)

    xt = Tensor(x, requires_grad=True)
    (recompute(fn, xt, [w]) ** 2).sum().backward()
    np.testing.assert_allclose(xt.grad, numeric_grad(value, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(w.grad, numeric_grad(value, w.data), rtol=1e-6, atol=1e-8)


def test_recompute_layer_in_inference_is_the_block_and_saves_and_loads(tmp_path):
    model = cnn(layers=[Recompute(nn.Sequential(cnn_layers()[:5])), nn.Dense(8), nn.Dense(3)])
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert "layers.0.block.layers.0.kernel" in model.named_weights()
    with sg.no_grad():
        assert model(X[:4])._ctx is None
    model.save(tmp_path / "m")
    again = sg.load_model(tmp_path / "m")
    assert type(again.layers[0]) is Recompute
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="ends in a softmax output"):
        Recompute(nn.Dense(3, activation="softmax"))(X[:2].reshape(2, -1))


def test_activation_meter_counts_what_nodes_hold_and_costs_nothing_when_off():
    plain = Function.__dict__["apply"]
    x = Tensor(RNG.normal(size=(64, 10)))
    w = Tensor(RNG.normal(size=(10, 50)), requires_grad=True)
    with activation_meter() as outer:
        with activation_meter() as inner:
            z = x @ w  # holds x and w: leaves' data, not activations
            r = z.relu()  # holds z (64·50·8 bytes) and its mask (64·50)
            s = r.sum()  # holds r
        assert inner.peak == 64 * 50 * (8 + 1 + 8) and inner.nodes == 3
        assert Function.__dict__["apply"] is not plain  # the outer meter is still on
        del z, r, s
        assert inner.live == 0 and outer.live == 0 and outer.peak == inner.peak
    assert Function.__dict__["apply"] is plain  # off again: the hot path is the plain one


def test_recompute_way_is_bitwise_one_place_and_measures_the_saving():
    kw = {"opt": "adam", "lr": 0.01, "dropout": 0.3, "bn": True}
    ref, _ = fit(**kw)
    stream = sg.random.get_state()
    way = ActivationCheckpointing()
    model, history = fit(way, **kw)
    assert np.array_equal(flat(model), flat(ref)) and sg.random.get_state() == stream
    assert np.array_equal(
        model.optimizer.state_dict()["state"]["0.exp_avg"],
        ref.optimizer.state_dict()["state"]["0.exp_avg"],
    )
    t = history.traffic
    assert (
        way.spans == [(0, 2), (2, 3), (3, 7), (7, 8)]
        and t["total_bytes"] == t["textbook_bytes"] == 0
    )
    assert 0 < t["peak_activation_bytes"] < t["peak_activation_bytes_plain"]
    by_hand, _ = fit(ActivationCheckpointing(blocks="0-3,3-6"), **kw)
    assert np.array_equal(flat(by_hand), flat(ref))
    with pytest.raises(ValueError, match="rising, non-empty"):
        fit(ActivationCheckpointing(blocks="3-2"))


# ----- the command line's view ------------------------------------------------------------------
def test_the_ways_are_in_the_catalogue_and_take_their_options(registered):
    rows = {r[0]: r for r in catalogue()}
    assert [rows[k][1] for k in (7, 8, 15)] == ["pipeline", "tensor-parallel", "recompute"]
    assert all(rows[k][6] == "yes" for k in (7, 8, 15))
    way = make_way("pipeline", 4, {"replicas": 2, "schedule": "gpipe"})
    assert (way.stages, way.replicas, way.schedule, way.microbatches) == (2, 2, "gpipe", 4)
    assert make_way("pipeline", 2, {"cuts": "2,5"}).stages == 3
    assert make_way("tensor-parallel", 3).workers == 3
    assert make_way("recompute", 2, {"blocks": "0-2"}).blocks == "0-2"
    with pytest.raises(ValueError, match="has no option 'stage'"):
        make_way("pipeline", 2, {"stage": 2})


def test_compare_digits_cnn_quick_covers_the_three_ways(registered, tmp_path):
    rows = compare(
        "digits-cnn",
        places=2,
        quick=True,
        out=tmp_path,
        verbose=False,
        ways=["pipeline", "tensor-parallel", "recompute"],
    )
    assert [r["way"] for r in rows] == ["single place", "pipeline", "tensor-parallel", "recompute"]
    for row in rows[1:]:  # float32: equal up to rounding; recompute bitwise
        assert row["should_match"] and row["max_weight_diff"] < 1e-5
        assert row["bytes"] == row["textbook"]
    assert rows[3]["max_weight_diff"] == 0.0 and rows[1]["bytes"] > 0 and rows[2]["bytes"] > 0
