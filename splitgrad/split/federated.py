"""#4 Federated averaging (FedAvg, McMahan et al. 2017) and FedProx (Li et al. 2020).

Each round the server samples a fraction of the K clients (seeded), sends them the global
weights, and each trains locally on data that never leaves it, returning Δ_k and its sample
count n_k. The server sets w ← w + Σ n_k Δ_k / Σ n_k (or a robust aggregate, #5). Clients may
drop out (left out and reported). Clients are logical: many live on one place.
One `fit` epoch = one round. Clients train with fit's batch_size unless `local_batch_size` is
given; `local_batch_size=None` means one full-batch step per local epoch.
"""

from __future__ import annotations

import numpy as np

from . import robust, tools
from .base import Way
from .places import PlaceFailure


def partition(y, clients: int, how: str = "iid", alpha: float = 0.5, seed: int = 0) -> list:
    """Row indices for each client: 'iid' (equal random shares) or 'dirichlet' (per class,
    shares ~ Dirichlet(α); small α = very uneven label mixes)."""
    rng = np.random.default_rng([int(seed), 7])
    n = len(y)
    if how == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]
    if how != "dirichlet":
        raise ValueError(f"partition: unknown scheme {how!r}; expected 'iid' or 'dirichlet'")
    labels = np.asarray(y).reshape(n, -1)
    if labels.shape[1] != 1 or labels.dtype.kind not in "iub":
        raise ValueError("partition='dirichlet' needs integer class labels, got "
                         f"{labels.dtype} labels of shape {np.shape(y)}; use partition='iid'")
    labels = labels[:, 0]
    parts = [[] for _ in range(clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(clients, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for k, part in enumerate(np.split(idx, cuts)):
            parts[k].extend(part.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


class Federated(Way):
    """FedAvg/FedProx: w ← w + Σ n_k Δ_k / Σ n_k per round; 2·P·itemsize per active client."""

    name = "federated"

    def __init__(self, clients: int = 10, fraction: float = 1.0, local_epochs: int = 1,
                 local_batch_size: int | str | None = "fit", mu: float = 0.0, partition: str = "iid",
                 alpha: float = 0.5, dropout: float = 0.0, aggregator: str = "mean",
                 poisoned: int = 0, trim: float = 0.1, seed: int = 0, places=None):
        super().__init__(places)
        if not 0.0 < fraction <= 1.0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Federated: fraction must be in (0, 1] and dropout in [0, 1), got "
                             f"fraction={fraction}, dropout={dropout}")
        if aggregator != "mean" and aggregator not in robust.AGGREGATORS:
            raise ValueError(f"Federated: unknown aggregator {aggregator!r}; expected 'mean' or "
                             f"one of {sorted(robust.AGGREGATORS)}")
        self.clients, self.fraction, self.local_epochs = int(clients), fraction, int(local_epochs)
        self.local_batch_size, self.mu = local_batch_size, float(mu)
        self.partition, self.alpha, self.dropout = partition, alpha, dropout
        self.aggregator, self.poisoned, self.trim = aggregator, int(poisoned), trim
        self.seed = int(seed)

    def _setup(self, run):
        self._parts = partition(run.y, self.clients, self.partition, self.alpha, self.seed)
        self._spec = self.places.put(tools.pack(run.model))
        self._setup_clients(run, range(self.clients))
        self.rounds = []

    def _setup_clients(self, run, ks):
        x_ref, y_ref = run.data_refs()
        # Provisioning: in a real federation each client already holds its rows. It is not a
        # message of the training protocol, so it is not counted as traffic.
        ops = [self.places.submit(self.places.host_of(k), "setup", f"c{k}", self._spec, x_ref,
                                  y_ref, self._parts[k], True)
               for k in ks if len(self._parts[k])]
        self.places.gather(ops)

    def _epoch(self, run, epoch):
        for attempt in range(self.max_recoveries + 1):
            try:
                return self._round(run, epoch)
            except PlaceFailure as failure:
                if attempt == self.max_recoveries:
                    raise
                # Clients keep no state between rounds: restart the place, give its clients
                # their data again and redo the round from the last completed global weights.
                for h in failure.hosts:
                    self.places.restart(h)
                self._setup_clients(run, [k for k in range(self.clients)
                                          if self.places.host_of(k) in failure.hosts])
                run.traffic.extra.setdefault("recoveries", []).append(
                    {"round": epoch, "places": failure.hosts})
        raise AssertionError("unreachable")

    def _local_bs(self, run):
        return run.batch_size if self.local_batch_size == "fit" else self.local_batch_size

    def sample(self, r: int):
        """(sampled, dropped) client ids of round r; depends only on (seed, r)."""
        rng = np.random.default_rng([self.seed, r])
        pool = [k for k in range(self.clients) if len(self._parts[k])]
        m = max(1, round(self.fraction * len(pool)))
        chosen = sorted(int(k) for k in rng.choice(pool, size=m, replace=False))
        gone = rng.random(m) < self.dropout
        dropped = [k for k, g in zip(chosen, gone) if g]
        return chosen, dropped

    def _round(self, run, r):
        model, traffic = run.model, run.traffic
        chosen, dropped = self.sample(r)
        active = [k for k in chosen if k not in dropped]
        w = tools.get_flat(model)
        w_ref = self.places.put(w)
        ops = []
        for k in active:
            traffic.record("weights", "server", f"client{k}", payload=w)
            ops.append(self.places.submit(self.places.host_of(k), "client_round", f"c{k}", w_ref,
                                          self.local_epochs, self._local_bs(run), self.mu,
                                          [self.seed, r, k],
                                          tools.noise_key(run.noise_seed, k, r)))
        values = run.gather(ops, [f"client{k}" for k in active])
        deltas, counts, losses = [], [], []
        for k, (delta, n_k, loss) in zip(active, values):
            if k < self.poisoned:
                delta = robust.hostile_update(delta.size, delta.dtype, [self.seed, r, k, 1])
            traffic.record("weights", f"client{k}", "server", payload=delta)
            traffic.record("counts", f"client{k}", "server", payload=n_k)
            deltas.append(delta)
            counts.append(n_k)
            losses.append(loss)
        if active:
            tools.set_flat(model, w + self.aggregate(np.stack(deltas), np.asarray(counts)))
        run.step += 1
        self.rounds.append({"round": r, "sampled": chosen, "dropped": dropped,
                            "poisoned": [k for k in active if k < self.poisoned]})
        logs = {"loss": float(np.average(losses, weights=counts)) if active else float("nan"),
                "clients": float(len(active)), "dropped": float(len(dropped))}
        return logs

    def aggregate(self, deltas: np.ndarray, counts: np.ndarray) -> np.ndarray:
        if self.aggregator == "mean":
            weights = counts / counts.sum()
            return (weights @ deltas.astype(np.float64)).astype(deltas.dtype)
        if self.aggregator == "trimmed-mean":
            return robust.trimmed_mean(deltas, self.poisoned, self.trim)
        return robust.AGGREGATORS[self.aggregator](deltas, self.poisoned)

    def textbook_bytes(self, n_params, steps, itemsize=4):
        active = sum(len(r["sampled"]) - len(r["dropped"]) for r in self.rounds)
        return active * (2 * n_params * itemsize + 8)

    def _report(self, run):
        return {"clients": self.clients, "rounds": self.rounds, "aggregator": self.aggregator,
                "client_sizes": [len(p) for p in self._parts],
                "dropped_total": sum(len(r["dropped"]) for r in self.rounds)}


class FedProx(Federated):
    """FedAvg whose clients minimise loss + μ/2·‖w − w_global‖² (μ = 0 = FedAvg)."""

    name = "fedprox"

    def __init__(self, clients: int = 10, mu: float = 0.01, **kwargs):
        super().__init__(clients=clients, mu=mu, **kwargs)


class RobustFederated(Federated):
    """FedAvg with a robust aggregator ('median', 'trimmed-mean', 'krum') and F hostile clients."""

    name = "robust"

    def __init__(self, clients: int = 10, aggregator: str = "median", poisoned: int = 0,
                 **kwargs):
        super().__init__(clients=clients, aggregator=aggregator, poisoned=poisoned, **kwargs)
