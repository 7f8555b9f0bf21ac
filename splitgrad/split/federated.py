"""#4 Federated averaging (FedAvg, McMahan et al. 2017) and FedProx (Li et al. 2020).

Each round the server samples a fraction of the K clients (seeded), sends them the global
weights, and each trains locally on data that never leaves it, returning Δ_k and its sample
count n_k. The server sets w ← w + Σ n_k Δ_k / Σ n_k (or a robust aggregate, #5), or takes a
step of a server optimizer with that update (FedAvgM, FedAdam, FedYogi, FedAdagrad:
server_optim.py). With `client_eval`, each client keeps that share of its rows and evaluates
the global weights on them when sampled; the round reports the weighted mean and the spread.
Clients may drop out (left out and reported). Clients are logical: many live on one place.
Elastic: a place that cannot come back is retired, its clients move to the survivors (their
rows counted as sent) and the round is redone with the same clients (see `recover`).
One `fit` epoch = one round. Clients train with fit's batch_size unless `local_batch_size` is
given; `local_batch_size=None` means one full-batch step per local epoch.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np

from ..data import batch_order
from ..layers.layer import generators
from . import elastic, replicas, robust
from . import host as host_ops
from .base import Way
from .secure_agg import SecureAggregation
from .server_optim import ServerOptimizer
from .user_dp import UserLevelDP


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
        raise ValueError(
            "partition='dirichlet' needs integer class labels, got "
            f"{labels.dtype} labels of shape {np.shape(y)}; use partition='iid'"
        )
    labels = labels[:, 0]
    parts = [[] for _ in range(clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(clients, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for k, part in enumerate(np.split(idx, cuts)):
            parts[k].extend(part.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# ----- place side ------------------------------------------------------------------------------
# Clients exist only while they are sampled (as in Flower's simulation): a place keeps ONE
# working replica and the rows of the data, and each client it hosts trains on that replica
# in turn, from the global weights and a fresh optimizer, on its own rows. Memory grows with
# the places, not with the clients.
PLACE = "fed"  # the slot that holds a place's working replica and data


def setup_place(host, spec, x, y):
    """Place op: the working replica and the data; remembers the fresh optimizer state and
    generator states every client starts from (a rate changed by a callback is written into
    that state: host.set_learning_rate)."""
    host_ops.setup(host, PLACE, spec, x, y)
    slot = host.slots[PLACE]
    slot.state["fresh"] = {
        "optimizer": copy.deepcopy(slot.model.optimizer.state_dict()),
        "generators": {k: g.bit_generator.state for k, g in generators(slot.model).items()},
    }


def client_round(host, index, weights, epochs, batch_size, mu, seed, noise, held_out=None):
    """Place op: one client's local training. The working replica starts from `weights` with
    a fresh optimizer and trains on the client's rows `index` (dropout from the stream seeded
    by `noise`; FedProx adds μ/2·‖w − w_global‖²). With `held_out` rows the client first
    evaluates the global weights on them. Returns (Δ = w_local − w_global, n_k, mean loss,
    the evaluation or None); the data itself never leaves."""
    slot = host.slots[PLACE]
    model, fresh = slot.model, slot.state["fresh"]
    model.optimizer.load_state_dict(copy.deepcopy(fresh["optimizer"]))
    for key, gen in generators(model).items():
        gen.bit_generator.state = fresh["generators"][key]
    replicas.set_flat(model, weights)
    scores = None
    if held_out is not None and len(held_out):
        scores = model.evaluate(
            slot.x[held_out], slot.y[held_out], batch_size=256, return_dict=True
        )
        scores["n"] = len(held_out)
    x, y = slot.x[index], slot.y[index]
    n = len(index)
    bs = n if batch_size is None else int(batch_size)
    penalty = replicas.proximal(weights, mu) if mu else None
    losses = []
    with replicas.rng_scope(replicas.key_state(noise)):
        for epoch in range(epochs):
            for idx in batch_order(n, bs, bs < n, seed, epoch):
                losses.append(replicas.train_step(model, x[idx], y[idx], penalty))
    return replicas.get_flat(model) - weights, n, float(np.mean(losses)), scores


# ----- driver side -----------------------------------------------------------------------------
class Federated(Way):
    """FedAvg/FedProx: w ← w + Σ n_k Δ_k / Σ n_k per round; 2·P·itemsize per active client."""

    name = "federated"
    number, cut, crosses = 4, "data ownership", "weights down, deltas + counts up"
    formula = "2P per client/round"
    checks = "1 client 1 step = SGD; K clients = GD on union; FedProx mu 0 = FedAvg; data stays"
    options: ClassVar[dict] = {
        "clients": None,
        "fraction": 1.0,
        "local_epochs": 1,
        "local_batch_size": "fit",
        "mu": 0.0,
        "partition": "iid",
        "alpha": 0.5,
        "dropout": 0.0,
        "aggregator": "mean",
        "poisoned": 0,
        "seed": 0,
        "server_optimizer": "fedavg",
        "server_lr": 1.0,
        "server_momentum": 0.9,
        "server_beta_1": 0.9,
        "server_beta_2": 0.99,
        "server_tau": 1e-3,
        "client_eval": 0.0,
        "dp_clip": None,
        "dp_noise": 0.0,
        "dp_quantile": None,
        "dp_clip_lr": 0.2,
        "dp_delta": 1e-5,
        "secure_aggregation": False,
        "secagg_threshold": None,
    }
    note = (
        "one round per epoch: sampled clients train from the global weights with a fresh "
        "optimizer, the server averages their deltas"
    )
    unit = "round"
    user_dp = False  # DP-FedAvg's aggregation even with no clip and no noise (DPFedAvg)

    def __init__(
        self,
        clients: int = 10,
        fraction: float = 1.0,
        local_epochs: int = 1,
        local_batch_size: int | str | None = "fit",
        mu: float = 0.0,
        partition: str = "iid",
        alpha: float = 0.5,
        dropout: float = 0.0,
        aggregator: str = "mean",
        poisoned: int = 0,
        trim: float = 0.1,
        seed: int = 0,
        server_optimizer: str = "fedavg",
        server_lr: float = 1.0,
        server_momentum: float = 0.9,
        server_beta_1: float = 0.9,
        server_beta_2: float = 0.99,
        server_tau: float = 1e-3,
        client_eval: float = 0.0,
        dp_clip: float | None = None,
        dp_noise: float = 0.0,
        dp_quantile: float | None = None,
        dp_clip_lr: float = 0.2,
        dp_delta: float = 1e-5,
        secure_aggregation: bool = False,
        secagg_threshold: int | None = None,
        places=None,
    ):
        super().__init__(places)
        if not 0.0 <= client_eval < 1.0:
            raise ValueError(
                f"Federated: client_eval (the share of each client's rows kept "
                f"for evaluation) must be in [0, 1), got {client_eval!r}"
            )
        self.client_eval = float(client_eval)
        self.secure_aggregation, self.secagg_threshold = bool(secure_aggregation), secagg_threshold
        if self.secure_aggregation and (aggregator != "mean" or dp_clip is not None or dp_noise):
            raise ValueError(
                "Federated: secure aggregation gives the server only the sum of the updates, "
                "so it works with aggregator='mean' and without server-side DP clipping; drop "
                "one of the two options"
            )
        # User-level DP (user_dp.py): on when a clip bound or noise is given.
        self.dp = {
            "clip": dp_clip,
            "noise": float(dp_noise),
            "target_quantile": dp_quantile,
            "clip_lr": dp_clip_lr,
            "delta": dp_delta,
        }
        self._dp = None
        # The server's own step (server_lr, its moments). A learning-rate callback sets the
        # clients' rate, since the client optimizer is the one the model was compiled with;
        # this one keeps its settings (see rate_receivers).
        self.server = ServerOptimizer(
            server_optimizer, server_lr, server_momentum, server_beta_1, server_beta_2, server_tau
        )
        if not 0.0 < fraction <= 1.0 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"Federated: fraction must be in (0, 1] and dropout in [0, 1), got "
                f"fraction={fraction}, dropout={dropout}"
            )
        if aggregator != "mean" and aggregator not in robust.AGGREGATORS:
            raise ValueError(
                f"Federated: unknown aggregator {aggregator!r}; expected 'mean' or "
                f"one of {sorted(robust.AGGREGATORS)}"
            )
        self.clients, self.fraction, self.local_epochs = int(clients), fraction, int(local_epochs)
        self.local_batch_size, self.mu = local_batch_size, float(mu)
        self.partition, self.alpha, self.dropout = partition, alpha, dropout
        self.aggregator, self.poisoned, self.trim = aggregator, int(poisoned), trim
        self.seed = int(seed)

    @classmethod
    def from_options(cls, n, options, places=None):
        o = cls.with_defaults(options)
        clients = o.pop("clients")
        return cls(max(n, 10) if clients is None else clients, places=places, **o)

    def setup(self, run):
        self._parts = partition(run.y, self.clients, self.partition, self.alpha, self.seed)
        self._held_out = [None] * self.clients
        if self.client_eval:  # each client keeps its last rows (seeded order) for evaluation
            rng = np.random.default_rng([self.seed, 11])
            for k, part in enumerate(self._parts):
                part = rng.permutation(part)
                keep = len(part) - int(len(part) * self.client_eval)
                self._parts[k], self._held_out[k] = np.sort(part[:keep]), np.sort(part[keep:])
        self._pool = np.flatnonzero([len(p) for p in self._parts])  # clients that own rows
        self.server.m = self.server.v = None
        self._dp = None
        if self.user_dp or self.dp["clip"] is not None or self.dp["noise"]:
            expected = max(1, round(self.fraction * len(self._pool)))
            self._dp = UserLevelDP(
                expected_clients=expected, sample_rate=self.fraction, seed=self.seed, **self.dp
            )
        # Where each client lives (its place); only a retired place's clients ever move.
        self._home = np.array([self.places.host_of(k) for k in range(self.clients)], np.int64)
        self._spec = self.places.put(run.spec())
        self._setup_places(run, self.places.live())
        self.rounds = []
        self._logs = {}

    def _setup_places(self, run, hosts):
        # Provisioning: in a real federation each client already holds its rows. It is not a
        # message of the training protocol, so it is not counted as traffic.
        x_ref, y_ref = run.data_refs()
        self.places.gather(
            [self.places.submit(h, setup_place, self._spec, x_ref, y_ref) for h in hosts]
        )

    def batches(self, run, epoch):
        return [epoch]  # one round per epoch

    def examples(self, batch):
        return 1

    def recover(self, run, hosts, step):
        """Clients keep no state between rounds: restart the places, give their clients their
        data again; the round is redone from the last completed global weights.

        Elastic: a place that cannot come back is retired and its clients move, round robin,
        to the surviving places; each moved client's rows (training and held-out) are counted
        as sent to its new place ("state" traffic, driver → place). The round is redone with
        the same sampled clients, whose updates do not depend on the place that computes
        them, so the weights equal a run that started without that place. With secure
        aggregation the redone round runs the protocol with all its clients (none drops)."""
        restarted, events = elastic.restart_or_retire(self, run, hosts, step)
        self._setup_places(run, restarted)
        elastic.rehome_clients(self, run, events, self._home, self._rows_of, step)
        return False

    def _rows_of(self, k) -> int:
        """How many rows client k owns (training and held out)."""
        return len(self._parts[k]) + (len(self._held_out[k]) if self.client_eval else 0)

    def epoch_logs(self, run):
        return self._logs

    def rate_receivers(self, run, slots):
        """Clients exist only in their round: a rate changed by a callback (the CLIENTS'
        rate, the compiled optimizer's; a server optimizer keeps its `server_lr`) reaches the
        places' fresh client state at once, and is counted with each later round's message
        to each sampled client (step)."""
        return []

    def _local_bs(self, run):
        return run.batch_size if self.local_batch_size == "fit" else self.local_batch_size

    def sample(self, r: int):
        """(sampled, dropped) client ids of round r; depends only on (seed, r)."""
        rng = np.random.default_rng([self.seed, r])
        pool = self._pool
        m = max(1, round(self.fraction * len(pool)))
        chosen = sorted(int(k) for k in rng.choice(pool, size=m, replace=False))
        gone = rng.random(m) < self.dropout
        dropped = [k for k, g in zip(chosen, gone) if g]
        return chosen, dropped

    def step(self, run, step, r):
        model, traffic = run.model, run.traffic
        chosen, dropped = self.sample(r)
        active = [k for k in chosen if k not in dropped]
        w = replicas.get_flat(model)
        w_ref = self.places.put(w)
        ops, rate_changed = [], run.rate_changed
        for k in active:
            traffic.record("weights", "server", f"client{k}", payload=w)
            if rate_changed:  # a client's rate is part of its round's instructions
                traffic.record("state", "server", f"client{k}", size=8)
            ops.append(
                self.places.submit(
                    int(self._home[k]),
                    client_round,
                    self._parts[k],
                    w_ref,
                    self.local_epochs,
                    self._local_bs(run),
                    self.mu,
                    [self.seed, r, k],
                    replicas.noise_key(run.noise_seed, k, r),
                    self._held_out[k],
                )
            )
        values = run.gather(ops, [f"client{k}" for k in active])
        deltas, counts, losses, scores = [], [], [], []
        for k, (delta, n_k, loss, score) in zip(active, values):
            if k < self.poisoned:
                delta = robust.hostile_update(delta.size, delta.dtype, [self.seed, r, k, 1])
            if not self.secure_aggregation:  # else only masked sums cross (below)
                traffic.record("weights", f"client{k}", "server", payload=delta)
                traffic.record("counts", f"client{k}", "server", payload=n_k)
            if score is not None:
                traffic.record("counts", f"client{k}", "server", payload=score)
                scores.append(score)
            deltas.append(delta)
            counts.append(n_k)
            losses.append(loss)
        if active and self.secure_aggregation:
            update = self._secure_mean(run, r, active, deltas, counts)
            replicas.set_flat(model, self.server.step(w, update))
        elif active:
            if self._dp is not None:  # clipped, noised, divided by the expected client count
                update = self._dp.aggregate(np.stack(deltas), r)
            else:
                update = self.aggregate(np.stack(deltas), np.asarray(counts))
            replicas.set_flat(model, self.server.step(w, update))
        self.rounds.append(
            {
                "round": r,
                "sampled": chosen,
                "dropped": dropped,
                "poisoned": [k for k in active if k < self.poisoned],
            }
        )
        self._logs = {
            "clients": float(len(active)),
            "dropped": float(len(dropped)),
            **_client_scores(scores),
        }
        return float(np.average(losses, weights=counts)) if active else float("nan")

    def _secure_mean(self, run, r, active, deltas, counts):
        """Σ n_k Δ_k / Σ n_k through secure aggregation (secure_agg.py): every client sends
        its masked [n_k·Δ_k, n_k]; the server only ever holds masked vectors and their sum."""
        protocol = SecureAggregation(
            active, deltas[0].size + 1, self.secagg_threshold, seed=[self.seed, 0x5EC, r]
        )
        inputs = {
            k: np.append(n_k * d.astype(np.float64), n_k)
            for k, d, n_k in zip(active, deltas, counts)
        }
        total, _, messages = protocol.run(inputs)
        for phase, sender, payload in messages:
            kind = "weights" if phase == "masked" else "keys"
            size = payload.nbytes if phase == "masked" else (192 if phase == "keys" else 32)
            run.traffic.record(kind, f"client{sender}", "server", size=size)
            if self.keep_payloads and phase == "masked":
                run.traffic.payloads.append((kind, f"client{sender}", "server", payload))
        return (total[:-1] / total[-1]).astype(deltas[0].dtype)

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

    def report(self, run):
        return {
            **(self._dp.report() if self._dp is not None else {}),
            "clients": self.clients,
            "rounds": self.rounds,
            "aggregator": self.aggregator,
            "client_sizes": [len(p) for p in self._parts],
            "dropped_total": sum(len(r["dropped"]) for r in self.rounds),
        }


def _client_scores(scores) -> dict:
    """The clients' evaluations of the global weights: weighted mean (by their held-out rows)
    and spread (standard deviation across clients) of each quantity."""
    if not scores:
        return {}
    n = np.array([s["n"] for s in scores], dtype=np.float64)
    out = {}
    for key in scores[0]:
        if key != "n":
            values = np.array([s[key] for s in scores])
            out[f"client_val_{key}"] = float(np.average(values, weights=n))
            out[f"client_val_{key}_std"] = float(values.std())
    return out


class FedProx(Federated):
    """FedAvg whose clients minimise loss + μ/2·‖w − w_global‖² (μ = 0 = FedAvg)."""

    name = "fedprox"
    options: ClassVar[dict] = {**Federated.options, "mu": 0.01}
    note = "federated plus the proximal term mu/2*|w - w_global|^2 (mu=0.01)"

    def __init__(self, clients: int = 10, mu: float = 0.01, **kwargs):
        super().__init__(clients=clients, mu=mu, **kwargs)


class DPFedAvg(Federated):
    """FedAvg with user-level differential privacy (user_dp.py): clipped client updates,
    Gaussian noise at the server, adaptive clipping towards the median norm by default."""

    name = "dp-fedavg"
    number, cut, crosses = 6, "trust", "as #4, clipped and noised"
    checks = "zero noise and infinite clip = FedAvg (equal clients); epsilon per user"
    options: ClassVar[dict] = {
        **Federated.options,
        "dp_clip": 1.0,
        "dp_noise": 1.0,
        "dp_quantile": 0.5,
    }
    note = (
        "every client's update clipped (adaptively, to the median norm) and Gaussian noise "
        "added at the server: user-level privacy"
    )
    user_dp = True

    def __init__(self, clients: int = 10, dp_clip=1.0, dp_noise=1.0, dp_quantile=0.5, **kw):
        super().__init__(
            clients=clients, dp_clip=dp_clip, dp_noise=dp_noise, dp_quantile=dp_quantile, **kw
        )


class RobustFederated(Federated):
    """FedAvg with a robust aggregator ('median', 'trimmed-mean', 'krum') and F hostile clients."""

    name = "robust"
    number, cut, crosses = 5, "trust", "as #4"
    checks = "identical updates unchanged; order-free; attackers stay inside honest range"
    options: ClassVar[dict] = {**Federated.options, "aggregator": "median"}
    note = "federated with the coordinate-wise median of the deltas instead of their mean"

    def __init__(self, clients: int = 10, aggregator: str = "median", poisoned: int = 0, **kwargs):
        super().__init__(clients=clients, aggregator=aggregator, poisoned=poisoned, **kwargs)
