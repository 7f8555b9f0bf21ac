"""Split-training benchmarks: data parallel on Ray (2 workers vs 1), Ray's per-step overhead
against Inline, 100 federated clients on one machine (memory, seconds per round), and DP-SGD's
per-example gradients (one batched pass vs the per-example loop).

    python benchmarks/split_bench.py                 # all three, a few minutes on 2 cores
    python benchmarks/split_bench.py --steps 10      # shorter

BLAS runs one thread per worker (threadpoolctl here, the env of the Ray workers there), so
two workers on a 2-core machine compete for cores only with each other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from workloads import WORKLOADS, splitgrad_layers

import splitgrad as sg
from splitgrad import nn
from splitgrad.split import DataParallel, Federated, Inline, RayPlaces, dp_sgd


def build(workload, seed=0):
    sg.seed(seed)
    if workload == "W5":  # tiny, so a step is almost all overhead; two logits, as W1 and W2
        layers = [nn.Dense(16, activation="relu"), nn.Dense(2)]
    else:
        layers, _ = splitgrad_layers(workload)
    model = nn.Sequential(layers)
    model.compile(
        optimizer=sg.optim.Adam(learning_rate=1e-3),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def data(workload, steps, seed=0):
    rng = np.random.default_rng(seed)
    batch = WORKLOADS[workload][0]
    shape = {"W1": (784,), "W2": (28, 28, 1), "W5": (30,)}[workload]
    n = batch * steps
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 2, n), batch


def timed_fit(workload, way, steps):
    x, y, batch = data(workload, steps)
    model = build(workload)
    model.fit(
        x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0, way=way, seed=0
    )  # warm-up: imports, first allocations, actor caches
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch, epochs=1, verbose=0, way=way, seed=0)
    return time.perf_counter() - start, len(x), history


def bench_data_parallel(places2, steps):
    print("\n## data parallel on Ray, 2 workers vs 1 (BLAS 1 thread per worker)")
    print(
        "| workload | inline 1 worker samples/s | Ray 1 worker | Ray 2 workers | "
        "speed-up 2 vs 1 | scaling efficiency |"
    )
    print("|---|---|---|---|---|---|")
    for w in ("W1", "W2"):
        with threadpool_limits(1):
            t0, n, _ = timed_fit(w, DataParallel(1, places=Inline()), steps)
        t1, _, _ = timed_fit(w, DataParallel(1, places=places2), steps)
        t2, _, _ = timed_fit(w, DataParallel(2, places=places2), steps)
        speed = t1 / t2
        print(
            f"| {w} | {n / t0:,.0f} | {n / t1:,.0f} | {n / t2:,.0f} | {speed:.2f}x | "
            f"{speed / 2:.0%} |",
            flush=True,
        )


def bench_overhead(places2, steps):
    print("\n## Ray's per-step overhead (W5, tiny MLP, 1 worker)")
    with threadpool_limits(1):
        t0, _, _ = timed_fit("W5", DataParallel(1, places=Inline()), steps * 4)
    t1, _, _ = timed_fit("W5", DataParallel(1, places=places2), steps * 4)
    t2, _, _ = timed_fit("W5", DataParallel(2, places=places2), steps * 4)
    per = steps * 4
    print(
        f"inline {1e3 * t0 / per:.2f} ms/step; Ray 1 worker {1e3 * t1 / per:.2f} ms/step "
        f"(+{1e3 * (t1 - t0) / per:.2f} ms); Ray 2 workers with all-reduce "
        f"{1e3 * t2 / per:.2f} ms/step (+{1e3 * (t2 - t0) / per:.2f} ms)"
    )


def rss_mb(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def bench_federated(places2, rounds):
    print("\n## 100 federated clients on 2 places (logical clients, one actor per place)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100 * 60, 64)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    sg.seed(0)
    model = nn.Sequential([nn.Dense(128, activation="relu"), nn.Dense(10)])
    model.compile(
        optimizer=sg.optim.SGD(learning_rate=0.05),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    way = Federated(
        clients=100,
        fraction=0.2,
        local_epochs=1,
        local_batch_size=20,
        partition="dirichlet",
        alpha=0.5,
        places=places2,
    )
    start = time.perf_counter()
    history = model.fit(x, y, epochs=rounds, verbose=0, way=way)
    per_round = (time.perf_counter() - start) / rounds
    pids = [os.getpid(), *places2.pids()]
    print(
        f"{per_round:.2f} s per round (20 of 100 clients, 60 rows each on average); "
        f"resident memory driver + 2 places: {rss_mb(pids):,.0f} MB (limit 4096 MB); "
        f"{history.traffic['total_bytes'] / rounds / 1e6:.2f} MB crossed per round"
    )


def bench_dp_sgd(repeats=5):
    print("\n## DP-SGD per-example clipped gradients (W1, batch 128, this process, 1 thread)")
    x, y, _ = data("W1", 1)
    model = build("W1")
    model.build_from_sample(x)
    times = {}
    with threadpool_limits(1):
        for name, fn in (
            ("per-example loop", dp_sgd._looped),
            ("one batched pass", dp_sgd._batched),
        ):
            fn(model, x, y, 1.0)
            start = time.perf_counter()
            for _ in range(repeats):
                fn(model, x, y, 1.0)
            times[name] = (time.perf_counter() - start) / repeats
    loop, batched = times["per-example loop"], times["one batched pass"]
    print(
        f"per-example loop {1e3 * loop:.1f} ms/step; one batched pass {1e3 * batched:.1f} "
        f"ms/step ({loop / batched:.0f}x faster)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds")
    args = parser.parse_args()
    import ray

    one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), **one_thread}},
    )
    places2 = RayPlaces(2)
    bench_data_parallel(places2, args.steps)
    bench_overhead(places2, args.steps)
    bench_federated(places2, args.rounds)
    bench_dp_sgd()
    places2.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
