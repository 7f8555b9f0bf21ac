"""The ways that cut the optimizer, the data owner's model and the backward pass, on Inline:
sharded optimizer (#9), offload (#10), split learning (#11), local learning (#12) and
distillation (#16), each property as an exact assertion (float64 models)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, to_torch
from test_split_ways import X, Y, close, flat

import splitgrad as sg
from splitgrad import nn, optim
from splitgrad.split import DataParallel, compare, make_way
from splitgrad.split import host as host_ops
from splitgrad.split.distillation import Distillation, learn
from splitgrad.split.local_learning import LocalLearning, SyntheticGradients
from splitgrad.split.offload import Offload, OffloadDelayed
from splitgrad.split.split_learning import SplitLearning, USplitLearning
from splitgrad.split.zero import Zero

WAYS = [
    Zero,
    Offload,
    OffloadDelayed,
    SplitLearning,
    USplitLearning,
    LocalLearning,
    SyntheticGradients,
    Distillation,
]


def mlp(opt="adam", lr=0.05, seed=0, dropout=0.0):
    """Three Dense layers (so a U-shaped cut has a front, a middle and a head)."""
    sg.seed(seed)
    layers = [nn.Dense(8, activation="tanh"), nn.Dense(6, activation="relu"), nn.Dense(3)]
    if dropout:
        layers.insert(1, nn.Dropout(dropout))
    model = nn.Sequential(layers, dtype="float64")
    optimizer = optim.Adam(learning_rate=lr) if opt == "adam" else optim.SGD(learning_rate=lr)
    model.compile(optimizer, sg.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def cnn(opt="adam", seed=0, dropout=0.0):
    """conv · pool · flatten · dense · dense, float64, on 6×6×1 images."""
    sg.seed(seed)
    layers = [
        nn.Conv2D(3, 3, padding="same", activation="relu"),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(5, activation="tanh"),
        nn.Dense(3),
    ]
    if dropout:
        layers.insert(3, nn.Dropout(dropout))
    model = nn.Sequential(layers, dtype="float64")
    model.compile(
        optim.Adam(learning_rate=0.02) if opt == "adam" else optim.SGD(learning_rate=0.1),
        sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


IMAGES = np.random.default_rng(1).normal(size=(40, 6, 6, 1))
LABELS = (IMAGES[:, :3].mean(axis=(1, 2, 3)) > 0).astype(np.int64) + (
    IMAGES[:, 3:, 3:].sum((1, 2, 3)) > 1
)


def train(
    make=mlp, way=None, x=X, y=Y, batch_size=16, epochs=2, shuffle=True, callbacks=None, **kw
):
    model = make(**kw)
    history = model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        seed=3,
        verbose=0,
        way=way,
        shuffle=shuffle,
        callbacks=callbacks,
    )
    return model, history


def same_optimizer_state(a, b):
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["step"] == sb["step"] and sa["param_steps"] == sb["param_steps"]
    assert all(np.array_equal(sa["state"][k], sb["state"][k]) for k in sb["state"])


def bytes_are_the_formula(history):
    t = history.traffic
    assert t["total_bytes"] == t["textbook_bytes"] > 0
    return t


# ----- #9 sharded optimizer (ZeRO) --------------------------------------------------------------
@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("workers", [2, 3])
def test_zero_equals_data_parallel_bitwise(stage, workers):
    ref, _ = train(way=DataParallel(workers), batch_size=20)  # batches of 20, 20, 8
    model, history = train(way=Zero(workers, stage=stage), batch_size=20)
    assert np.array_equal(flat(model), flat(ref))
    same_optimizer_state(model, ref)  # the pieces put together are #1's whole state
    close(model, train(batch_size=20)[0], tol=1e-12)
    t = bytes_are_the_formula(history)
    p = sum(w.size for w in model.get_weights())
    assert t["total_bytes"] == 6 * (3 if stage == 3 else 2) * (workers - 1) * p * 8


def test_zero_stage_3_gathers_layer_by_layer_on_a_cnn_with_dropout():
    # The recomputed layers draw the same dropout masks and give the same gradients.
    kw = {"make": cnn, "x": IMAGES, "y": LABELS, "batch_size": 16, "dropout": 0.3}
    ref, _ = train(way=DataParallel(3), **kw)
    model, history = train(way=Zero(3, stage=3), **kw)
    assert np.array_equal(flat(model), flat(ref))
    bytes_are_the_formula(history)
    biggest = max(sum(p.size for p in la.parameters()) for la in model.layers)
    assert {m["measured"]["gathered_peak"] for m in history.traffic["memory"]} == {biggest * 8}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_each_place_holds_one_nth_of_the_optimizer_state_measured(stage):
    n = 3
    model, history = train(way=Zero(n, stage=stage))
    p, b, s = sum(w.size for w in model.get_weights()), 8, 2  # Adam: exp_avg, exp_avg_sq
    memory = history.traffic["memory"]
    assert [m["measured"] for m in memory] == [m["formula"] for m in memory]
    held = [m["measured"]["optimizer"] for m in memory]
    assert sum(held) == (1 + s) * p * b  # master piece + its moments, nothing twice
    assert max(held) - min(held) <= (1 + s) * len(model.layers) * b  # ~1/N each
    grads = [m["measured"]["gradients"] for m in memory]
    weights = [m["measured"]["weights"] for m in memory]
    assert grads == ([p * b] * n if stage == 1 else [h // (1 + s) for h in held])
    assert weights == ([p * b] * n if stage < 3 else [0] * n)


def test_zero_checkpoint_reloads_at_another_n_and_in_a_plain_model(tmp_path):
    ref = mlp()
    ref.fit(X, Y, batch_size=16, epochs=2, seed=3, verbose=0)
    model = mlp()
    model.fit(X, Y, batch_size=16, epochs=1, seed=3, verbose=0, way=Zero(3, stage=3))
    model.save(tmp_path / "ck")  # finish gathered the pieces: a plain checkpoint
    for way in (Zero(2, stage=1), Zero(4, stage=2), None):
        again = sg.load_model(tmp_path / "ck")
        again.fit(X, Y, batch_size=16, epochs=2, initial_epoch=1, seed=3, verbose=0, way=way)
        close(again, ref, tol=1e-12)


def test_zero_1_with_accumulation_equals_the_big_batch():
    ref, _ = train(batch_size=24)
    wide, _ = train(way=DataParallel(2), batch_size=24)
    for k in (1, 2, 5):  # 5 micro-batches of 12 rows: uneven
        model, history = train(way=Zero(2, stage=1, k=k), batch_size=24)
        close(model, ref, tol=1e-12)
        if k == 1:
            assert np.array_equal(flat(model), flat(wide))
        assert history.traffic["total_bytes"] == history.traffic["textbook_bytes"]


def test_zero_refuses_what_it_cannot_shard():
    model = mlp()
    model.compile(optim.Adam(clipnorm=1.0), model.loss)
    with pytest.raises(ValueError, match="clipnorm=1.0.*global norm.*clipvalue"):
        model.fit(X, Y, epochs=1, verbose=0, way=Zero(2))
    with pytest.raises(ValueError, match="stage=3, k>1"):
        Zero(2, stage=3, k=2)


# ----- #10 optimizer step at another place ------------------------------------------------------
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_offloaded_step_is_the_local_step_bitwise(opt):
    ref, hr = train(opt=opt, dropout=0.3)
    after = sg.random.get_state()
    model, history = train(way=Offload(), opt=opt, dropout=0.3)
    assert np.array_equal(flat(model), flat(ref)) and history.history == hr.history
    same_optimizer_state(model, ref)
    assert sg.random.get_state() == after  # the driver's stream continues where it would
    t = bytes_are_the_formula(history)
    assert set(t["by_boundary"]) == {"compute->update", "update->compute"}


def test_delayed_offload_computes_each_gradient_one_update_late():
    model, history = train(way=OffloadDelayed(), opt="sgd", lr=0.1)
    bytes_are_the_formula(history)
    # The reference: w_{t+1} = w_t − lr·∇L_t(w_{t−1}), the delay restarting each epoch.
    ref = mlp(opt="sgd", lr=0.1)
    ref.build_from_sample(X)
    for epoch in range(2):
        past = sg.split.replicas.get_flat(ref)
        for idx in sg.data.batch_order(len(X), 16, True, 3, epoch):
            now = sg.split.replicas.get_flat(ref)
            sg.split.replicas.set_flat(ref, past)
            sg.split.replicas.backward(ref, X[idx], Y[idx])
            grad = sg.split.replicas.get_flat_grad(ref)
            sg.split.replicas.set_flat(ref, now)
            sg.split.replicas.optimizer_step(ref, grad)
            past = now
    assert np.array_equal(flat(model), flat(ref))
    assert not np.allclose(flat(model), flat(train(opt="sgd", lr=0.1)[0]))


# ----- #11 split learning -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "way", [SplitLearning(), SplitLearning(cuts=2), USplitLearning(), USplitLearning(cuts=(1, 2))]
)
def test_client_part_and_server_part_are_the_centralized_model(way):
    ref, hr = train()
    model, history = train(way=way)
    assert np.array_equal(flat(model), flat(ref)) and history.history == hr.history
    same_optimizer_state(model, ref)
    t = bytes_are_the_formula(history)
    d = t["cut_widths"]
    assert t["bytes"]["activations"] == t["bytes"]["gradients"] == 2 * 48 * sum(d) * 8
    assert t["bytes"].get("labels", 0) == (0 if way.u_shaped else 2 * 48 * 8)


@pytest.mark.parametrize("u_shaped", [False, True])
def test_split_learning_on_a_cnn_is_the_centralized_cnn(u_shaped):
    kw = {"make": cnn, "x": IMAGES, "y": LABELS, "batch_size": 16}
    ref, hr = train(**kw)
    way = USplitLearning(cuts="2,4") if u_shaped else SplitLearning(cuts=3)
    model, history = train(way=way, **kw)
    assert np.array_equal(flat(model), flat(ref)) and history.history == hr.history


def test_u_shaped_server_never_receives_labels_or_raw_inputs():
    rows = [x.tobytes() for x in X]
    labels = [Y[idx].tobytes() for idx in sg.data.batch_order(len(X), 16, True, 3, 0)]
    for way, leaks in ((USplitLearning(), False), (SplitLearning(), True)):
        way.keep_payloads = True
        _, history = train(way=way, epochs=1)
        to_server = [(k, p) for k, _, dst, p in history.traffic_log.payloads if dst == "server"]
        assert to_server and any(k == "labels" for k, _ in to_server) == leaks
        for kind, payload in to_server:
            blob = np.asarray(payload).tobytes()
            assert not any(row in blob for row in rows)
            if kind != "labels":
                assert np.asarray(payload).dtype == np.float64
                assert not any(batch in blob for batch in labels)


def test_several_clients_relay_the_client_layers_in_turn():
    way = SplitLearning(clients=3)
    model, history = train(way=way, batch_size=8, shuffle=False)
    parts = sg.split.partition(Y, 3, "iid", seed=0)  # 16 rows each, two batches of 8
    order = np.concatenate(parts)
    ref, _ = train(x=X[order], y=Y[order], batch_size=8, shuffle=False)
    assert np.array_equal(flat(model), flat(ref))
    t = bytes_are_the_formula(history)
    assert t["relays"] == 5 and t["messages"]["weights"] == t["messages"]["state"] == 5
    assert set(t["by_boundary"]) >= {"client0->client1", "client1->client2", "client2->client0"}
    assert not way.expectation(model)[0]


# ----- #12 local learning -----------------------------------------------------------------------
@pytest.mark.parametrize("way", [LocalLearning(1), SyntheticGradients(1)])
def test_a_single_block_is_backprop(way):
    ref, hr = train()
    model, history = train(way=way)
    assert np.array_equal(flat(model), flat(ref)) and history.history == hr.history
    assert history.traffic["total_bytes"] == 0 and way.expectation(model)[0]


def test_greedy_blocks_pass_no_gradient_to_earlier_blocks():
    def perturbed(**kw):  # the same first layer, different layers above it
        model = mlp(**kw)
        model.build_from_sample(X)
        model.layers[2].kernel.data *= -3.0
        return model

    a, history = train(way=LocalLearning(2, cuts=1))
    b, _ = train(perturbed, way=LocalLearning(2, cuts=1))
    assert np.array_equal(a.layers[0].kernel.data, b.layers[0].kernel.data)
    assert not np.allclose(a.layers[2].kernel.data, b.layers[2].kernel.data)
    t = bytes_are_the_formula(history)
    assert set(t["bytes"]) == {"activations"} and set(t["by_boundary"]) == {"block0->block1"}


def test_synthetic_gradients_start_at_zero_and_learn_from_the_block_above():
    one, _ = train(way=SyntheticGradients(2, cuts=1), opt="sgd", epochs=1, batch_size=48)
    start = mlp(opt="sgd")
    start.build_from_sample(X)
    # One step: the synthesizer predicts 0, so the first block has not moved; the top has.
    assert np.array_equal(one.layers[0].kernel.data, start.layers[0].kernel.data)
    assert not np.array_equal(one.layers[2].kernel.data, start.layers[2].kernel.data)
    model, history = train(way=SyntheticGradients(2, cuts=1), opt="sgd")
    assert not np.array_equal(model.layers[0].kernel.data, start.layers[0].kernel.data)
    t = bytes_are_the_formula(history)
    assert set(t["by_boundary"]) == {"block0->block1", "block1->block0"}


# ----- #16 distillation -------------------------------------------------------------------------
def test_distillation_weight_zero_is_plain_training_bitwise():
    ref, hr = train(dropout=0.3)
    model, history = train(way=Distillation(alpha=0.0), dropout=0.3)
    assert np.array_equal(flat(model), flat(ref)) and history.history == hr.history
    t = bytes_are_the_formula(history)
    assert t["bytes"] == {"activations": 2 * 48 * 3 * 8}  # B×C soft targets per batch


def test_distillation_loss_and_gradient_match_pytorch():
    temperature, alpha = 3.0, 0.4
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(3), size=16)
    host = host_ops.Host()
    student = mlp(opt="sgd", lr=1.0)
    student.build_from_sample(X)
    host_ops.setup(host, "s", sg.split.replicas.pack(student, X[:1]), X, Y)
    before = sg.split.replicas.get_flat(host.slots["s"].model)
    loss = learn(host, "s", np.arange(16), soft, temperature, alpha)
    grad = before - sg.split.replicas.get_flat(host.slots["s"].model)  # SGD, lr 1
    ws = [to_torch(w) for w in student.get_weights()]
    h = torch.tanh(to_torch(X[:16], False) @ ws[0] + ws[1])
    z = torch.relu(h @ ws[2] + ws[3]) @ ws[4] + ws[5]
    kl = F.kl_div(F.log_softmax(z / temperature, -1), to_torch(soft, False), reduction="batchmean")
    label = F.cross_entropy(z, torch.tensor(Y[:16]))
    expected = alpha * temperature**2 * kl + (1 - alpha) * label
    expected.backward()
    expected = expected.detach()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert_close(grad, np.concatenate([w.grad.numpy().ravel() for w in ws]), rtol=1e-9)


def test_a_teacher_model_and_its_saved_folder_teach_alike(tmp_path):
    teacher = mlp(seed=5)
    teacher.fit(X, Y, epochs=5, verbose=0, seed=1)
    teacher.save(tmp_path / "teacher")
    a, _ = train(way=Distillation(teacher=teacher, alpha=1.0, temperature=3))
    b, _ = train(way=Distillation(teacher=tmp_path / "teacher", alpha=1.0, temperature=3))
    assert np.array_equal(flat(a), flat(b))
    assert not np.allclose(flat(a), flat(train()[0]))
    with pytest.raises(ValueError, match="not built"):
        Distillation(teacher=mlp())


# ----- all of them: options, errors, compare ------------------------------------------------------
def test_bad_settings_fail_when_the_way_is_made_with_what_to_do():
    with pytest.raises(ValueError, match="gives 2 cut.*needs 1: one, like cuts=3"):
        make_way("split-learning", 2, {"cuts": "2,4"})
    with pytest.raises(ValueError, match="needs 2: two, like cuts=2,5"):
        USplitLearning(cuts=3)
    with pytest.raises(ValueError, match="cuts='x' are not layer indices"):
        SplitLearning(cuts="x")
    with pytest.raises(ValueError, match="make 3 blocks.*blocks=2"):
        LocalLearning(blocks=2, cuts="1,2")
    assert make_way("local-learning", 4, {"cuts": "1:2"}).blocks == 3
    with pytest.raises(ValueError, match="alpha in \\[0, 1\\]"):
        make_way("distillation", 2, {"alpha": 1.5})


def test_every_way_is_made_from_its_options_and_compared(tmp_path):
    def build(quick, seed):
        class Data:
            x_train, y_train, x_test, y_test = IMAGES, LABELS, IMAGES, LABELS

        model = cnn()
        model.compile(model.optimizer, model.loss, metrics=["accuracy"])
        return model, Data

    names = [cls.name for cls in WAYS]
    assert [make_way(n, 2).name for n in names] == names
    rows = compare(
        build, places=2, out=tmp_path, epochs=1, batch_size=16, verbose=False, ways=names
    )
    for row in rows[1:]:
        assert row["bytes"] == row["textbook"], row["way"]
        if row["should_match"]:
            assert row["max_weight_diff"] < 1e-12, row["way"]
    matching = {r["way"] for r in rows[1:] if r["should_match"]}
    assert matching == {"zero", "offload", "split-learning", "split-learning-u"}


@pytest.mark.slow
def test_compare_digits_cnn_quick_covers_these_ways(tmp_path):
    names = [cls.name for cls in WAYS]
    rows = compare("digits-cnn", places=2, out=tmp_path, verbose=False, ways=names)
    assert [r["way"] for r in rows] == ["single place", *names]
    for row in rows[1:]:
        assert row["bytes"] == row["textbook"] and np.isfinite(row["loss"]), row["way"]
        if row["should_match"]:
            assert row["max_weight_diff"] < 1e-5, row["way"]  # float32
