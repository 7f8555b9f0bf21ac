"""Speed of splitgrad's conv stack next to PyTorch (2 threads), same run, as a ratio.

    python benchmarks/conv_speed.py                    # W2 train, W6 inference, conv stack
    python benchmarks/conv_speed.py W2 --rounds 5 --seconds 0.5

Workloads (docs/benchmarks.md): W2 = Conv(1→32,3) ReLU MaxPool2 · Conv(32→64,3) ReLU MaxPool2
· Flatten · Dense 128 ReLU · Dense 10, batch 64, Adam 1e-3, softmax cross-entropy; W6 = the
same net forward only, batch 256, no grad; "stack" = the two conv blocks only, forward +
backward of sum(y), batch 64. Float32; splitgrad is NHWC, torch NCHW.

Each (framework, workload) runs in a fresh process; the processes alternate round by round, so
drift on a shared machine hits both alike, and each round's ratio compares neighbours. Reported:
median steps/s per framework, the median of the per-round ratios, CPU milliseconds per step
(user + sys over all threads; steadier than wall time when others share the machine) and minor
page faults per step. `--threads 1` pins both frameworks to one thread, for A/B work on a busy
machine; the benchmark figure is the default 2.
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

ROOT = Path(__file__).resolve().parent.parent
BATCH = {"W2": 64, "W6": 256, "stack": 64}


def _data(workload):
    import numpy as np

    rng = np.random.default_rng(0)
    n = BATCH[workload]
    return rng.standard_normal((n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, n)


def splitgrad_step(workload):
    sys.path.insert(0, str(ROOT))
    import splitgrad as sg
    from splitgrad import nn

    x, y = _data(workload)
    layers = [nn.Conv2D(32, 3, activation="relu"), nn.MaxPool2D(2),
              nn.Conv2D(64, 3, activation="relu"), nn.MaxPool2D(2)]
    if workload != "stack":
        layers += [nn.Flatten(), nn.Dense(128, activation="relu"), nn.Dense(10)]
    model = nn.Sequential(layers)
    xt = sg.Tensor(x)
    model(xt)
    if workload == "W6":
        model.eval()

        def infer():
            with sg.no_grad():
                model(xt)
        return infer
    if workload == "W2" and hasattr(model, "compile"):
        model.compile(optimizer=sg.optim.Adam(learning_rate=1e-3),
                      loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True))
        return lambda: model.train_step(x, y)

    def fwd_bwd():
        model.zero_grad()
        model(xt).sum().backward()
    return fwd_bwd


def torch_step(workload, threads=2):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    x_np, y_np = _data(workload)
    x = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(y_np)
    layers = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
              nn.MaxPool2d(2)]
    if workload != "stack":
        layers += [nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10)]
    model = nn.Sequential(*layers)
    if workload == "W6":
        model.eval()

        def infer():
            with torch.no_grad():
                model(x)
        return infer
    if workload == "W2":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ce = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad()
            ce(model(x), y).backward()
            opt.step()
        return step

    def fwd_bwd():
        model.zero_grad()
        model(x).sum().backward()
    return fwd_bwd


def worker(framework, workload, repeats, seconds, threads):
    """In a fresh process: warm up (≥ 5 steps and 0.3 s), then time `repeats` blocks."""
    import numpy  # noqa: F401 - loaded before the framework, as in compare.py
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # numpy's BLAS; torch gets the same count below
    step = splitgrad_step(workload) if framework == "splitgrad" else torch_step(workload,
                                                                                  threads)
    start, warm = time.perf_counter(), 0
    while warm < 5 or time.perf_counter() - start < 0.3:
        step()
        warm += 1
    n = max(1, int(seconds * warm / (time.perf_counter() - start)))
    rates = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            step()
        rates.append(n / (time.perf_counter() - t))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    return {"rate": statistics.median(rates), "cpu_ms": 1e3 * cpu / (n * repeats),
            "faults_per_step": (ru1.ru_minflt - ru0.ru_minflt) / (n * repeats)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["W2", "W6", "stack"])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per framework")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one repeat")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats, args.seconds, args.threads)))
        return
    frameworks = ("splitgrad", "torch")
    runs = {(w, f): [] for w in args.workloads for f in frameworks}
    for r in range(args.rounds):
        for w in args.workloads:
            for f in (frameworks if r % 2 == 0 else frameworks[::-1]):
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", f, w, "--repeats", str(args.repeats),
                     "--seconds", str(args.seconds), "--threads", str(args.threads)],
                    capture_output=True, text=True, check=False)
                if out.returncode:
                    sys.exit(f"{f} {w} failed:\n{out.stderr[-3000:]}")
                runs[(w, f)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            sg, th = runs[(w, "splitgrad")][-1], runs[(w, "torch")][-1]
            print(f"round {r + 1} {w:5s} splitgrad {sg['rate']:7.1f}/s {sg['cpu_ms']:6.1f} cpu-ms"
                  f"  torch {th['rate']:7.1f}/s {th['cpu_ms']:6.1f} cpu-ms"
                  f"  ratio {sg['rate'] / th['rate']:.2f}", file=sys.stderr)
    print(f"threads {args.threads}")
    print(f"{'workload':8s} {'splitgrad/s':>11s} {'torch/s':>9s} {'ratio':>6s} "
          f"{'cpu-ms sg':>9s} {'torch':>6s} {'cpu ratio':>9s} {'faults/step sg':>14s} {'torch':>6s}")
    med = statistics.median
    for w in args.workloads:
        sg, th = runs[(w, "splitgrad")], runs[(w, "torch")]
        ratio = med(a["rate"] / b["rate"] for a, b in zip(sg, th))
        cpu_ratio = med(b["cpu_ms"] / a["cpu_ms"] for a, b in zip(sg, th))
        print(f"{w:8s} {med(a['rate'] for a in sg):11.1f} {med(b['rate'] for b in th):9.1f} "
              f"{ratio:5.2f}x {med(a['cpu_ms'] for a in sg):9.1f} "
              f"{med(b['cpu_ms'] for b in th):6.1f} {cpu_ratio:8.2f}x "
              f"{med(a['faults_per_step'] for a in sg):14.1f} "
              f"{med(b['faults_per_step'] for b in th):6.1f}")


if __name__ == "__main__":
    main()
