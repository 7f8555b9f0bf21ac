"""Side-by-side speed of splitgrad and PyTorch (and JAX) on the workloads of docs/benchmarks.md.

    python benchmarks/compare.py W1 W5                 # 3 processes x 5 repeats each
    python benchmarks/compare.py all --processes 2     # W1-W7
    python benchmarks/compare.py all --blas-kernel Haswell    # the kernel forced
    python benchmarks/compare.py W3 W3b --roofline     # + each as % of roofline.py's
    python benchmarks/compare.py W2 --processes 1 --repeats 3 --malloc system
    python benchmarks/compare.py W1 W7 --frameworks splitgrad torch jax   # needs the bench extra
    python benchmarks/compare.py W1 W2 --frameworks splitgrad splitgrad@../old \
        --baseline splitgrad@../old

Each (framework, workload) runs in its own fresh processes; the processes run in interleaved
rounds across frameworks so that machine drift hits everyone alike. Every process runs in the
state a training program is in (benchenv.py): glibc malloc tuned as after loading a data set
(`--malloc system` to turn that off), and the BLAS kernel of `--blas-kernel` (auto: what a
user's NumPy detects; Haswell: OPENBLAS_CORETYPE=Haswell; env: the environment's). Each step
trains on the next of 16 distinct batches, cycled. Reported: median steps/s over all repeats
(min, max), GFLOPS, peak RSS, minor page faults per step, CPU cores busy, the ratio to the
baseline and its geometric mean (also of the fastest repeats, "best": on a shared machine the
fastest repeat is the one least slowed by other programs), and the BLAS kernel and malloc
setting each child reported. Float32, 2 threads. `splitgrad@PATH` is splitgrad imported from
another checkout (e.g. a `git worktree` of an older commit), to check that a change made
nothing slower; `--baseline` picks the framework the ratio column divides by (PyTorch by
default). `jax` (optional: `pip install -e ".[bench]"`) is the same workloads in JAX
(jax_workloads.py: a jit-compiled step, optax Adam); its kernel line names JAX's backend and
devices, and its import time includes optax.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchenv.py and workloads.py sit next to this script

import benchenv

# The modules whose first import is timed as the framework's import time.
IMPORTS = {"splitgrad": ("splitgrad",), "torch": ("torch",), "jax": ("jax", "optax")}


def worker(framework: str, workload: str, repeats: int) -> dict:
    """Runs inside a fresh process: warm up, time `repeats` × N steps, report as JSON."""
    import numpy  # noqa: F401 - imported first so the framework import time is its own
    from workloads import BUILDERS

    t0 = time.perf_counter()
    for module in IMPORTS[framework]:
        __import__(module)
    import_s = time.perf_counter() - t0
    step = BUILDERS[framework](workload)
    # Warm up (docs/benchmarks.md): at least 20 steps (the 16-batch stream at least once) and 1 s.
    start, warm = time.perf_counter(), 0
    while warm < 20 or time.perf_counter() - start < 1.0:
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
    info = benchenv.runtime()
    if framework == "jax":  # XLA brings its own kernels: say what it ran on
        from jax_workloads import describe

        info["blas"] = f"{info['blas']}, {describe()}"
    return {
        "rates": rates,
        "import_s": import_s,
        "peak_rss_mb": ru1.ru_maxrss / 1024,
        "minor_faults_per_step": (ru1.ru_minflt - ru0.ru_minflt) / (n * repeats),
        "cores_busy": cpu / wall,
        **info,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["W1", "W5"], help="W1 ... W8, or all")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--frameworks",
        nargs="+",
        default=["splitgrad", "torch"],
        help="splitgrad, torch, jax (optional), or splitgrad@PATH",
    )
    parser.add_argument("--baseline", default="torch", help="the ratio column divides by it")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument(
        "--roofline",
        action="store_true",
        help="W1, W3, W3b, W4, W5, W6: also time the step's GEMMs alone in NumPy (roofline.py, "
        "a fresh process under the same kernel and malloc) and show each framework's steps/s "
        "as %% of that roofline",
    )
    benchenv.add_options(parser)
    parser.add_argument(
        "--worker", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return

    from workloads import BUILDERS, WORKLOADS

    for f in args.frameworks:
        if f.partition("@")[0] not in BUILDERS:
            parser.error(f"--frameworks {f}: unknown; expected one of {', '.join(BUILDERS)}")
    if "jax" in args.frameworks:
        import importlib.util

        missing = [m for m in IMPORTS["jax"] if importlib.util.find_spec(m) is None]
        if missing:
            parser.error(
                f"--frameworks jax: {' and '.join(missing)} not installed; install the bench "
                'extra (pip install -e ".[bench]") or leave jax out'
            )
    if args.workloads == ["all"]:
        args.workloads = [w for w in WORKLOADS if w != "W8"]
    results = {(f, w): [] for w in args.workloads for f in args.frameworks}
    for round_ in range(args.processes):
        for w in args.workloads:
            for f in args.frameworks:
                name, _, tree = f.partition("@")
                env = benchenv.child_env(args.blas_kernel, args.malloc, pythonpath=tree)
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

    summary = report(results, args, WORKLOADS)
    if args.roofline:
        import roofline

        summary["roofline"] = roofline.beside(
            summary, args.frameworks, args.blas_kernel, args.malloc
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


def report(results, args, workloads) -> dict:
    """Print the table (kernel and malloc lines first) and return the summary for --json."""
    runs_all = [run for runs in results.values() for run in runs]
    for f in args.frameworks:
        seen = sorted({run["blas"] for (g, _), runs in results.items() if g == f for run in runs})
        print(f"BLAS kernel that ran ({f}): {' | '.join(seen) or 'no run'}")
    loads = [run["load_1min"] for run in runs_all]
    low, high = min(loads, default=0), max(loads, default=0)
    print(f"1-min load average at the workers' ends: {low:.1f}-{high:.1f} (2 cores)")
    print(
        f"malloc: {' | '.join(sorted({run['malloc'] for run in runs_all})) or 'no run'} "
        f"(tuned = GLIBC_TUNABLES={benchenv.MALLOC_TUNED}); --blas-kernel {args.blas_kernel}; "
        f"{args.processes} processes x {args.repeats} repeats, 16 distinct batches cycled"
    )
    print(
        f"{'wl':4s} {'framework':9s} {'steps/s':>9s} {'min':>9s} {'max':>9s} {'GFLOPS':>7s} "
        f"{'RSS MB':>7s} {'faults/step':>11s} {'cores':>5s} {'ratio':>6s} {'best':>6s}"
    )
    summary, ratios = {}, {f: [] for f in args.frameworks}
    best_ratios = {f: [] for f in args.frameworks}
    base = args.baseline
    for w in args.workloads:
        medians = {
            f: statistics.median(r for run in results[(f, w)] for r in run["rates"])
            for f in args.frameworks
            if results[(f, w)]
        }
        for f in args.frameworks:
            runs = results[(f, w)]
            if not runs:
                print(f"{w:4s} {f:9s} {'n/a':>9s} (no run finished; see the errors above)")
                continue
            rates = [r for run in runs for r in run["rates"]]
            med = medians[f]
            s = summary[f"{w}/{f}"] = {
                "median": med,
                "min": min(rates),
                "max": max(rates),
                "per_process": [statistics.median(run["rates"]) for run in runs],
                "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
                "faults_per_step": statistics.median(run["minor_faults_per_step"] for run in runs),
                "cores_busy": statistics.median(run["cores_busy"] for run in runs),
                "import_s": statistics.median(run["import_s"] for run in runs),
                "blas": sorted({run["blas"] for run in runs}),
                "malloc": sorted({run["malloc"] for run in runs}),
                "load_1min": [run["load_1min"] for run in runs],
            }
            ratio = best = None
            if f != base and base in medians:
                ratio = med / medians[base]
                best = s["max"] / max(r for run in results[(base, w)] for r in run["rates"])
                ratios[f].append(ratio)
                best_ratios[f].append(best)
                s["ratio"], s["best_ratio"] = ratio, best
            print(
                f"{w:4s} {f:9s} {med:9.1f} {s['min']:9.1f} {s['max']:9.1f} "
                f"{workloads[w][2] * med / 1e9:7.1f} {s['peak_rss_mb']:7.0f} "
                f"{s['faults_per_step']:11.1f} {s['cores_busy']:5.2f} "
                f"{'' if ratio is None else f'{ratio:5.2f}x'} "
                f"{'' if best is None else f'{best:5.2f}x'}"
            )
        if "splitgrad" in medians and base in medians:
            summary[f"{w}/ratio"] = medians["splitgrad"] / medians[base]
    for f, values in ratios.items():
        if values:
            geo = math.exp(sum(math.log(v) for v in values) / len(values))
            top = math.exp(sum(math.log(v) for v in best_ratios[f]) / len(values))
            summary[f"geomean/{f}"], summary[f"geomean_best/{f}"] = geo, top
            print(
                f"geometric mean of {f} / {base} over {len(values)} workloads: {geo:.2f}x "
                f"(fastest repeats: {top:.2f}x)"
            )
    summary["settings"] = {
        "blas_kernel": args.blas_kernel,
        "malloc": args.malloc,
        "processes": args.processes,
        "repeats": args.repeats,
    }
    return summary


if __name__ == "__main__":
    main()
