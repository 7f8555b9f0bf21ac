"""Pipeline parallel on Ray: 2 stages against 1 place, and the bubble against (S-1)/(M+S-1)
as the number of micro-batches M grows.

    python benchmarks/pipeline_bench.py                 # W2 and W4, a few minutes on 2 cores
    python benchmarks/pipeline_bench.py --workloads W4 --steps 8 --repeats 1

Workloads W2 (conv32-pool-conv64-pool-128-10, 28x28x1, batch 64; its second convolution is
most of the work, so no cut balances it) and W4 (autoencoder 784-512-32-512-784, batch 128;
its two halves cost the same) of docs/benchmarks.md, float32, Adam 1e-3, 16 distinct
synthetic batches. One place: the whole model in this process (BLAS on 2 threads, then 1),
and on one Ray actor with 2 and with 1 BLAS thread (a 1-stage pipeline, the same code path as
the stages). Two stages: the model cut by measured time over two Ray actors with one BLAS
thread each (this machine has 2 cores, one per stage), 1F1B and GPipe, M = 1, 2, 4, 8, 16.
Throughput counts the steps after the first of each run (setup and the end-of-epoch weight
fetch excluded), median of the repeats; the speed-up is against the whole model in this
process on 2 threads. The bubble per stage: the formula, the schedule replayed with the op
times measured at the stages, and the idle time measured from each op's start and end at the
actors (which also holds Ray's own per-op latency and the transfers).
Run it under the GLIBC_TUNABLES setting of docs/benchmarks.md; the script prints the kernel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from workloads import splitgrad_layers

import splitgrad as sg
from splitgrad import nn
from splitgrad.split import Inline, RayPlaces
from splitgrad.split.pipeline import Pipeline


def build(workload, seed=0):
    """W2 (a CNN, its second convolution most of the work) or W4 (an autoencoder whose two
    halves cost the same: a pipeline's best case)."""
    sg.seed(seed)
    layers, loss = splitgrad_layers(workload)
    model = nn.Sequential(layers)
    model.compile(optimizer=sg.optim.Adam(learning_rate=1e-3), loss=loss)
    return model


BATCH = {"W2": 64, "W4": 128}


def data(workload, steps):
    rng = np.random.default_rng(0)
    n = 16 * BATCH[workload]
    if workload == "W2":
        x = rng.standard_normal((n, 28, 28, 1)).astype(np.float32)
        y = rng.integers(0, 10, n)
    else:
        x = y = rng.random((n, 784)).astype(np.float32)
    reps, rows = -(-steps // 16), steps * BATCH[workload]
    return np.concatenate([x] * reps)[:rows], np.concatenate([y] * reps)[:rows]


class StepClock:
    """Callback: the time at the end of every step."""

    def __init__(self):
        self.ends = []

    def on_train_batch_end(self, step, logs=None):
        self.ends.append(time.perf_counter())


def samples_per_s(workload, way, steps):
    x, y = data(workload, steps)
    model, clock = build(workload), StepClock()
    model.fit(
        x,
        y,
        batch_size=BATCH[workload],
        epochs=1,
        verbose=0,
        way=way,
        seed=0,
        shuffle=False,
        callbacks=[clock],
    )
    rate = (len(clock.ends) - 1) * BATCH[workload] / (clock.ends[-1] - clock.ends[0])
    return rate, getattr(model.history, "traffic", None)


def median_rate(workload, way, steps, repeats, threads=None):
    runs = []
    for _ in range(repeats):
        if threads is None:
            runs.append(samples_per_s(workload, way, steps))
        else:
            with threadpool_limits(threads):
                runs.append(samples_per_s(workload, way, steps))
    rates = [r for r, _ in runs]
    best = sorted(range(len(runs)), key=lambda i: rates[i])[len(runs) // 2]
    return statistics.median(rates), runs[best][1]


def fmt(values):
    return "/".join(f"{v:.2f}" for v in values) if values else "-"


def bench(workload, places, whole, args):
    print(f"\n## {workload}, batch {BATCH[workload]}")
    base = {}
    for name, way, threads in (
        ("this process, BLAS 2 threads", None, None),
        ("this process, BLAS 1 thread", None, 1),
        ("1 Ray actor, 2 threads (1 stage)", Pipeline(1, 1, places=whole), None),
        ("1 Ray actor, 1 thread (1 stage)", Pipeline(1, 1, places=places), None),
    ):
        base[name], _ = median_rate(workload, way, args.steps, args.repeats, threads)
        print(f"{name}: {base[name]:,.0f} samples/s", flush=True)
    one = base["this process, BLAS 2 threads"]
    print(
        "\n| schedule | M | samples/s | vs 1 place | bubble formula | replayed per stage | "
        "timed per stage | stages |"
    )
    print("|---|---:|---:|---:|---:|---|---|---|")
    for schedule in ("1f1b", "gpipe"):
        for micro in (1, 2, 4, 8, 16):
            way = Pipeline(2, micro, schedule, balance="time", places=places)
            rate, traffic = median_rate(workload, way, args.steps, args.repeats)
            bubble = traffic["bubble"]
            print(
                f"| {schedule} | {micro} | {rate:,.0f} | {rate / one:.2f}x | "
                f"{bubble['formula']:.2f} | {fmt(bubble['replayed'])} | {fmt(bubble['timed'])} | "
                f"{traffic['bounds']} |",
                flush=True,
            )
    # The same code inline (one process, stages in turn): the pipeline's own overhead.
    way = Pipeline(2, 4, places=Inline())
    rate, _ = median_rate(workload, way, args.steps, args.repeats, 1)
    print(f"\ninline 2 stages x 4 micro-batches, BLAS 1 thread: {rate:,.0f} samples/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=["W2", "W4"])
    args = parser.parse_args()
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    # Two stages, one core each: one BLAS thread per actor; one place: the whole machine.
    places, whole = RayPlaces(2, threads=1), RayPlaces(1, threads=2)
    blas = next(i for i in threadpool_info() if i.get("user_api") == "blas")
    actors = [places.where[h]["blas_threads"] for h in range(2)]
    print(
        f"# pipeline, {args.steps} steps x {args.repeats} repeats; driver BLAS "
        f"{blas['internal_api']} {blas.get('architecture')} x{blas['num_threads']}; stage actors "
        f"x{actors[0]}, x{actors[1]} thread(s), one-place actor "
        f"x{whole.where[0]['blas_threads']}; "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"
    )
    for workload in args.workloads:
        bench(workload, places, whole, args)
    places.close()
    whole.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
