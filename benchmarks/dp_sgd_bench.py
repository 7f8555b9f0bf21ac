"""DP-SGD's step time next to plain training, on W1 (MLP) and W2 (CNN) of docs/benchmarks.md.

    python benchmarks/dp_sgd_bench.py

A DP-SGD step computes every example's clipped gradient in one batched pass (the per-example
hook of Dense and Conv2D, layers/per_example.py), sums and noises them, and steps; a plain step
is `Model.train_step`. Both on one place, float32, the same fixed batch, interleaved.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def steps(workload):
    """A plain training step and a DP-SGD step (clip 1, noise 1) on the workload's model."""
    from workloads import splitgrad_model

    from splitgrad.split import dp_sgd, replicas

    model, x, y = splitgrad_model(workload)
    model.train()
    rng = np.random.default_rng(0)

    def plain():
        model.train_step(x, y)

    def private():
        total, _, _ = dp_sgd.clipped_sum(model, x, y, 1.0)
        total += rng.normal(0.0, 1.0, size=total.shape)
        replicas.optimizer_step(model, (total / len(x)).astype(np.float32))

    return plain, private


def timed(step, seconds=3.0):
    for _ in range(3):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return (time.perf_counter() - start) / n


def main():
    from threadpoolctl import threadpool_info

    blas = [
        f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    print(f"BLAS: {', '.join(blas)}")
    for workload in ("W1", "W2"):
        plain, private = steps(workload)
        pairs = [(timed(plain), timed(private)) for _ in range(3)]
        p = statistics.median(a for a, _ in pairs)
        d = statistics.median(b for _, b in pairs)
        print(
            f"{workload}: plain {p * 1e3:.1f} ms/step, DP-SGD {d * 1e3:.1f} ms/step ({d / p:.2f}x)"
        )


if __name__ == "__main__":
    main()
