"""A splitgrad model as a Flower client, and federated training in Flower's simulation engine.

`flower_client(spec, x, y, client=k, ...)` is a `flwr` `NumPyClient` whose parameters are the
model's weights in `get_weights()` order. Its `fit` is the federated way's own client round
(split/federated.py `client_round`): it starts from the global weights with the optimizer
state and layer generators the model had when packed, trains `local_epochs` epochs on its rows
in the batch order seeded by (seed, round, k), with Dropout drawing from the stream
`replicas.noise_key(fit_seed, k, round)`, and returns (w_k, n_k). So a Flower run and
`model.fit(x, y, epochs=R, seed=fit_seed, way=make_way("federated", ...))` train every client
identically.

`simulate(model, x, y, rounds=R, clients=K, ...)` runs R rounds of Flower's FedAvg in
`flwr.simulation.run_simulation` with splitgrad's client split (`federated.partition`) and
splitgrad's seeded sampling (`Federated.sample`, the same clients each round), and leaves the
final global weights in `model`. Flower averages weights, w ← Σ n_k w_k / Σ n_k, where the way
adds the averaged deltas, w ← w + Σ n_k (w_k − w) / Σ n_k: equal in exact arithmetic, a few
ulps apart in floating point (and Flower sums the clients in the order they finish).

Needs the optional extra: `pip install splitgrad[flower]` (flwr[simulation]); flwr is imported
only inside these functions, so `import splitgrad` never needs it.

Ray: Flower's Ray backend starts Ray if it is not running and always ends it (`ray.shutdown`)
when the simulation finishes, so `simulate` refuses to run in a process that already uses Ray
(it would end that session): run it in a process of its own.
"""

from __future__ import annotations

import functools

import numpy as np

from ..split import federated, replicas
from ..split.host import Host


@functools.cache
def _client_class():
    """The NumPyClient subclass, defined on first use so that flwr is imported only then."""
    try:
        from flwr.client import NumPyClient
    except ImportError as error:  # the extra is missing: say how to get it
        raise ImportError(
            "splitgrad.interop.flower needs Flower: pip install 'splitgrad[flower]' "
            "(or pip install 'flwr[simulation]')"
        ) from error

    class SplitgradClient(NumPyClient):
        """Client k of a federation: its rows, a replica of the model, its seeds.

        fit(w, {"round": r}) → (w_k, n_k, {"loss", "client"}): the federated way's client
        round r from the global weights w; evaluate(w) → (loss, n_k, metrics) on its rows.
        """

        def __init__(self, spec, x, y, client, seed, fit_seed, local_epochs, batch_size, mu):
            self.host = Host()
            federated.setup_place(self.host, spec, x, y)
            self.model = self.host.slots[federated.PLACE].model
            self.n = len(x)
            self.client, self.seed, self.fit_seed = int(client), int(seed), int(fit_seed)
            self.local_epochs, self.batch_size, self.mu = int(local_epochs), batch_size, mu

        def get_properties(self, config):
            return {"client": self.client}

        def get_parameters(self, config):
            return [np.array(w) for w in self.model.get_weights()]

        def fit(self, parameters, config):
            r = int(config.get("round", 0))
            self.model.set_weights(list(parameters))
            weights = replicas.get_flat(self.model)
            _, n_k, loss, _ = federated.client_round(
                self.host,
                np.arange(self.n),
                weights,
                self.local_epochs,
                self.batch_size,
                self.mu,
                [self.seed, r, self.client],
                replicas.noise_key(self.fit_seed, self.client, r),
            )
            return self.get_parameters({}), int(n_k), {"loss": loss, "client": self.client}

        def evaluate(self, parameters, config):
            self.model.set_weights(list(parameters))
            scores = self.model.evaluate(
                self.host.slots[federated.PLACE].x,
                self.host.slots[federated.PLACE].y,
                batch_size=256,
                return_dict=True,
                verbose=0,
            )
            loss = float(scores.pop("loss"))
            return loss, self.n, {k: float(v) for k, v in scores.items()}

    return SplitgradClient


def flower_client(
    spec,
    x,
    y,
    *,
    client: int = 0,
    seed: int = 0,
    fit_seed: int = 0,
    local_epochs: int = 1,
    batch_size: int | None = 32,
    mu: float = 0.0,
):
    """A Flower `NumPyClient` holding client `client`'s rows (x, y) and a replica of a compiled
    model (`spec`: a compiled Model, or `replicas.pack(model, x[:1])`). `seed` is the federated
    way's seed (batch order), `fit_seed` the seed `model.fit` would get (Dropout's streams);
    `batch_size=None` is one full-batch step per local epoch; `mu` > 0 is FedProx."""
    if not isinstance(spec, dict):
        spec = replicas.pack(spec, np.asarray(x)[:1])
    return _client_class()(spec, x, y, client, seed, fit_seed, local_epochs, batch_size, mu)


def _strategy(way, parts, initial, fraction_evaluate, on_round):
    """Flower's FedAvg with splitgrad's sampling: the clients of round r are
    `way.sample(r)`'s; the first round asks every client which splitgrad client it is."""
    from flwr.common import GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    clients = len(parts)

    class SeededFedAvg(FedAvg):
        def __init__(self):
            super().__init__(
                fraction_fit=1.0,
                fraction_evaluate=fraction_evaluate,
                min_fit_clients=1,
                min_evaluate_clients=1,
                min_available_clients=clients,
                initial_parameters=ndarrays_to_parameters(initial),
                on_fit_config_fn=lambda server_round: {"round": server_round - 1},
            )
            self.proxies = None  # splitgrad client id → Flower ClientProxy

        def _identify(self, client_manager, server_round):
            client_manager.wait_for(clients, timeout=600)
            ins = GetPropertiesIns({})
            self.proxies = {}
            for proxy in client_manager.all().values():
                res = proxy.get_properties(ins, timeout=None, group_id=server_round)
                self.proxies[int(res.properties["client"])] = proxy

        def configure_fit(self, server_round, parameters, client_manager):
            if self.proxies is None:
                self._identify(client_manager, server_round)
            chosen, _ = way.sample(server_round - 1)
            ins = super().configure_fit(server_round, parameters, client_manager)[0][1]
            return [(self.proxies[k], ins) for k in chosen]

        def aggregate_fit(self, server_round, results, failures):
            if failures:  # FedAvg would go on without them; the way would not
                raise RuntimeError(
                    f"Flower round {server_round}: {len(failures)} client(s) "
                    f"failed: {failures[0]!r}"
                )
            parameters, metrics = super().aggregate_fit(server_round, results, failures)
            on_round(server_round, parameters_to_ndarrays(parameters), results)
            return parameters, metrics

    return SeededFedAvg()


def simulate(
    model,
    x,
    y,
    *,
    rounds: int,
    clients: int = 10,
    fraction: float = 1.0,
    local_epochs: int = 1,
    batch_size: int | None = 32,
    partition: str = "iid",
    alpha: float = 0.5,
    mu: float = 0.0,
    seed: int = 0,
    fit_seed: int = 0,
    num_cpus: int = 1,
    fraction_evaluate: float = 0.0,
) -> dict:
    """R rounds of FedAvg in Flower's simulation engine, as
    `model.fit(x, y, epochs=rounds, batch_size=batch_size, seed=fit_seed,
    way=make_way("federated", clients, {"fraction": fraction, "local_epochs": ...,
    "partition": ..., "alpha": ..., "mu": ..., "seed": seed}))` trains: same split, same
    sampled clients, same local training. Ray runs with `num_cpus` CPUs and one per client
    actor. The model ends with the final global weights; returns {"rounds": [{"round",
    "clients", "loss"}], "client_sizes"}."""
    import ray
    from flwr.client import ClientApp
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    if ray.is_initialized():
        raise RuntimeError(
            "simulate: this process already runs Ray, and Flower's simulation engine ends the "
            "Ray session it runs on (ray.shutdown) when it finishes; call simulate in a "
            "process of its own (or after ray.shutdown())"
        )
    x, y = np.asarray(x), np.asarray(y)
    model.build_from_sample(x[:1])  # as fit does, before the first round
    parts = federated.partition(y, clients, partition, alpha, seed)
    way = federated.Federated(clients=clients, fraction=fraction, seed=seed)
    way._pool = np.flatnonzero([len(p) for p in parts])  # sampling as in Federated.setup
    spec = replicas.pack(model, x[:1])
    shards = {k: (x[p], y[p]) for k, p in enumerate(parts)}
    settings = {
        "seed": seed,
        "fit_seed": fit_seed,
        "local_epochs": local_epochs,
        "batch_size": batch_size,
        "mu": mu,
    }

    def client_fn(context):
        k = int(context.node_config["partition-id"])
        return flower_client(spec, *shards[k], client=k, **settings).to_client()

    log = []
    final = {}

    def on_round(server_round, weights, results):
        final["weights"] = weights
        counts = [res.num_examples for _, res in results]
        losses = [res.metrics["loss"] for _, res in results]
        log.append(
            {
                "round": server_round - 1,
                "clients": sorted(int(res.metrics["client"]) for _, res in results),
                "loss": float(np.average(losses, weights=counts)),
            }
        )

    strategy = _strategy(way, parts, model.get_weights(), fraction_evaluate, on_round)

    def server_fn(context):
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=clients,
        backend_config={
            "init_args": {
                "num_cpus": int(num_cpus),
                "include_dashboard": False,
                "address": "local",
            },
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        },
    )
    if len(log) != rounds:
        raise RuntimeError(
            f"simulate: Flower finished {len(log)} of {rounds} rounds; see its log above"
        )
    model.set_weights(final["weights"])
    return {"rounds": log, "client_sizes": [len(p) for p in parts]}
