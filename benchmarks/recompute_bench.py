"""Activation checkpointing on the W2 CNN: peak live activation memory and step time, with and
without recompute.

    python benchmarks/recompute_bench.py                # about a minute on 2 cores
    python benchmarks/recompute_bench.py --repeats 3

W2 of docs/benchmarks.md (conv32-pool-conv64-pool-128-10, 28x28x1, batch 64, float32, Adam
1e-3), 16 distinct synthetic batches cycled. Variants: the plain model; "auto" blocks (each
layer with weights and the weight-free layers after it, all but the output layer:
[conv32, pool], [conv64, pool, flatten], [dense128]); one block for the whole convolutional
part ([conv32 ... flatten]). Peak memory: the engine's own meter (splitgrad.tensor.
activation_meter) over one training step, forward and backward: the bytes of the arrays the
graph's nodes hold at once, the weights and the input batch not counted. Step time: rounds of
~0.3 s per variant, interleaved, median steps/s and the median of each round's ratio to the
plain model; the variants share the same layers, so their weights stay alike. Run it
under the GLIBC_TUNABLES setting of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from workloads import splitgrad_layers

import splitgrad as sg
from splitgrad import nn
from splitgrad.split.recompute import ranges, wrapped
from splitgrad.tensor import activation_meter


def build():
    """The W2 CNN, compiled (Adam 1e-3, cross-entropy on logits)."""
    sg.seed(0)
    layers, loss = splitgrad_layers("W2")
    model = nn.Sequential(layers)
    model.compile(optimizer=sg.optim.Adam(learning_rate=1e-3), loss=loss)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per variant")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((16, 64, 28, 28, 1)).astype(np.float32)
    ys = rng.integers(0, 10, (16, 64))
    model = build()
    model.build_from_sample(xs[0])
    variants = {
        "plain": model,
        "recompute auto": wrapped(model, ranges(model, "auto")),
        "recompute conv part": wrapped(model, ranges(model, "0-5")),
    }
    blas = next(i for i in threadpool_info() if i.get("user_api") == "blas")
    print(
        f"# W2, batch 64, float32; BLAS {blas['internal_api']} {blas.get('architecture')} "
        f"x{blas['num_threads']}; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"
    )
    counter = [0]

    def step(net):
        i = counter[0] % 16
        counter[0] += 1
        net.train_step(xs[i], ys[i])

    peaks = {}
    for name, net in variants.items():
        step(net)  # builds the Recompute wrappers outside the meter
        with activation_meter() as meter:
            step(net)
        peaks[name] = meter.peak
    rates = {name: [] for name in variants}
    n = {}
    for name, net in variants.items():  # warm up: 20 steps and 1 s, and pick N for ~0.3 s
        start, warm = time.perf_counter(), 0
        while warm < 20 or time.perf_counter() - start < 1.0:
            step(net)
            warm += 1
        n[name] = max(1, int(0.3 * warm / (time.perf_counter() - start)))
    for _ in range(args.repeats):  # short interleaved rounds: drift hits every variant alike
        for name, net in variants.items():
            start = time.perf_counter()
            for _ in range(n[name]):
                step(net)
            rates[name].append(n[name] / (time.perf_counter() - start))
    print(
        "\n| variant | peak activation MB | vs plain | steps/s (median) | min-max | "
        "vs plain (median of the rounds' ratios) |"
    )
    print("|---|---:|---:|---:|---|---:|")
    base_peak = peaks["plain"]
    for name in variants:
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates["plain"]))
        print(
            f"| {name} | {peaks[name] / 2**20:.2f} | {peaks[name] / base_peak:.2f} | "
            f"{statistics.median(rates[name]):.1f} | {min(rates[name]):.1f}-"
            f"{max(rates[name]):.1f} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
