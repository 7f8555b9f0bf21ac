"""DP-SGD's step time next to plain training: W1 (MLP), W2 (CNN), W3b (char LSTM) of
docs/benchmarks.md, and an Embedding + Dense text classifier.

    python benchmarks/dp_sgd_bench.py                       # every workload
    python benchmarks/dp_sgd_bench.py W3b text --seconds 2  # some of them

A DP-SGD step computes every example's clipped gradient in one batched pass (the per-example
hooks of Dense, Conv2D, Conv2DTranspose, Embedding and the recurrent layers,
layers/per_example.py), sums and noises them, and steps; "loop" is the same step through the
per-example loop that DP-SGD falls back to for a layer without a hook (what the recurrent and
embedding layers took before they had one); "plain" is `Model.train_step`. One place, float32,
the same fixed batch; the three are interleaved, `--rounds` times, and the medians printed with
the BLAS kernel (threadpoolctl).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TEXT = "text"  # Embedding(20000, 64) over 32 tokens → Flatten → Dense 64 relu → Dense 2
WORKLOADS = ("W1", "W2", "W3b", TEXT)


def model_and_batch(workload, batch=None):
    import splitgrad as sg
    from splitgrad import nn

    if workload != TEXT:
        from workloads import make_data, splitgrad_layers

        x, y = make_data(workload)
        if batch:
            x, y = x[:batch], y[:batch]
        layers, loss = splitgrad_layers(workload)
    else:
        rng = np.random.default_rng(0)
        n = batch or 64
        x, y = rng.integers(0, 20_000, (n, 32)), rng.integers(0, 2, n)
        layers = [
            nn.Embedding(20_000, 64),
            nn.Flatten(),
            nn.Dense(64, activation="relu"),
            nn.Dense(2),
        ]
        loss = sg.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = nn.Sequential(layers)
    model.compile(optimizer=sg.optim.Adam(learning_rate=1e-3), loss=loss)
    model.build_from_sample(x)
    model.train()
    return model, x, y


def steps(workload, batch=None):
    """{"plain", "dp-sgd", "loop"}: one training step each on the workload's model."""
    from splitgrad.split import dp_sgd, replicas

    model, x, y = model_and_batch(workload, batch)
    rng = np.random.default_rng(0)

    def plain():
        model.train_step(x, y)

    def private(clipped_sum):
        def step():
            total, _, _ = clipped_sum(model, x, y, 1.0)
            total += rng.normal(0.0, 1.0, size=total.shape)
            replicas.optimizer_step(model, (total / len(x)).astype(np.float32))

        return step

    def batched(model, x, y, clip):
        out = dp_sgd._batched(model, x, y, clip)
        assert out is not None, f"{workload}: the batched pass does not cover the model"
        return out

    return {"plain": plain, "dp-sgd": private(batched), "loop": private(dp_sgd._looped)}


def timed(step, seconds):
    step()  # warm: workspaces, panels
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        step()
        n += 1
    return (time.perf_counter() - start) / n


def main(argv=None):
    from threadpoolctl import threadpool_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=list(WORKLOADS), metavar="WORKLOAD")
    parser.add_argument("--seconds", type=float, default=2.0, help="per timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="instead of the workload's")
    parser.add_argument("--no-loop", action="store_true", help="skip the per-example loop")
    args = parser.parse_args(argv)
    blas = [
        f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    print(f"BLAS: {', '.join(blas)}")
    for workload in args.workloads:
        fns = steps(workload, args.batch)
        if args.no_loop:
            fns.pop("loop")
        times = {key: [] for key in fns}
        for _ in range(args.rounds):  # interleaved: a busy moment hits all three alike
            for key, fn in fns.items():
                times[key].append(timed(fn, args.seconds))
        med = {key: statistics.median(v) for key, v in times.items()}
        text = ", ".join(
            f"{key} {med[key] * 1e3:.1f} ms ({med[key] / med['plain']:.2f}x)"
            for key in fns
            if key != "plain"
        )
        batch = args.batch or len(model_and_batch(workload)[1])
        print(f"{workload} (batch {batch}): plain {med['plain'] * 1e3:.1f} ms/step, {text}")


if __name__ == "__main__":
    main()
