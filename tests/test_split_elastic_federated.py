"""Elastic federated learning: a place that cannot come back is retired and the run goes on.

Its clients move to the surviving places (their rows counted as sent), the round that failed
is redone with the same sampled clients, and the weights equal a run that started without
that place. On several inline places (`Places`, below: a place can be killed, for good or
not) and on Ray (an actor killed, its restart refused).
"""

from types import SimpleNamespace

import numpy as np
import pytest
from test_split_ways import X, Y, fit, flat

from splitgrad.split import Federated, FedProx, Inline, RayPlaces
from splitgrad.split.elastic import rehome_clients
from splitgrad.split.federated import PLACE, DPFedAvg, RobustFederated
from splitgrad.split.host import Host, reset
from splitgrad.split.places import Pending, PlaceFailure, PlaceUnreachable, restart_or_retire


class Places(Inline):
    """`n` inline places (one `Host` each, round robin like RayPlaces). `kill(h)` makes place
    h fail its next op; `kill(h, for_good=True)` also makes its restart fail."""

    name = "inline-places"

    def __init__(self, n):
        self.n = n
        self._hosts = [Host() for _ in range(n)]
        self.dead, self.gone, self.retired = set(), set(), set()

    def host_of(self, worker):
        live = self.live()
        return live[worker % len(live)]

    def live(self):
        return [h for h in range(self.n) if h not in self.retired]

    def kill(self, host, for_good=False):
        self.dead.add(host)
        if for_good:
            self.gone.add(host)

    def restart(self, host):
        if host in self.gone:
            raise PlaceUnreachable(f"place {host}: its machine is gone (test)")
        self._hosts[host] = Host()
        self.dead.discard(host)

    def retire(self, host):
        if len(self.live()) <= 1:
            raise PlaceUnreachable(f"place {host} cannot come back and it is the last one")
        self.retired.add(host)

    def ensure_alive(self):
        return restart_or_retire(self, sorted(self.dead - self.retired))

    def _at(self, host):
        assert host not in self.retired, f"an op was sent to retired place {host}"
        if host in self.dead:
            raise PlaceFailure([host], "killed (test)")
        return self._hosts[host]

    def submit(self, host, op, *args):
        value, busy = self._at(host).call(op, *args)
        return Pending(host, value, busy)

    def submit_multi(self, host, op, n_outs, *args, direct=False):
        value, busy, *outs = self._at(host).call_multi(op, *args)
        return Pending(host, value, busy, outs)

    def reset(self):
        for h in self.live():
            self._hosts[h].call(reset)

    def describe(self):
        return f"inline ({self.n} places)"


class KillAfterRound:
    """Kills place `host` (for good: its restart fails) when round `at` has ended."""

    def __init__(self, places, at=0, host=1, for_good=True):
        self.places, self.at, self.host, self.for_good, self.done = (
            places,
            at,
            host,
            for_good,
            False,
        )

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at and not self.done:
            self.done = True
            if isinstance(self.places, Places):
                self.places.kill(self.host, self.for_good)
            else:
                self.places.kill(self.host)


KW = {"clients": 6, "local_batch_size": 6, "seed": 1}


def held_rows(places, host, index):
    """The rows `index` of the data that place `host` holds (a lambda travels by value)."""
    take = lambda h, idx: (h.slots[PLACE].x[idx], h.slots[PLACE].y[idx])
    return places.gather([places.submit(host, take, index)])[0]


def test_a_federated_place_that_cannot_come_back_is_retired_and_the_run_goes_on(capsys):
    """3 places; place 1 dies for good after round 0. Its clients (1 and 4) move to places 0
    and 2, round 1 is redone, and the weights equal a run on 2 places and one on 1 place."""
    ref2, _ = fit(Federated(**KW, places=Places(2)), epochs=3)
    ref1, _ = fit(Federated(**KW, places=Inline()), epochs=3)
    places = Places(3)
    way = Federated(**KW, places=places)
    killer = KillAfterRound(places)
    model, history = fit(way, epochs=3, callbacks=[killer])
    assert killer.done and places.live() == [0, 2]
    assert np.array_equal(flat(model), flat(ref2))
    assert np.array_equal(flat(model), flat(ref1))
    t = history.traffic
    (event,) = t["elastic"]
    assert event["place"] == 1 and event["round"] == 1 and event["places_left"] == 2
    assert "machine is gone" in event["event"]
    assert event["clients_moved"] == [1, 4]
    per_row = X[:1].nbytes + Y[:1].nbytes
    rows = len(way._parts[1]) + len(way._parts[4])
    assert event["bytes_moved"] == rows * per_row
    # Client 1 goes to place 0, client 4 to place 2: their rows are counted to there.
    assert t["by_boundary"]["driver->place0"] == len(way._parts[1]) * per_row
    assert t["by_boundary"]["driver->place2"] == len(way._parts[4]) * per_row
    assert t["recoveries"][0] == {"round": 1, "places": [1], "already_done": False}
    assert t["steps"] == 3 and len(history.history["loss"]) == 3
    assert list(way._home) == [0, 0, 2, 0, 2, 2]
    # The run ends with the data every remaining place should hold: its clients' rows.
    for k, h in enumerate(way._home):
        x, y = held_rows(places, int(h), way._parts[k])
        assert np.array_equal(x, X[way._parts[k]]) and np.array_equal(y, Y[way._parts[k]])
    out = capsys.readouterr().out
    assert "federated: place 1 cannot come back; continuing on 2 place(s)" in out
    assert "the 2 client(s) of place 1 moved to place(s) [0, 2]" in out
    assert "round 1 is redone" in out


@pytest.mark.parametrize(
    "make",
    [
        lambda p: FedProx(**KW, mu=0.1, places=p),
        lambda p: DPFedAvg(**KW, places=p),
        lambda p: RobustFederated(**KW, places=p),
        lambda p: Federated(**KW, server_optimizer="fedadam", server_lr=0.05, places=p),
        lambda p: Federated(**KW, secure_aggregation=True, places=p),
        lambda p: Federated(**KW, client_eval=0.25, fraction=0.5, dropout=0.3, places=p),
    ],
    ids=["fedprox", "dp-fedavg", "robust", "fedadam", "secure-aggregation", "sampled"],
)
def test_every_federated_way_is_elastic_and_equals_a_run_on_fewer_places(make):
    """The redone round samples (and drops) the same clients; noise, adaptive clipping, the
    server's moments and secure aggregation's masks are untouched by the failed attempt."""
    reference = make(Places(2))
    ref, ref_history = fit(reference, epochs=3)
    places = Places(3)
    way = make(places)
    model, history = fit(way, epochs=3, callbacks=[KillAfterRound(places)])
    assert history.traffic["elastic"][0]["clients_moved"] == [1, 4]
    assert np.array_equal(flat(model), flat(ref))
    assert way.rounds == reference.rounds
    assert history.history["loss"] == ref_history.history["loss"]
    for key in ("user_epsilon", "dropped_total"):
        assert history.traffic.get(key) == ref_history.traffic.get(key)


def test_a_place_that_dies_and_comes_back_keeps_its_clients():
    places = Places(3)
    way = Federated(**KW, places=places)
    model, history = fit(way, epochs=3, callbacks=[KillAfterRound(places, for_good=False)])
    ref, _ = fit(Federated(**KW, places=Places(3)), epochs=3)
    assert np.array_equal(flat(model), flat(ref))
    assert "elastic" not in history.traffic and history.traffic["recoveries"][0]["round"] == 1
    assert list(way._home) == [0, 1, 2, 0, 1, 2] and places.live() == [0, 1, 2]


def test_a_place_dead_before_fit_is_replaced_or_retired():
    ref, _ = fit(Federated(**KW, places=Inline()), epochs=2)
    for for_good, said in ((False, "replaced before the run"), (True, "retired before the run")):
        places = Places(2)
        places.kill(1, for_good=for_good)
        way = Federated(**KW, places=places)
        model, history = fit(way, epochs=2)
        assert history.traffic["elastic"][0]["event"].startswith(said)
        assert np.array_equal(flat(model), flat(ref))
        assert set(way._home) == ({0} if for_good else {0, 1})


def test_the_last_place_lost_for_good_ends_the_run_with_a_clear_message():
    places = Places(2)
    killers = [KillAfterRound(places, at=0, host=1), KillAfterRound(places, at=1, host=0)]
    with pytest.raises(PlaceUnreachable, match="it is the last one"):
        fit(Federated(**KW, places=places), epochs=3, callbacks=killers)


def test_moved_clients_go_round_robin_and_only_the_lost_ones_move():
    sent = []
    places = Places(4)
    places.retired = {2}
    way = SimpleNamespace(name="federated", unit="round", places=places)
    record = lambda kind, src, dst, size: sent.append((kind, src, dst, size))
    run = SimpleNamespace(x=X, y=Y, traffic=SimpleNamespace(record=record))
    home = np.array([0, 1, 2, 3, 0, 1, 2, 3, 2], np.int64)
    event = {"place": 2}
    rehome_clients(way, run, [event], home, lambda k: 10 if k != 6 else 0, step=5)
    assert list(home) == [0, 1, 0, 3, 0, 1, 1, 3, 3]
    assert event["clients_moved"] == [2, 6, 8]
    per_row = X[:1].nbytes + Y[:1].nbytes
    assert event["bytes_moved"] == 20 * per_row  # client 6 owns no rows: nothing to send
    assert sent == [
        ("state", "driver", "place0", 10 * per_row),
        ("state", "driver", "place3", 10 * per_row),
    ]


# ----- on Ray ----------------------------------------------------------------------------------
@pytest.mark.ray
def test_on_ray_a_killed_actor_that_cannot_restart_is_retired(ray_cluster, monkeypatch):
    """2 actors; place 1 is killed after round 0 and its restart refused: its clients move to
    place 0, which ends up holding their rows; the weights equal the one-place run."""
    ref, _ = fit(Federated(**KW, places=Inline()), epochs=3)
    own = RayPlaces(2, timeout=60)
    try:

        def cannot(host):
            raise PlaceUnreachable(f"place {host}: its machine is gone (test)")

        monkeypatch.setattr(own, "restart", cannot)
        way = Federated(**KW, places=own)
        model, history = fit(way, epochs=3, callbacks=[KillAfterRound(own)])
        assert np.array_equal(flat(model), flat(ref))
        (event,) = history.traffic["elastic"]
        assert event["place"] == 1 and event["clients_moved"] == [1, 3, 5]
        assert own.live() == [0] and set(way._home) == {0}
        for k in range(KW["clients"]):
            x, y = held_rows(own, 0, way._parts[k])
            assert np.array_equal(x, X[way._parts[k]]) and np.array_equal(y, Y[way._parts[k]])
    finally:
        own.close()


@pytest.mark.ray
def test_on_ray_a_place_dead_before_fit_that_cannot_restart_is_retired(ray_cluster, monkeypatch):
    ref, _ = fit(Federated(**KW, secure_aggregation=True, places=Inline()), epochs=2)
    own = RayPlaces(2, timeout=60)
    try:
        own.kill(1)
        monkeypatch.setattr(
            own, "restart", lambda h: (_ for _ in ()).throw(PlaceUnreachable("gone (test)"))
        )
        way = Federated(**KW, secure_aggregation=True, places=own)
        model, history = fit(way, epochs=2)
        assert history.traffic["elastic"][0]["event"] == "retired before the run (gone (test))"
        assert np.array_equal(flat(model), flat(ref))
        assert set(way._home) == {0}
    finally:
        own.close()
