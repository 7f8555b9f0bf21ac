"""Side-by-side speed of splitgrad and PyTorch on the workloads of docs/benchmarks.md.

    python benchmarks/compare.py W1 W5                 # 3 processes x 5 repeats each
    python benchmarks/compare.py W2 --processes 1 --repeats 3
    python benchmarks/compare.py W1 W2 --frameworks splitgrad splitgrad@../old \
        --baseline splitgrad@../old

Each (framework, workload) runs in its own fresh processes; the processes run in interleaved
rounds across frameworks so that machine drift hits everyone alike. Reported: median steps/s
over all repeats (min, max), the ratio splitgrad / PyTorch, peak RSS, minor page faults per
step and CPU cores busy. Float32, 2 threads, the same fixed batch on every step.
`splitgrad@PATH` is splitgrad imported from another checkout (e.g. a `git worktree` of an
older commit), to check that a change made nothing slower; `--baseline` picks the framework the
ratio column divides by (PyTorch by default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(framework: str, workload: str, repeats: int) -> dict:
    """Runs inside a fresh process: warm up, time `repeats` × N steps, report as JSON."""
    import numpy  # noqa: F401 - imported first so the framework import time is its own

    sys.path.insert(0, str(HERE))
    from workloads import BUILDERS

    t0 = time.perf_counter()
    __import__("splitgrad" if framework == "splitgrad" else "torch")
    import_s = time.perf_counter() - t0
    step = BUILDERS[framework](workload)
    # Warm up: at least 5 steps and 0.3 s.
    start, warm = time.perf_counter(), 0
    while warm < 5 or time.perf_counter() - start < 0.3:
        step()
        warm += 1
    per_step = (time.perf_counter() - start) / warm
    n = max(1, int(1.0 / per_step))
    rates = []
    ru0, t_cpu0, wall0 = (
        resource.getrusage(resource.RUSAGE_SELF),
        time.process_time(),
        time.perf_counter(),
    )
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            step()
        rates.append(n / (time.perf_counter() - t))
    ru1, cpu, wall = (
        resource.getrusage(resource.RUSAGE_SELF),
        time.process_time() - t_cpu0,
        time.perf_counter() - wall0,
    )
    return {
        "rates": rates,
        "import_s": import_s,
        "peak_rss_mb": ru1.ru_maxrss / 1024,
        "minor_faults_per_step": (ru1.ru_minflt - ru0.ru_minflt) / (n * repeats),
        "cores_busy": cpu / wall,
    }


def blas_info() -> str:
    from threadpoolctl import threadpool_info

    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(
        f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}" for i in info
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["W1", "W5"])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frameworks", nargs="+", default=["splitgrad", "torch"])
    parser.add_argument("--baseline", default="torch", help="the ratio column divides by it")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument(
        "--worker", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return

    sys.path.insert(0, str(HERE))
    from workloads import WORKLOADS

    results = {(f, w): [] for w in args.workloads for f in args.frameworks}
    for round_ in range(args.processes):
        for w in args.workloads:
            for f in args.frameworks:
                name, _, tree = f.partition("@")
                env = {**os.environ, "PYTHONPATH": tree} if tree else None
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", name, w, "--repeats", str(args.repeats)],
                    capture_output=True,
                    text=True,
                    check=False,
                    env=env,
                )
                if out.returncode:
                    print(f"{f} {w}: worker failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                results[(f, w)].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(
                    f"  round {round_ + 1}: {f:9s} {w:4s} "
                    f"{statistics.median(results[(f, w)][-1]['rates']):9.1f} steps/s",
                    file=sys.stderr,
                )

    print(f"BLAS: {blas_info()}")
    print(
        f"{'wl':4s} {'framework':9s} {'steps/s':>9s} {'min':>9s} {'max':>9s} {'GFLOPS':>7s} "
        f"{'RSS MB':>7s} {'faults/step':>11s} {'cores':>5s} {'ratio':>6s}"
    )
    summary = {}
    for w in args.workloads:
        medians = {
            f: statistics.median(r for run in results[(f, w)] for r in run["rates"])
            for f in args.frameworks
            if results[(f, w)]
        }
        for f in args.frameworks:
            runs = results[(f, w)]
            if not runs:
                continue
            rates = [r for run in runs for r in run["rates"]]
            med = medians[f]
            summary[f"{w}/{f}"] = {
                "median": med,
                "min": min(rates),
                "max": max(rates),
                "per_process": [statistics.median(run["rates"]) for run in runs],
                "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
                "faults_per_step": statistics.median(run["minor_faults_per_step"] for run in runs),
                "cores_busy": statistics.median(run["cores_busy"] for run in runs),
                "import_s": statistics.median(run["import_s"] for run in runs),
            }
            s = summary[f"{w}/{f}"]
            base = args.baseline
            ratio = med / medians[base] if f != base and base in medians else None
            print(
                f"{w:4s} {f:9s} {med:9.1f} {s['min']:9.1f} {s['max']:9.1f} "
                f"{WORKLOADS[w][2] * med / 1e9:7.1f} {s['peak_rss_mb']:7.0f} "
                f"{s['faults_per_step']:11.1f} {s['cores_busy']:5.2f} "
                f"{'' if ratio is None else f'{ratio:5.2f}x'}"
            )
        if "splitgrad" in medians and args.baseline in medians:
            summary[f"{w}/ratio"] = medians["splitgrad"] / medians[args.baseline]
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
