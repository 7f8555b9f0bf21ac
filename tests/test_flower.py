"""Flower interoperability (splitgrad/interop/flower.py): a splitgrad model as a Flower
`NumPyClient`, and FedAvg in Flower's simulation engine, give the weights of splitgrad's own
federated way (same client split, sampled clients, seeds and settings) on the digits-mlp
recipe, in float64, to 1e-10.

Flower's simulation engine ends the Ray session it runs on (`ray.shutdown`), so it runs in a
child process of its own with its own small Ray cluster; the test session's cluster
(conftest's `ray_cluster`) is never touched.
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from flwr.server.strategy.aggregate import aggregate

import splitgrad as sg
from splitgrad.interop import flower
from splitgrad.split import Federated, make_way, partition

SETTINGS = {"clients": 4, "fraction": 0.5, "local_epochs": 2, "seed": 3}
BATCH, FIT_SEED, ROUNDS = 32, 5, 2


def digits_model(rows=400):
    """The digits-mlp recipe's model and data, the model rebuilt in float64 (with its Dropout,
    Adam and loss), the first `rows` training rows."""
    from splitgrad.recipes import digits_mlp

    data = digits_mlp.load_data()
    sg.seed(0)
    recipe = digits_mlp.build_model(digits_mlp.DEFAULTS["learning_rate"], data)
    config = recipe.get_config()
    config["dtype"] = "float64"
    for layer in config["layers"]:
        layer["config"]["dtype"] = "float64"
    model = type(recipe).from_config(config)
    optimizer = type(recipe.optimizer).from_config(recipe.optimizer.get_config())
    model.compile(optimizer=optimizer, loss=recipe.loss, metrics=["accuracy"])
    x, y = data.x_train[:rows].astype(np.float64), data.y_train[:rows]
    model.build_from_sample(x[:1])
    return model, x, y


def splitgrad_federated(model, x, y):
    """The reference: splitgrad's own federated way, inline. Returns fit's History."""
    options = {**SETTINGS, "local_batch_size": BATCH}
    way = make_way("federated", 1, options)
    return model.fit(x, y, epochs=ROUNDS, batch_size=BATCH, seed=FIT_SEED, verbose=0, way=way)


def flat(weights):
    return np.concatenate([np.ravel(w) for w in weights])


def test_numpy_clients_with_flowers_fedavg_equal_the_federated_way():
    """Flower's NumPyClient protocol and its FedAvg `aggregate`, driven round by round here
    (no Ray): the same clients sampled, the same weights."""
    model, x, y = digits_model()
    parts = partition(y, SETTINGS["clients"], "iid", seed=SETTINGS["seed"])
    clients = [
        flower.flower_client(
            model,
            x[p],
            y[p],
            client=k,
            seed=SETTINGS["seed"],
            fit_seed=FIT_SEED,
            local_epochs=SETTINGS["local_epochs"],
            batch_size=BATCH,
        )
        for k, p in enumerate(parts)
    ]
    sampler = Federated(clients=4, fraction=SETTINGS["fraction"], seed=SETTINGS["seed"])
    sampler._pool = np.arange(4)
    weights = clients[0].get_parameters({})
    assert flat(weights).tobytes() == flat(model.get_weights()).tobytes()
    for r in range(ROUNDS):
        chosen, _ = sampler.sample(r)
        results = [clients[k].fit(weights, {"round": r})[:2] for k in chosen]
        weights = aggregate(results)
    splitgrad_federated(model, x, y)
    np.testing.assert_allclose(flat(weights), flat(model.get_weights()), rtol=0, atol=1e-10)
    loss, n, metrics = clients[1].evaluate(weights, {})
    assert n == len(parts[1]) and np.isfinite(loss) and 0.0 <= metrics["accuracy"] <= 1.0


CHILD = """
import json, sys
import numpy as np
import splitgrad as sg
from splitgrad.interop import flower
from splitgrad.split import make_way

{source}

SETTINGS, BATCH, FIT_SEED, ROUNDS = {settings!r}, {batch}, {fit_seed}, {rounds}
model, x, y = digits_model()
info = flower.simulate(model, x, y, rounds=ROUNDS, batch_size=BATCH, fit_seed=FIT_SEED,
                       num_cpus=2, **SETTINGS)
np.save("flower.npy", np.concatenate([w.ravel() for w in model.get_weights()]))
with open("flower.json", "w") as f:
    json.dump(info, f)
"""


def test_flower_simulation_equals_the_federated_way(tmp_path):
    """FedAvg in Flower's simulation engine (Ray, 2 client actors, in a child process) on the
    digits-mlp recipe: two rounds, 2 of 4 clients each, 2 local epochs."""
    script = CHILD.format(
        source=textwrap.dedent(inspect.getsource(digits_model)),
        settings=SETTINGS,
        batch=BATCH,
        fit_seed=FIT_SEED,
        rounds=ROUNDS,
    )
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",  # Flower reports runs to its server unless told not to
        "FLWR_HOME": str(tmp_path / "flwr"),  # and keeps an id file in ~/.flwr
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    }
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300, env=env)
    flower_weights = np.load(tmp_path / "flower.npy")
    info = json.loads((tmp_path / "flower.json").read_text())

    model, x, y = digits_model()
    history = splitgrad_federated(model, x, y)
    rounds = [r["sampled"] for r in history.traffic["rounds"]]
    assert [r["clients"] for r in info["rounds"]] == rounds
    assert info["client_sizes"] == history.traffic["client_sizes"]
    np.testing.assert_allclose(
        [r["loss"] for r in info["rounds"]], history.history["loss"], rtol=0, atol=1e-12
    )
    difference = np.abs(flower_weights - flat(model.get_weights())).max()
    assert difference < 1e-10, difference
    assert np.abs(flower_weights - flat(digits_model()[0].get_weights())).max() > 1e-3  # moved


def test_simulate_refuses_a_process_that_already_runs_ray(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    model, x, y = digits_model(rows=40)
    with pytest.raises(RuntimeError, match="process of its own"):
        flower.simulate(model, x, y, rounds=1, clients=2)
