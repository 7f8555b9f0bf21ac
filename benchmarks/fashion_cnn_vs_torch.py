"""Full fashion-cnn run, splitgrad next to PyTorch: wall time, peak memory, test accuracy.

    python benchmarks/fashion_cnn_vs_torch.py                 # both, one after the other
    python benchmarks/fashion_cnn_vs_torch.py --only torch    # one side, in this process

splitgrad runs the recipe exactly as `splitgrad train fashion-cnn` does (MIT lab 2's CNN, Adam
1e-3 cosine-decayed to 0, batch 64, 16 epochs keeping the best validation loss). PyTorch trains
the same network (Conv 24 3×3 ReLU → MaxPool 2 → Conv 36 3×3 ReLU → MaxPool 2 → Dense 128 ReLU
→ Dense 10) on the same 54,000 images with the same optimizer, schedule (CosineAnnealingLR
stepped every batch) and batch size for the same 16 epochs, which reaches the same ~91 % test
accuracy (splitgrad also scores the 6,000 validation images after every epoch). Both use 2
threads (NumPy's BLAS on a 2-core machine; torch.set_num_threads). Each side runs in its own
process so its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

TORCH_EPOCHS, BATCH, LR, THREADS, SEED = 16, 64, 1e-3, 2, 0


def _data():
    """The recipe's training part (first 90 %) and the test set."""
    from splitgrad.datasets import load_fashion_mnist

    d = load_fashion_mnist()
    cut = int(len(d.x_train) * 0.9)  # what `splitgrad train` trains on (validation_split=0.1)
    return d.x_train[:cut], d.y_train[:cut], d.x_test, d.y_test


def run_splitgrad():
    """`splitgrad train fashion-cnn` into a temporary folder; returns the test accuracy."""
    import tempfile

    from splitgrad import recipes

    with tempfile.TemporaryDirectory() as out:
        result = recipes.train("fashion-cnn", seed=SEED, out=out, verbose=0)
    return result["metrics"]["accuracy"]


def run_torch():
    """Train the same CNN in PyTorch (NCHW); returns the test accuracy."""
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    x, y, xt, yt = _data()
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    xt = torch.from_numpy(np.ascontiguousarray(xt.transpose(0, 3, 1, 2)))
    y, yt = torch.from_numpy(y), torch.from_numpy(yt)
    model = nn.Sequential(
        nn.Conv2d(1, 24, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(24, 36, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36 * 5 * 5, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps = -(-len(x) // BATCH) * TORCH_EPOCHS
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(SEED)
    for _ in range(TORCH_EPOCHS):
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 256]).argmax(1) for i in range(0, len(xt), 256)])
    return float((pred == yt).double().mean())


def measure(side):
    """{'side', 'wall_s', 'peak_mib', 'test_accuracy'} for one side, run in this process."""
    start = time.perf_counter()
    acc = {"splitgrad": run_splitgrad, "torch": run_torch}[side]()
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return {
        "side": side,
        "wall_s": round(wall, 1),
        "peak_mib": round(peak_kib / 1024, 1),
        "test_accuracy": round(acc, 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["splitgrad", "torch"])
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only)))
        return
    rows = []
    for side in ("torch", "splitgrad"):
        done = subprocess.run(
            [sys.executable, __file__, "--only", side], check=True, capture_output=True, text=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    t, s = rows
    print(
        f"splitgrad / torch: wall {s['wall_s'] / t['wall_s']:.2f}x, "
        f"peak memory {s['peak_mib'] / t['peak_mib']:.2f}x, "
        f"accuracy {s['test_accuracy']:.4f} vs {t['test_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()
