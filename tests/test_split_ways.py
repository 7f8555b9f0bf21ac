"""Split training on the Inline place: each way's equivalence property, exactly (#1–6, 13, 14).

Models are float64 so that "allclose" can be tight; see docs/split-training.md for the table.
"""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import nn, optim
from splitgrad.split import (
    DPSGD,
    WAYS,
    CheckpointResume,
    DataParallel,
    DiLoCo,
    DPFedAvg,
    Federated,
    FedProx,
    GradientAccumulation,
    LocalSGD,
    ParameterServer,
    compare,
    dp_sgd,
    make_way,
    partition,
    privacy,
    robust,
)
from splitgrad.split.catalogue import catalogue, print_ways
from splitgrad.split.cli import parse_options, way_from_args
from splitgrad.split.places import PlaceUnreachable, _check_reachable


def make_model(opt="sgd", lr=0.1, dropout=0.0, seed=0, dtype="float64"):
    sg.seed(seed)
    layers = [nn.Dense(8, activation="tanh")]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Dense(3))
    model = nn.Sequential(layers, dtype=dtype)
    optimizer = optim.SGD(learning_rate=lr) if opt == "sgd" else optim.Adam(learning_rate=lr)
    model.compile(
        optimizer=optimizer, loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def make_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return x, y


X, Y = make_data()


def fit(way=None, opt="sgd", batch_size=16, epochs=2, dropout=0.0, x=X, y=Y, **kw):
    model = make_model(opt=opt, dropout=dropout)
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, seed=3, verbose=0, way=way, **kw
    )
    return model, history


def flat(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(flat(a), flat(b), rtol=tol, atol=tol)


# ----- #1 data parallel ------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_data_parallel_equals_one_worker_and_replicas_are_bitwise_equal(workers, opt):
    ref, _ = fit(opt=opt, batch_size=20)  # 48 rows: batches of 20, 20, 8 (uneven shards)
    way = DataParallel(workers)
    model, history = fit(way, opt=opt, batch_size=20)
    close(model, ref)
    replicas = way.replica_weights()
    assert all(np.array_equal(replicas[0], r) for r in replicas)
    assert history.traffic["steps"] == 6


@pytest.mark.parametrize("n", [2, 4])
def test_data_parallel_bytes_equal_the_ring_formula(n):
    model, history = fit(DataParallel(n), batch_size=16)
    p = sum(w.size for w in model.get_weights())
    assert p == 75  # odd, not a multiple of 4: the chunks are uneven
    t = history.traffic
    assert t["total_bytes"] == t["bytes"]["gradients"] == 6 * 2 * (n - 1) * p * 8
    assert t["total_bytes"] == t["textbook_bytes"]
    # N = 2 swaps whole gradients (one message each way), N > 2 sends 2(N−1) chunks per worker.
    per_worker = 1 if n == 2 else 2 * (n - 1)
    assert t["messages"]["gradients"] == 6 * n * per_worker
    assert set(t["busy_s"]) == {f"worker{r}" for r in range(n)}
    assert set(t["idle_s"]) == set(t["busy_s"])


def test_dropout_streams_are_seeded_per_replica_from_the_run_seed():
    # Worker r draws its masks from (run seed, r, step): reproducible, independent of the
    # process it runs in (test_split_ray checks Ray == Inline), and the driver's stream is
    # left alone.
    way = DataParallel(2)
    a, _ = fit(way, dropout=0.3, batch_size=16)
    replicas = way.replica_weights()
    assert np.array_equal(replicas[0], replicas[1])
    after = sg.random.get_state()
    b, _ = fit(DataParallel(2), dropout=0.3, batch_size=16)
    assert np.array_equal(flat(a), flat(b))
    assert sg.random.get_state() == after  # fit re-seeds via make_model only
    other = make_model(dropout=0.3)
    other.fit(X, Y, batch_size=16, epochs=2, seed=4, verbose=0, way=DataParallel(2))
    no_dropout, _ = fit(DataParallel(2), batch_size=16)
    assert not np.allclose(flat(a), flat(other)) and not np.allclose(flat(a), flat(no_dropout))


# ----- #2 parameter server ---------------------------------------------------------------------
def test_parameter_server_one_worker_is_sequential_sgd():
    ref, _ = fit(batch_size=16)
    model, history = fit(ParameterServer(1, staleness=3), batch_size=16)
    close(model, ref)
    assert history.traffic["max_staleness"] == 0


def test_parameter_server_staleness_zero_equals_data_parallel():
    ref, _ = fit(DataParallel(3), batch_size=16)
    model, _ = fit(ParameterServer(3, staleness=0), batch_size=16)
    close(model, ref)


def test_parameter_server_bound_and_every_push_applied_once():
    way = ParameterServer(3, staleness=2)
    _, history = fit(way, batch_size=8, epochs=2)  # 12 clocks
    t = history.traffic
    assert t["max_staleness"] == 2 and set(t["staleness_histogram"]) == {0, 1, 2}
    assert t["pushes_applied"] == 3 * 12 and t["each_push_once"]
    assert sorted((w, c) for w, c, _ in way.pushes) == [(w, c) for w in range(3) for c in range(12)]
    assert t["total_bytes"] == t["textbook_bytes"]


# ----- #3 local SGD and DiLoCo -----------------------------------------------------------------
def test_local_sgd_h1_equals_data_parallel():
    ref, _ = fit(DataParallel(2), batch_size=16)
    model, history = fit(LocalSGD(2, H=1), batch_size=16)
    close(model, ref)
    assert history.traffic["total_bytes"] == history.traffic["textbook_bytes"]


def test_diloco_outer_lr_one_is_local_sgd():
    ref, _ = fit(LocalSGD(2, H=2))
    model, _ = fit(DiLoCo(2, H=2, outer_lr=1.0, outer_momentum=0.0, nesterov=False))
    close(model, ref)
    other, _ = fit(DiLoCo(2, H=2))  # the real outer optimizer does something else
    assert np.abs(flat(other) - flat(ref)).max() > 1e-6


# ----- #4 federated ------------------------------------------------------------------------------
def test_fedavg_one_client_one_full_batch_step_is_sgd():
    ref, _ = fit(batch_size=len(X), epochs=1, shuffle=False)
    model, _ = fit(Federated(clients=1, local_batch_size=None), epochs=1)
    close(model, ref)


def test_fedavg_k_clients_full_batch_is_gd_on_the_union():
    ref, _ = fit(batch_size=len(X), epochs=3, shuffle=False)
    way = Federated(
        clients=5, local_batch_size=None, partition="dirichlet", alpha=0.5, seed=1
    )  # uneven n_k
    model, history = fit(way, epochs=3)
    close(model, ref)
    sizes = history.traffic["client_sizes"]
    assert sum(sizes) == len(X) and len(set(sizes)) > 1


def test_fedprox_mu_zero_is_fedavg_bitwise_and_mu_changes_it():
    a, _ = fit(Federated(clients=4, local_batch_size=4, local_epochs=2), epochs=2)
    b, _ = fit(FedProx(clients=4, mu=0.0, local_batch_size=4, local_epochs=2), epochs=2)
    c, _ = fit(FedProx(clients=4, mu=1.0, local_batch_size=4, local_epochs=2), epochs=2)
    assert np.array_equal(flat(a), flat(b))
    assert not np.allclose(flat(a), flat(c))


def test_sampling_is_seeded_and_dropouts_are_left_out_and_reported():
    runs = [
        fit(Federated(clients=10, fraction=0.5, dropout=0.3, seed=s), epochs=4)[1]
        for s in (5, 5, 6)
    ]
    rounds = [r.traffic["rounds"] for r in runs]
    assert rounds[0] == rounds[1] and rounds[0] != rounds[2]
    assert all(len(r["sampled"]) == 5 for r in rounds[0])
    dropped = runs[0].traffic["dropped_total"]
    assert dropped == sum(len(r["dropped"]) for r in rounds[0]) > 0
    assert runs[0].history["clients"] == [5.0 - len(r["dropped"]) for r in rounds[0]]


def test_raw_client_data_never_crosses():
    way = Federated(clients=4, local_batch_size=4)
    way.keep_payloads = True
    _, history = fit(way, epochs=2)
    log = history.traffic_log
    assert log.payloads and {k for k, *_ in log.payloads} <= {"weights", "counts"}
    rows = [X[i].tobytes() for i in range(len(X))]
    labels = Y.tobytes()
    for _, _, _, payload in log.payloads:
        blob = np.asarray(payload).tobytes()
        assert not any(row in blob for row in rows)
        assert labels not in blob


def test_partitions_cover_every_row_once():
    for how in ("iid", "dirichlet"):
        parts = partition(Y, 7, how, alpha=0.1, seed=2)
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(Y)))


# ----- #5 robust aggregation ---------------------------------------------------------------------
AGGS = [("median", 2), ("trimmed-mean", 2), ("krum", 2)]


@given(st.integers(1, 6), st.integers(0, 10**6))
def test_identical_honest_updates_come_back_unchanged(p, seed):
    u = np.random.default_rng(seed).normal(size=p).astype(np.float32)
    stack = np.tile(u, (7, 1))
    assert np.array_equal(robust.median(stack), u)
    assert np.array_equal(robust.krum(stack, 2), u)
    np.testing.assert_allclose(robust.trimmed_mean(stack, 2), u, rtol=1e-6)


@given(st.integers(0, 10**6))
def test_robust_aggregators_ignore_order_and_keep_attackers_out(seed):
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=(7, 5))
    hostile = np.stack([robust.hostile_update(5, np.float64, [seed, i]) for i in range(2)])
    stack = np.concatenate([hostile, honest])
    for name, f in AGGS:
        agg = robust.AGGREGATORS[name]
        out = agg(stack, f)
        assert np.array_equal(out, agg(stack[rng.permutation(9)], f)), name
        assert np.all(out >= honest.min(0)) and np.all(out <= honest.max(0)), name


def test_poisoned_federated_run_survives_with_median_not_with_mean():
    robust_model, h = fit(Federated(clients=8, aggregator="median", poisoned=2), epochs=2)
    mean_model, _ = fit(Federated(clients=8, poisoned=2), epochs=2)
    assert np.abs(flat(robust_model)).max() < 10
    assert np.abs(flat(mean_model)).max() > 1e4
    assert h.traffic["rounds"][0]["poisoned"] == [0, 1]


# ----- #6 DP-SGD --------------------------------------------------------------------------------
def test_dp_sgd_without_noise_or_clipping_is_sgd():
    ref, _ = fit(batch_size=16)
    # fit's own batches (the default draws Poisson samples, which a plain run does not).
    way = DPSGD(clip=None, noise_multiplier=0.0, workers=2, sampling="shuffle")
    model, history = fit(way, batch_size=16)
    close(model, ref)
    assert history.traffic["noise_multiplier"] == 0.0 and history.traffic["steps"] == 6
    assert history.traffic["epsilon"] == math.inf  # no clipping and no noise: no privacy


def test_dp_sgd_clips_every_example_and_reports_the_budget_inputs():
    _, history = fit(DPSGD(clip=0.05, noise_multiplier=1.1), batch_size=16)
    t = history.traffic
    assert 0 < t["max_clipped_norm"] <= 0.05
    assert t["noise_multiplier"] == 1.1 and t["sample_rate"] == 16 / 48 and t["steps"] == 6
    assert t["delta"] == 1e-5 and t["sampling"] == "poisson"
    assert t["epsilon"] == privacy.epsilon(16 / 48, 1.1, 6, 1e-5, "tight")[0]
    assert t["epsilon_classic"] == privacy.epsilon(16 / 48, 1.1, 6, 1e-5)[0] > t["epsilon"]
    assert 0 < t["epsilon"] < math.inf


def test_per_example_gradients_in_one_batched_pass_equal_the_loop():
    model = make_model()
    model.build_from_sample(X)
    for clip in (None, 0.05):
        loop = dp_sgd._looped(model, X[:16], Y[:16], clip)
        batched = dp_sgd._batched(model, X[:16], Y[:16], clip)
        np.testing.assert_allclose(batched[0], loop[0], rtol=1e-10, atol=1e-12)
        assert batched[1] == pytest.approx(loop[1], rel=1e-12)
        assert batched[2] == pytest.approx(loop[2], rel=1e-12)
    regularised = nn.Sequential([nn.Dense(3, kernel_regularizer="l2")], dtype="float64")
    regularised.compile(optimizer=optim.SGD(), loss=sg.losses.MeanSquaredError())
    regularised.build_from_sample(X)
    assert not dp_sgd._plain_mean_loss(regularised)  # falls back to the exact loop


# ----- #13 accumulation ---------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 4])
def test_accumulation_equals_the_big_batch(k):
    ref, _ = fit(opt="adam", batch_size=24)
    model, history = fit(GradientAccumulation(k), opt="adam", batch_size=24)
    close(model, ref)
    assert history.traffic["total_bytes"] == 0


# ----- #14 checkpoint / resume -----------------------------------------------------------------
def test_move_between_places_mid_run_is_bitwise_the_straight_run(tmp_path):
    ref, _ = fit(opt="adam", dropout=0.2, batch_size=8, epochs=2)
    way = CheckpointResume(move_at=7, directory=tmp_path / "ck")
    model, history = fit(way, opt="adam", dropout=0.2, batch_size=8, epochs=2)
    assert np.array_equal(flat(model), flat(ref))
    assert history.traffic["bytes"]["state"] > 0 and (tmp_path / "ck").is_dir()


RESUME = textwrap.dedent(f"""
    import sys
    import numpy as np
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from test_split_ways import make_data, make_model
    from splitgrad.split import CheckpointResume, resume
    mode, ck, out = sys.argv[1:]
    x, y = make_data()
    model = make_model(opt="adam", dropout=0.2)
    if mode == "straight":
        model.fit(x, y, batch_size=8, epochs=2, seed=3, verbose=0)
    elif mode == "save":
        way = CheckpointResume(move_at=5, directory=ck, stop_after_save=True)
        model.fit(x, y, batch_size=8, epochs=2, seed=3, verbose=0, way=way)
    else:
        history = resume(model, x, y, ck)
        assert history.traffic["steps"] == 12, history.traffic["steps"]
    np.save(out, np.concatenate([w.ravel() for w in model.get_weights()]))
""")


def _child(tmp_path, mode, env=None):
    out = tmp_path / f"{mode}.npy"
    subprocess.run(
        [sys.executable, "-c", RESUME, mode, str(tmp_path / "ck"), str(out)],
        check=True,
        cwd=tmp_path,
        timeout=120,
        env=env,
    )
    return np.load(out)


def test_resume_in_a_new_process_is_bitwise_the_straight_run(tmp_path):
    ref, _ = fit(opt="adam", dropout=0.2, batch_size=8, epochs=2)
    fit(
        CheckpointResume(move_at=5, directory=tmp_path / "ck", stop_after_save=True),
        opt="adam",
        dropout=0.2,
        batch_size=8,
        epochs=2,
    )
    # The child inherits the whole environment, the BLAS settings included.
    assert np.array_equal(_child(tmp_path, "resume"), flat(ref))


@pytest.mark.parametrize("kernel", ["Haswell", "SkylakeX", "Sandybridge"])
def test_resume_is_bitwise_under_any_blas_kernel(tmp_path, kernel):
    """Straight, saving and resuming processes all under OPENBLAS_CORETYPE=kernel (the rest of
    the environment inherited): bitwise equal whatever the kernel."""
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
    straight = _child(tmp_path, "straight", env)
    _child(tmp_path, "save", env)
    assert np.array_equal(_child(tmp_path, "resume", env), straight)


# ----- catalogue, CLI, failures -----------------------------------------------------------------
def test_catalogue_lists_all_sixteen_ways(capsys):
    print_ways()
    out = capsys.readouterr().out
    rows = catalogue()
    numbers = [r[0] for r in rows]
    assert numbers[:16] == list(range(1, 17)) and all(r[1] in out for r in rows)


def test_way_from_args_and_options():
    assert parse_options(["H=3", "mu=0.5", "partition=dirichlet"]) == {
        "H": 3,
        "mu": 0.5,
        "partition": "dirichlet",
    }
    way = way_from_args("local-sgd", 3, {"H": 3})
    assert (way.workers, way.H) == (3, 3)
    assert make_way("robust", 4, {"poisoned": 1}).poisoned == 1
    with pytest.raises(ValueError, match="unknown way"):
        make_way("teleport", 2)


def _compare_build(quick, seed):
    """A recipe-like builder for `compare`: the small model on the test data, with accuracy."""

    class Data:
        x_train, y_train, x_test, y_test = X, Y, X, Y

    model = make_model(dropout=0.0)
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    return model, Data


def test_compare_writes_table_markdown_and_png(tmp_path):
    rows = compare(
        _compare_build,
        places=2,
        out=tmp_path,
        epochs=1,
        batch_size=16,
        verbose=False,
        ways=["data-parallel", "accumulation", "federated"],
    )
    assert [r["way"] for r in rows] == [
        "single place",
        "data-parallel",
        "accumulation",
        "federated",
    ]
    assert rows[1]["max_weight_diff"] < 1e-10 and rows[1]["bytes"] == rows[1]["textbook"]
    assert [r["should_match"] for r in rows] == [True, True, True, False]
    assert "delta" in rows[3]["note"]  # says why federated differs
    table = (tmp_path / "compare.md").read_text()
    assert table.count("\n| ") >= 4 and "| why |" in table
    assert (tmp_path / "compare.png").stat().st_size > 1000


def test_unreachable_cluster_fails_fast_with_a_clear_error():
    with pytest.raises(PlaceUnreachable, match="cannot reach"):
        _check_reachable("127.0.0.1:1", 2.0)


def test_an_option_a_way_does_not_read_is_an_error():
    """A misspelt --way-option must not be silently ignored: every implemented way checks."""
    with pytest.raises(ValueError, match="has no option 'noise_multiplier'; its options: clip"):
        make_way("dp-sgd", 2, {"noise_multiplier": 2.0})
    for name in WAYS:
        with pytest.raises(ValueError, match="has no option 'bogus'"):
            make_way(name, 2, {"bogus": 1})


# ----- server optimizers and client evaluation (federated) ---------------------------------------
@pytest.mark.parametrize(
    "neutral, tol",
    [
        ({"server_optimizer": "fedavgm", "server_momentum": 0.0}, 0.0),
        (
            {
                "server_optimizer": "fedadam",
                "server_beta_1": 0.0,
                "server_beta_2": 1.0,
                "server_tau": 1.0,
            },
            0.0,
        ),
        (
            {
                "server_optimizer": "fedyogi",
                "server_beta_1": 0.0,
                "server_beta_2": 1.0,
                "server_tau": 1.0,
            },
            0.0,
        ),
        ({"server_optimizer": "fedadagrad", "server_lr": 1e30, "server_tau": 1e30}, 1e-12),
    ],
)
def test_each_server_optimizer_at_its_neutral_setting_equals_fedavg(neutral, tol):
    kw = {"clients": 4, "local_batch_size": 6, "seed": 1}
    ref, _ = fit(Federated(**kw), epochs=3)
    model, _ = fit(Federated(**kw, **neutral), epochs=3)
    np.testing.assert_allclose(flat(model), flat(ref), rtol=tol, atol=tol)
    moving, _ = fit(Federated(**kw, server_optimizer=neutral["server_optimizer"]), epochs=3)
    assert not np.allclose(flat(moving), flat(ref))  # the real settings do something else


def test_server_adam_follows_its_formula():
    from splitgrad.split.server_optim import ServerOptimizer

    opt = ServerOptimizer("fedadam", lr=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    w, d1, d2 = np.zeros(2), np.array([1.0, -2.0]), np.array([0.5, 0.5])
    w1 = opt.step(w, d1)
    m, v = 0.1 * d1, 0.01 * d1**2
    np.testing.assert_allclose(w1, 0.1 * m / (np.sqrt(v) + 1e-3))
    w2 = opt.step(w1, d2)
    m, v = 0.9 * m + 0.1 * d2, 0.99 * v + 0.01 * d2**2
    np.testing.assert_allclose(w2, w1 + 0.1 * m / (np.sqrt(v) + 1e-3))
    with pytest.raises(ValueError, match="server optimizer must be one of"):
        ServerOptimizer("fedsgd")


def test_clients_evaluate_the_global_model_on_their_held_out_rows():
    model = make_model()
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    history = model.fit(
        X,
        Y,
        batch_size=6,
        epochs=2,
        seed=3,
        verbose=0,
        way=Federated(clients=4, client_eval=0.25, seed=1),
    )
    h = history.history
    for key in ("client_val_loss", "client_val_accuracy", "client_val_accuracy_std"):
        assert len(h[key]) == 2 and all(np.isfinite(h[key])), key
    assert all(0.0 <= a <= 1.0 for a in h["client_val_accuracy"])
    # The held-out rows train nobody: each client trains on 75 % of its 12 rows.
    assert history.traffic["client_sizes"] == [9, 9, 9, 9]


def test_compare_to_the_same_budget_counts_steps_and_rounds(tmp_path):
    rows = compare(
        _compare_build,
        places=2,
        out=tmp_path,
        batch_size=16,
        verbose=False,
        ways=["data-parallel", "federated"],
        budget_steps=4,
    )
    assert [(r["steps"], r["unit"]) for r in rows] == [(4, "step"), (4, "step"), (4, "round")]
    assert "4 optimizer steps each" in (tmp_path / "compare.md").read_text()
    rows = compare(
        _compare_build,
        places=2,
        out=tmp_path,
        batch_size=16,
        verbose=False,
        ways=["data-parallel"],
        target_accuracy=0.5,
        max_epochs=30,
    )
    assert all(r["reached"] for r in rows) and all(r["epochs"] < 30 for r in rows)
    assert "| steps |" in (tmp_path / "compare.md").read_text()


def test_ray_places_default_to_one_actor_per_core():
    import os

    from splitgrad.split.places import actors_for

    cores = os.cpu_count() or 1
    assert actors_for(10) == min(10, cores) and actors_for(1) == 1


def test_dp_sgd_draws_poisson_batches():
    import types

    way = DPSGD(clip=0.5, noise_multiplier=0.0, seed=4)
    run = types.SimpleNamespace(x=X, batch_size=16, source=[0, 1, 2])  # 3 batches an epoch
    epochs = [way.batches(run, e) for e in range(300)]
    sizes = [len(b) for batches in epochs for b in batches]
    assert all(len(batches) == 3 for batches in epochs) and len(set(sizes)) > 5
    assert abs(np.mean(sizes) - 16) < 0.5  # each row joins with probability 16/48
    assert all(np.array_equal(a, b) for a, b in zip(epochs[7], way.batches(run, 7)))
    _, history = fit(way, batch_size=16, epochs=3)
    assert history.traffic["steps"] == 9 and history.traffic["sampling"] == "poisson"


def test_dp_sgd_finds_the_noise_for_a_target_epsilon():
    way = DPSGD(clip=1.0, target_epsilon=2.0, delta=1e-5)
    _, history = fit(way, batch_size=16, epochs=2)
    t = history.traffic
    assert t["epsilon"] <= 2.0 and t["epsilon"] > 1.9  # the smallest σ that stays within it
    sigma = privacy.noise_for(2.0, 16 / 48, 6, 1e-5)
    assert t["noise_multiplier"] == sigma


def test_tight_conversion_follows_balle_et_al():
    q, sigma, steps, delta = 0.01, 1.0, 1000, 1e-5
    tight, order = privacy.epsilon(q, sigma, steps, delta, "tight")
    rdp = steps * privacy.rdp_step(q, sigma, order)
    by_hand = (
        rdp + math.log((order - 1) / order) - (math.log(delta) + math.log(order)) / (order - 1)
    )
    assert tight == pytest.approx(by_hand) and tight < privacy.epsilon(q, sigma, steps, delta)[0]


# ----- user-level DP for federated averaging --------------------------------------------------
def test_dp_fedavg_without_noise_or_clipping_is_fedavg():
    kw = {"clients": 4, "local_batch_size": 6, "seed": 1}  # 12 rows each: equal weights
    ref, _ = fit(Federated(**kw), epochs=3)
    model, history = fit(DPFedAvg(**kw, dp_clip=None, dp_noise=0.0, dp_quantile=None), epochs=3)
    close(model, ref, tol=1e-12)
    assert history.traffic["user_epsilon"] == math.inf  # no clipping: no privacy


def test_dp_fedavg_clips_updates_adapts_the_bound_and_reports_epsilon():
    from splitgrad.split.user_dp import UserLevelDP

    dp = UserLevelDP(clip=1.0, noise=0.0, expected_clients=2)
    update = dp.aggregate(np.array([[3.0, 4.0], [0.3, 0.4]]), 0)
    np.testing.assert_allclose(update, [(0.6 + 0.3) / 2, (0.8 + 0.4) / 2])
    adaptive = UserLevelDP(
        clip=1.0, noise=0.0, expected_clients=4, target_quantile=0.5, bit_noise=0.0
    )
    adaptive.aggregate(np.array([[0.1, 0.0]] * 4), 0)  # every norm below C: C shrinks
    assert adaptive.clip == pytest.approx(math.exp(-0.2 * (1.0 - 0.5)))
    _, history = fit(DPFedAvg(clients=4, local_batch_size=6, fraction=0.5), epochs=3)
    t = history.traffic
    assert 0 < t["user_epsilon"] < math.inf and len(t["clip_bounds"]) == 3
    assert len(set(t["clip_bounds"])) == 3  # the bound moved every round


# ----- secure aggregation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "drop",
    [{}, {"keys": [1]}, {"shares": [2]}, {"masked": [3]}, {"keys": [0], "shares": [4]}],
)
def test_secure_aggregation_sum_is_exact_when_clients_drop_at_each_phase(drop):
    from splitgrad.split.secure_agg import SecureAggregation, decode, encode

    rng = np.random.default_rng(5)
    inputs = {k: rng.normal(size=7) * 3 for k in range(6)}
    protocol = SecureAggregation(range(6), 7, threshold=3, seed=1)
    total, senders, messages = protocol.run(inputs, drop_after=drop)
    # Clients dropped before sending their masked vector are out of the sum; the rest in.
    gone = set(drop.get("keys", [])) | set(drop.get("shares", []))
    assert senders == set(range(6)) - gone
    expected = sum(encode(inputs[k]) for k in senders)  # the exact fixed-point sum
    assert np.array_equal(total, decode(expected))
    np.testing.assert_allclose(total, sum(inputs[k] for k in senders), atol=1e-8)
    for phase, sender, payload in messages:  # no message is, or is close to, one input
        if phase == "masked":
            assert np.abs(decode(payload) - inputs[sender]).min() > 1.0


def test_secure_aggregation_needs_enough_survivors():
    from splitgrad.split.secure_agg import SecureAggregation

    protocol = SecureAggregation(range(4), 3, threshold=3, seed=0)
    with pytest.raises(RuntimeError, match="fewer than the threshold 3"):
        protocol.run({k: np.ones(3) for k in range(4)}, drop_after={"masked": [0, 1]})


def test_federated_round_with_secure_aggregation_keeps_the_aggregate_and_hides_updates():
    kw = {"clients": 4, "local_batch_size": 6, "seed": 1}
    ref, _ = fit(Federated(**kw), epochs=2)
    way = Federated(**kw, secure_aggregation=True)
    way.keep_payloads = True
    model, history = fit(way, epochs=2)
    close(model, ref, tol=1e-7)  # the same mean, up to the 2⁻³² fixed point
    t = history.traffic
    assert t["bytes"]["keys"] > 0 and t["messages"]["keys"] > 0  # the protocol's extra cost
    masked = [p for kind, _, dst, p in history.traffic_log.payloads if dst == "server"]
    assert masked and all(p.dtype == np.uint64 for p in masked)  # only masked vectors arrive


def test_per_example_gradients_of_a_cnn_in_one_batched_pass_equal_the_loop():
    """Conv2D offers the per-example hook too (its receptive fields are the linear site), so
    DP-SGD needs no loop for a CNN; both the built-per-example and the Gram path are used."""
    sg.seed(0)
    model = nn.Sequential(
        [
            nn.Conv2D(4, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(3, 2, padding="same"),
            nn.Flatten(),
            nn.Dense(3),
        ],
        dtype="float64",
    )
    model.compile(
        optimizer=optim.SGD(), loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 9, 9, 2)), rng.integers(0, 3, 8)
    model.build_from_sample(x)
    for clip in (None, 0.3):
        loop = dp_sgd._looped(model, x, y, clip)
        batched = dp_sgd._batched(model, x, y, clip)
        np.testing.assert_allclose(batched[0], loop[0], rtol=1e-10, atol=1e-12)
        assert batched[2] == pytest.approx(loop[2], rel=1e-12)


def test_a_yes_no_option_reads_false_as_no():
    """`--way-option secure_aggregation=false` must not switch it on (a non-empty string)."""
    from splitgrad.split.cli import parse_options

    off = make_way("federated", 4, parse_options(["secure_aggregation=false"]))
    assert off.secure_aggregation is False
    assert make_way("federated", 4, parse_options(["secure_aggregation=1"])).secure_aggregation
    with pytest.raises(ValueError, match="'secure_aggregation' is yes or no"):
        make_way("federated", 4, {"secure_aggregation": "maybe"})


def test_the_printed_report_names_user_privacy_and_lost_places():
    from splitgrad.split.accounting import format_report

    base = {"way": "dp-fedavg", "bytes": {}, "messages": {}, "total_bytes": 0, "busy_s": {}}
    line = format_report(
        {
            **base,
            "wall_s": 1.0,
            "user_epsilon": 3.21,
            "user_delta": 1e-5,
            "elastic": [{"place": 2, "event": "retired (gone)", "step": 4}],
        }
    )
    assert "user-level privacy ε = 3.21 at δ = 1e-05" in line
    assert "place 2 retired (gone)" in line
