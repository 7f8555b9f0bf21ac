"""W1-epoch (docs/benchmarks.md): one full epoch of W1 through each framework's own loader.

    python benchmarks/epoch_bench.py                        # 3 processes x 3 epochs per side
    python benchmarks/epoch_bench.py --processes 2 --epochs 2 --blas-kernel Haswell

The MLP 784-256-128-10 (ReLU, cross-entropy on logits, Adam 1e-3) trains on 60,000 synthetic
samples (N(0, 1) inputs, uniform labels, `numpy.random.default_rng(0)`), batch 128, shuffled:
469 steps, the last one of 96. Each side uses what its users write: splitgrad
`model.fit(X, Y, batch_size=128, shuffle=True)`, PyTorch a loop over
`DataLoader(TensorDataset(X, Y), batch_size=128, shuffle=True)`. So, unlike compare.py's W1,
this includes shuffling, batch gathering and the training loop's own work (splitgrad's fit also
computes the running loss shown by its progress bar; verbose=0 here).

Each side runs in its own fresh processes, in interleaved rounds, under the same malloc setting
and BLAS kernel (benchenv.py). A process trains one warm-up epoch, then times `--epochs`
epochs. Reported: the median seconds per epoch over all epochs of all processes (min, max),
samples/s, peak RSS, the BLAS kernel that ran, and the ratio splitgrad / PyTorch (of seconds:
below 1 means splitgrad is faster).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchenv.py sits next to this script

import benchenv

SAMPLES, FEATURES, CLASSES, BATCH = 60_000, 784, 10, 128


def data():
    """The epoch's synthetic inputs and labels (the same bytes on both sides)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, SAMPLES)
    return x, y


def splitgrad_epoch():
    """A function that trains one epoch with splitgrad's fit."""
    import splitgrad as sg
    from splitgrad import nn

    x, y = data()
    model = nn.Sequential(
        [nn.Dense(256, activation="relu"), nn.Dense(128, activation="relu"), nn.Dense(CLASSES)]
    )
    model.compile(
        optimizer=sg.optim.Adam(learning_rate=1e-3),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return lambda: model.fit(x, y, batch_size=BATCH, shuffle=True, epochs=1, verbose=0)


def torch_epoch():
    """A function that trains one epoch with a PyTorch DataLoader loop."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(2)
    x, y = data()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH, shuffle=True
    )
    model = nn.Sequential(
        nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def epoch():
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()

    return epoch


def worker(side, epochs):
    """In a fresh process: one warm-up epoch, then `epochs` timed ones."""
    import numpy  # noqa: F401 - imported first, as in compare.py

    epoch = {"splitgrad": splitgrad_epoch, "torch": torch_epoch}[side]()
    epoch()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": times, "peak_rss_mb": peak, **benchenv.runtime()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per process")
    parser.add_argument("--json", help="also write the raw results here")
    benchenv.add_options(parser)
    parser.add_argument("--worker", metavar="SIDE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs)))
        return
    sides = ("splitgrad", "torch")
    runs = {side: [] for side in sides}
    for round_ in range(args.processes):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", side, "--epochs", str(args.epochs)],
                capture_output=True,
                text=True,
                check=False,
                env=benchenv.child_env(args.blas_kernel, args.malloc),
            )
            if out.returncode:
                print(f"{side}: worker failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  round {round_ + 1}: {side} {runs[side][-1]['seconds']}", file=sys.stderr)
    summary = report(runs, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))


def report(runs, args) -> dict:
    """Print the table and return its figures."""
    every = [run for side_runs in runs.values() for run in side_runs]
    for side, side_runs in runs.items():
        print(
            f"BLAS kernel that ran ({side}): {' | '.join(sorted({r['blas'] for r in side_runs}))}"
        )
    loads = [run["load_1min"] for run in every]
    print(
        f"malloc: {' | '.join(sorted({r['malloc'] for r in every}))}; --blas-kernel "
        f"{args.blas_kernel}; {args.processes} processes x {args.epochs} epochs; 1-min load "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f} (2 cores)"
    )
    print(f"{'side':9s} {'s/epoch':>8s} {'min':>7s} {'max':>7s} {'samples/s':>10s} {'RSS MB':>7s}")
    summary = {}
    for side, side_runs in runs.items():
        seconds = [s for run in side_runs for s in run["seconds"]]
        if not seconds:
            continue
        med = statistics.median(seconds)
        summary[side] = {"median_s": med, "min_s": min(seconds), "max_s": max(seconds)}
        peak = max(run["peak_rss_mb"] for run in side_runs)
        print(
            f"{side:9s} {med:8.3f} {min(seconds):7.3f} {max(seconds):7.3f} "
            f"{SAMPLES / med:10.0f} {peak:7.0f}"
        )
    if len(summary) == 2:
        ratio = summary["splitgrad"]["median_s"] / summary["torch"]["median_s"]
        fastest = summary["splitgrad"]["min_s"] / summary["torch"]["min_s"]
        summary["ratio"] = {"median": ratio, "fastest": fastest}
        print(f"time ratio splitgrad / PyTorch: {ratio:.2f}x (fastest epochs: {fastest:.2f}x)")
    return summary


if __name__ == "__main__":
    main()
