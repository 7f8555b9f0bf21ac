"""Split training on Ray actors: same weights as Inline, recovery from a killed place, bytes.

One local cluster (2 CPUs, no dashboard) and one pair of places serve the whole module.
"""

import time

import numpy as np
import pytest
from test_split_ways import X, Y, close, fit, flat

import splitgrad as sg
from splitgrad import nn, optim
from splitgrad.split import (
    DPSGD,
    WAYS,
    CheckpointResume,
    DataParallel,
    Federated,
    Inline,
    PlaceUnreachable,
    RayPlaces,
    make_way,
)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def places(ray_places):
    return ray_places


class KillAt:
    """Kills place 1 right after step (or round) `at` completes."""

    def __init__(self, places, at, hook="on_train_batch_end"):
        self.places, self.at, self.done = places, at, False
        setattr(self, hook, self._maybe_kill)

    def _maybe_kill(self, step, logs=None):
        if step == self.at and not self.done:
            self.done = True
            self.places.kill(1)


def test_data_parallel_on_ray_equals_inline_and_bytes_equal_formula(places):
    ref, _ = fit(DataParallel(3, places=Inline()), opt="adam", batch_size=16)
    model, history = fit(DataParallel(3, places=places), opt="adam", batch_size=16)
    close(model, ref, tol=1e-12)
    t = history.traffic
    assert t["total_bytes"] == t["textbook_bytes"] == 6 * 2 * 2 * 75 * 8
    assert set(t["busy_s"]) == {"worker0", "worker1", "worker2"}


def test_dropout_runs_on_ray_equal_inline(places):
    # Every replica's dropout stream is seeded from (run seed, rank, step), not its process.
    for make in (
        lambda w: DataParallel(3, places=w),
        lambda w: DPSGD(clip=0.5, noise_multiplier=0.3, workers=2, places=w),
    ):
        ref, _ = fit(make(Inline()), opt="adam", dropout=0.3, batch_size=16)
        model, _ = fit(make(places), opt="adam", dropout=0.3, batch_size=16)
        assert np.array_equal(flat(model), flat(ref))
    kw = {"clients": 4, "local_batch_size": 6, "seed": 1}
    ref, _ = fit(Federated(**kw, places=Inline()), dropout=0.3)
    model, _ = fit(Federated(**kw, places=places), dropout=0.3)
    assert np.array_equal(flat(model), flat(ref))


def test_a_hung_place_is_a_clear_error_within_the_time_limit(places):
    class HangAt:
        def on_train_batch_end(self, step, logs=None):
            if step == 1:
                places.stall(1, 60)  # place 1 stops answering, but its process lives

    saved, places.timeout = places.timeout, 2.0
    start = time.perf_counter()
    try:
        with pytest.raises(PlaceUnreachable, match=r"place\(s\) \[1\].*time limit of 2 s"):
            fit(DataParallel(2, places=places), batch_size=8, callbacks=[HangAt()])
        assert time.perf_counter() - start < 2.0 + 4.0
    finally:
        places.timeout = saved
        places.restart(1)  # replace the hung actor for the tests that follow


def test_fedavg_on_ray_equals_inline(places):
    kw = {"clients": 6, "fraction": 0.5, "local_batch_size": 4, "seed": 2}
    ref, _ = fit(Federated(**kw, places=Inline()), epochs=3)
    model, _ = fit(Federated(**kw, places=places), epochs=3)
    close(model, ref, tol=1e-12)


@pytest.mark.parametrize("workers", [2, 3])  # whole-gradient exchange; reduce-scatter
def test_killed_place_in_data_parallel_recovers_without_losing_steps(places, workers):
    kw = {"opt": "adam", "batch_size": 8, "dropout": 0.2}
    ref, _ = fit(DataParallel(workers, places=Inline()), **kw)
    killer = KillAt(places, at=3)
    model, history = fit(DataParallel(workers, places=places), callbacks=[killer], **kw)
    t = history.traffic
    assert killer.done and t["recoveries"][0]["step"] == 4
    assert t["steps"] == 12 and len(history.history["loss"]) == 2
    assert np.array_equal(flat(model), flat(ref))  # per-step dropout streams: redo is exact
    assert t["total_bytes"] == t["textbook_bytes"]  # the cut-short step is counted once


def test_killed_place_in_federated_round_recovers(places):
    kw = {"clients": 4, "local_batch_size": 6, "seed": 1}
    ref, _ = fit(Federated(**kw, places=Inline()), epochs=3)
    killer = KillAt(places, at=0, hook="on_epoch_end")
    model, history = fit(Federated(**kw, places=places), epochs=3, callbacks=[killer])
    assert killer.done and history.traffic["recoveries"][0]["round"] == 1
    assert history.traffic["steps"] == 3
    close(model, ref, tol=1e-12)


def test_move_a_run_from_inline_to_a_ray_place_mid_training(places):
    ref, _ = fit(opt="adam", batch_size=8)
    model, _ = fit(CheckpointResume(move_at=5, places=[Inline(), places]), opt="adam", batch_size=8)
    assert np.array_equal(flat(model), flat(ref))
    assert X.shape[0] == Y.shape[0]


def _mlp():
    sg.seed(0)
    # 209,514 weights in three layers (the U-shaped split needs three blocks).
    model = nn.Sequential(
        [nn.Dense(256, activation="relu"), nn.Dense(32, activation="relu"), nn.Dense(10)]
    )
    model.compile(
        optimizer=optim.Adam(learning_rate=1e-3),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.mark.parametrize("name", sorted(n for n, c in WAYS.items() if c.trains_on == "arrays"))
def test_every_way_gives_bitwise_equal_weights_on_ray_and_inline(places, name):
    """A Ray place runs its BLAS with the driver's thread count, so products round alike and a
    float32 MLP of 210k weights under Adam ends bitwise equal on Ray and inline."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 784)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    weights = []
    for where in (Inline(), places):
        model = _mlp()
        model.fit(
            x, y, batch_size=64, epochs=1, seed=1, verbose=0, way=make_way(name, 2, where=where)
        )
        weights.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights)), name


def test_ray_places_run_with_the_drivers_blas_threads_and_say_where(places):
    from threadpoolctl import threadpool_info

    mine = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    assert places.threads == mine
    assert all(w["blas_threads"] == mine and w["pid"] for w in places.where.values())
    assert "BLAS thread(s) each" in places.describe()


def test_a_place_that_cannot_come_back_is_retired_and_the_run_goes_on(places, monkeypatch):
    """Elastic: 3 workers on 2 places; place 1 dies and cannot be restarted, so its worker
    moves to place 0; the run ends with the one-place weights and place 0 holds every
    worker's replica and data."""

    own = RayPlaces(2, timeout=60)
    try:
        ref, _ = fit(DataParallel(3, places=Inline()), opt="adam", batch_size=8)

        def cannot(host):
            raise PlaceUnreachable(f"place {host}: its machine is gone (test)")

        monkeypatch.setattr(own, "restart", cannot)
        killer = KillAt(own, at=2)
        model, history = fit(
            DataParallel(3, places=own), opt="adam", batch_size=8, callbacks=[killer]
        )
        assert np.array_equal(flat(model), flat(ref))
        assert history.traffic["elastic"][0]["place"] == 1 and own.live() == [0]
        # A lambda travels by value (a test module is not importable on the places).
        rows = lambda host, key: len(host.slots[key].x)
        held = own.gather([own.submit(0, rows, key) for key in ("w0", "w1", "w2")])
        assert held == [len(X)] * 3  # each worker's replica holds the data it shards
    finally:
        own.close()


def test_a_place_dead_before_fit_is_replaced(places):
    own = RayPlaces(2, timeout=60)
    try:
        own.kill(1)
        _, history = fit(DataParallel(2, places=own), batch_size=8)
        assert history.traffic["elastic"][0]["event"] == "replaced before the run"
    finally:
        own.close()
