"""Simulated federations at scale: setup time, time per round and peak memory.

    python benchmarks/federated_scale.py 10000 100000

Fashion-MNIST's 54,000 training rows are split over K clients by a Dirichlet(α = 0.5) label
partition; 1 % of the clients train in each round (the fashion-mlp recipe's model, Adam, one
local epoch, batch 32). Clients exist only while they are sampled (split/federated.py), so the
memory should grow with the places, not with K. Each K runs in a fresh process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def one(clients: int, rounds: int = 3) -> dict:
    import splitgrad as sg
    from splitgrad.recipes import fashion_mlp
    from splitgrad.split import Federated

    sg.seed(0)
    data = fashion_mlp.load_data(False, 0)
    model = fashion_mlp.build_model(1e-3, data)
    way = Federated(clients=clients, fraction=0.01, partition="dirichlet", alpha=0.5, seed=0)
    times = []

    class Clock:
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    start = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=32,
        epochs=rounds,
        verbose=0,
        way=way,
        callbacks=[Clock()],
        seed=0,
    )
    total = time.perf_counter() - start
    return {
        "clients": clients,
        "setup_s": total - sum(times),
        "round_s": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv):
    if argv[:1] == ["--one"]:
        print(json.dumps(one(int(argv[1]))))
        return
    import numpy  # noqa: F401 - loads the BLAS that threadpoolctl reports
    from threadpoolctl import threadpool_info

    blas = [
        f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    print(f"BLAS: {', '.join(blas)}")
    for k in argv or ["10000", "100000"]:
        out = subprocess.run(
            [sys.executable, __file__, "--one", k], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rounds = ", ".join(f"{t:.2f}" for t in r["round_s"])
        print(
            f"{r['clients']:>7,} clients: setup {r['setup_s']:.2f} s, rounds {rounds} s, "
            f"peak {r['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
