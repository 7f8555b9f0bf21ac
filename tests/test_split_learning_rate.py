"""A learning rate changed by a callback between steps reaches every place of every way.

LearningRateScheduler and ReduceLROnPlateau set the rate of the driver's optimizer; the places
hold optimizers of their own (replicas, shards, stages, helpers), so each way's run passes the
new rate on before its next step (split/base.py, host.set_learning_rate).
"""

import numpy as np
import pytest
from test_split_ways import make_data

import splitgrad as sg
from splitgrad import callbacks, nn, optim
from splitgrad.split import WAYS, DataParallel, Inline, make_way

X, Y = make_data(n=64)

# DiLoCo's outer optimizer keeps its momentum when the inner rate drops to 0, so its weights
# still move: that is the algorithm, not a missed rate.
MOVES_ANYWAY = {"diloco"}
# DP-FedAvg adds Gaussian noise at the server to the mean of the clients' updates: with a rate
# of 0 every update is 0, and the noise alone still moves the weights (that is the privacy
# mechanism). Without noise, the clients' rate is what is tested.
OPTIONS = {"dp-fedavg": {"dp_noise": 0.0}}
# Federated ways with a server optimizer (FedAdam, FedYogi, FedAdagrad, FedAvgM: the
# `server_optimizer` option): the callback's rate is the CLIENTS' rate, since the client
# optimizer is the one the model was compiled with; the server's step size stays `server_lr`.
# At a client rate of 0 every delta is 0, but FedAvgM's and FedAdam's moments carry on moving
# the weights, as DiLoCo's outer momentum does (test_server_optimizer_keeps_its_own_rate).


def _model():
    sg.seed(0)
    model = nn.Sequential(
        [nn.Dense(8, activation="tanh"), nn.Dense(8, activation="tanh"), nn.Dense(3)],
        dtype="float64",
    )
    model.compile(
        optimizer=optim.SGD(learning_rate=0.1),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class Snapshot(callbacks.Callback):
    """The weights at the end of every epoch (or round)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(np.concatenate([w.ravel() for w in self.model.get_weights()]))


ARRAY_WAYS = sorted(n for n, c in WAYS.items() if c.trains_on == "arrays")


@pytest.mark.parametrize("name", sorted(set(ARRAY_WAYS) - MOVES_ANYWAY))
def test_a_rate_set_to_zero_after_the_first_epoch_stops_every_way(name):
    model, seen = _model(), Snapshot()
    stop = callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch == 0 else 0.0)
    way = make_way(name, 2, OPTIONS.get(name), where=Inline())
    model.fit(X, Y, batch_size=16, epochs=2, seed=1, verbose=0, way=way, callbacks=[stop, seen])
    assert not np.array_equal(seen.weights[0], _initial()), f"{name} did not train at all"
    np.testing.assert_array_equal(seen.weights[1], seen.weights[0], err_msg=name)


def _initial():
    model = _model()
    model.build_from_sample(X[:1])
    return np.concatenate([w.ravel() for w in model.get_weights()])


def test_reduce_on_plateau_under_data_parallel_matches_one_place():
    """The same callback, the same rates, the same weights as training at one place.

    History records the rate each epoch trained with (logged at the epoch's end, before
    ReduceLROnPlateau lowers it for the next). Epoch 0's loss only sets the best; with
    min_delta=1 no later epoch improves on it, so from epoch 1 on each epoch's end halves the
    rate the next one trains with: [0.1, 0.1, 0.05, 0.025]."""
    results = []
    for way in (None, DataParallel(2)):
        model = _model()
        plateau = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1)
        history = model.fit(
            X, Y, batch_size=16, epochs=4, seed=1, verbose=0, way=way, callbacks=[plateau]
        )
        results.append((model.get_weights(), history.history["learning_rate"]))
    (one, rates_one), (two, rates_two) = results
    assert rates_one == rates_two == pytest.approx([0.1, 0.1, 0.05, 0.025])
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_server_optimizer_keeps_its_own_rate():
    """The callback's rate is the clients' (the compiled optimizer's), not the server's: at a
    client rate of 0 every delta is 0, and FedAvgM's momentum alone moves the weights on,
    w₂ − w₁ = β·η·m₁ = β·(w₁ − w₀), with the server's rate η unchanged."""
    model, seen = _model(), Snapshot()
    stop = callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch == 0 else 0.0)
    options = {"server_optimizer": "fedavgm", "server_lr": 0.5, "server_momentum": 0.9}
    way = make_way("federated", 2, options, where=Inline())
    model.fit(X, Y, batch_size=16, epochs=2, seed=1, verbose=0, way=way, callbacks=[stop, seen])
    w0, (w1, w2) = _initial(), seen.weights
    assert not np.array_equal(w1, w0)
    np.testing.assert_allclose(w2 - w1, 0.9 * (w1 - w0), rtol=1e-9, atol=1e-12)
    assert way.server.lr == 0.5


def _halve(epoch, lr):
    return 0.1 if epoch == 0 else 0.05


def test_the_rate_message_is_counted_and_sent_only_on_a_change():
    """8 bytes of state to each place when the rate changes, nothing in the epochs it does
    not: a run whose rate never changes carries exactly the traffic of one without a callback."""
    logs = {}
    for label, schedule in (("none", None), ("same", lambda e, lr: 0.1), ("halve", _halve)):
        model = _model()
        cbs = [] if schedule is None else [callbacks.LearningRateScheduler(schedule)]
        way = DataParallel(2)
        history = model.fit(
            X, Y, batch_size=16, epochs=2, seed=1, verbose=0, way=way, callbacks=cbs
        )
        logs[label] = history.traffic_log
    assert dict(logs["same"].bytes) == dict(logs["none"].bytes)
    assert logs["halve"].bytes["state"] == logs["none"].bytes.get("state", 0) + 2 * 8
    assert logs["halve"].messages["state"] == logs["none"].messages.get("state", 0) + 2


# Ways whose places keep optimizers in each of the forms set_learning_rate reaches: replicas,
# a flat piece deep in a slot's state, a shard program, an update in flight, relayed client
# parts, and federated clients rebuilt each round from a state kept at setup.
RAY_WAYS = ["data-parallel", "zero", "tensor-parallel", "offload-delayed", "split-learning",
            "federated"]  # fmt: skip


@pytest.mark.ray
@pytest.mark.parametrize("name", RAY_WAYS)
def test_a_changed_rate_gives_the_same_weights_on_ray_as_inline(name, ray_places):
    results = []
    for where in (Inline(), ray_places):
        model = _model()
        halve = callbacks.LearningRateScheduler(_halve)
        history = model.fit(
            X,
            Y,
            batch_size=16,
            epochs=2,
            seed=1,
            verbose=0,
            way=make_way(name, 2, where=where),
            callbacks=[halve],
        )
        results.append((model.get_weights(), history.traffic_log.bytes))
    (inline, bytes_inline), (ray, bytes_ray) = results
    for a, b in zip(inline, ray):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert dict(bytes_inline) == dict(bytes_ray)


class _KillAfterSecondRound(callbacks.Callback):
    """Kills place 1 at the end of the second epoch (round): after the rate has changed, so
    the dead place is found by the third round's step, not by a rate message."""

    def __init__(self, places):
        super().__init__()
        self.places, self.done = places, False

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and not self.done:
            self.done = True
            self.places.kill(1)


@pytest.mark.ray
def test_a_place_restored_from_setup_state_takes_the_changed_rate(ray_places):
    """Federated recovery rebuilds a place from the spec kept at setup (the old rate): the
    run sends the new rate again before retrying, so the weights are the Inline run's."""
    results = []
    for where in (Inline(), ray_places):
        model = _model()
        cbs = [callbacks.LearningRateScheduler(_halve)]
        if where is ray_places:
            cbs.append(_KillAfterSecondRound(where))
        history = model.fit(
            X, Y, batch_size=16, epochs=3, seed=1, verbose=0, way=make_way("federated", 2,
            where=where), callbacks=cbs,
        )  # fmt: skip
        results.append((model.get_weights(), history.traffic))
    (inline, _), (ray, traffic) = results
    assert cbs[-1].done and traffic["recoveries"][0]["round"] == 2
    for a, b in zip(inline, ray):
        np.testing.assert_array_equal(a, b)
