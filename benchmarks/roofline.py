"""The BLAS roofline of a workload: every GEMM of one training step (W6: one inference pass),
timed alone in NumPy under a given OpenBLAS kernel, summed into the fastest step the BLAS allows.

    python benchmarks/roofline.py W3 W3b                        # the auto-detected kernel
    python benchmarks/roofline.py W3 W3b --blas-kernel Haswell  # the environment's guard kernel
    python benchmarks/roofline.py W1 W4 W5 W6                   # the dense and conv workloads
    python benchmarks/roofline.py W3b --json                    # the figures as JSON on stdout

A framework whose step runs faster than this roofline multiplies faster than NumPy's BLAS can on
these shapes: no NumPy library catches it by cutting its own overhead (compare.py --roofline
puts every framework's steps/s next to it).

One step of Embedding(83, 256) · LSTM(H) · Dense(83) over batch B × T = 100 steps performs, as
splitgrad's Sequential runs it (the Embedding feeding the LSTM is fused, layers/fusion.py: the
input projection is looked up by id in the table E·W_ih) and its ops (ops/recurrent.py,
ops/linalg.py) call them:

    forward   projection table  (83, 256) @ (256, 4H) = E·W_ih  once
              recurrent product (B, H) @ (H, 4H)               T times, one call per step
              Dense logits      (T·B, H) @ (H, 83)             once
    backward  Dense dx, dW      (T·B, 83) @ (83, H), (H, T·B) @ (T·B, 83)
              recurrent product (B, 4H) @ (4H, H) = dz·W_hhᵀ   T − 1 times (h0 takes no gradient)
              dE, dW_ih         (83, 4H) @ (4H, 256) = S·W_ihᵀ, (256, 83) @ (83, 4H) = Eᵀ·S,
                                S = each id's gate gradients summed (a scatter, not a GEMM)
              dW_hh             (H, T·B) @ (T·B, 4H)

Without the fusion (PyTorch's step, and docs/benchmarks.md's FLOP count) the table and the two
products with S have T·B rows instead of 83: (T·B, 256) @ (256, 4H) and so on.

A stack of Dense layers (W1, W4, W5) makes x·W forward, then from the top dW = xᵀ·g and
dx = g·Wᵀ for each layer (none for the first layer's input). W6, the W2 CNN's inference pass
over 256 images, is each convolution as an im2col GEMM, (B·Ho·Wo, 3·3·C) @ (3·3·C, O), and the
two Dense products (splitgrad runs its first convolution, whose K is only 9, as a fused kernel
instead: that entry is what a GEMM-based convolution costs).

Each shape is timed with np.matmul into a preallocated output, float32, the BLAS's own threads,
operands laid out as the op has them (a transposed weight is a transposed view, which OpenBLAS
takes without a copy). The per-step products are timed as the workload makes them: `count`
separate calls in a row, each on its own time step's rows, because OpenBLAS repacks the whole
weight on every call and that, not the arithmetic, is what an 8-row product costs. Each entry
is warmed up and timed for about `--seconds`, split into `--passes` interleaved rounds over all
entries: a single product counts its best call, a per-step entry `count` × the 10th percentile
of its calls (each timed on its own; `Timer.seconds` says why not the best whole loop, which is
shown too). The roofline is the sum of the entries' times; `roofline steps/s` is its inverse.
Adam is elementwise, not a GEMM: its time (a plain in-place NumPy Adam over all parameters) is
shown on its own line and left out of the roofline (W6 trains nothing and has none).

The timing runs in a fresh child process under benchenv.py's kernel and malloc settings
(`--blas-kernel auto|env|NAME`, `--malloc tuned|system`), which reports the kernel that ran
(threadpoolctl: internal_api, architecture, threads). compare.py's `--roofline` calls `beside`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchenv.py and workloads.py sit next to this script

import benchenv

# The recurrent workloads: hidden units; batch comes from workloads.WORKLOADS.
UNITS = {"W3": 1024, "W3b": 256}
EMBED, VOCAB, STEPS = 256, 83, 100
# The Dense stacks: layer widths, input first.
WIDTHS = {"W1": (784, 256, 128, 10), "W4": (784, 512, 32, 512, 784), "W5": (30, 16, 1)}
# W6's convolutions: (input side, input channels, output channels), 3×3 valid, 2×2 pools after.
CONVS = ((28, 1, 32), (13, 32, 64))
W6_DENSE = (1600, 128, 10)
ROOFLINES = ("W1", "W3", "W3b", "W4", "W5", "W6")


class Gemm(NamedTuple):
    """`count` products a (m, k) @ b (k, n) per step; `a_t`/`b_t`: that operand is a transposed
    view; `sequence`: the calls are separate, one per time step (else one call)."""

    name: str
    phase: str
    m: int
    k: int
    n: int
    count: int
    a_t: bool = False
    b_t: bool = False
    sequence: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def gemms(workload: str) -> list[Gemm]:
    """Every GEMM of one training step (W6: inference pass), in the order the step runs them."""
    if workload in WIDTHS:
        return _dense_gemms(workload)
    if workload == "W6":
        return _inference_gemms()
    if workload not in UNITS:
        raise SystemExit(
            f"roofline: workload {workload!r} has no roofline here; give one of "
            f"{', '.join(ROOFLINES)}"
        )
    return _recurrent_gemms(workload)


def _recurrent_gemms(workload):
    from workloads import WORKLOADS

    b, h, t = WORKLOADS[workload][0], UNITS[workload], STEPS
    rows, g = t * b, 4 * h  # all time steps' rows; the four gates' width
    return [
        Gemm("projection table E·W_ih", "forward", VOCAB, EMBED, g, 1),
        Gemm("recurrent h·W_hh", "forward", b, h, g, t, sequence=True),
        Gemm("Dense logits", "forward", rows, h, VOCAB, 1),
        Gemm("Dense dx = dy·Wᵀ", "backward", rows, VOCAB, h, 1, b_t=True),
        Gemm("Dense dW = xᵀ·dy", "backward", h, rows, VOCAB, 1, a_t=True),
        Gemm("recurrent dz·W_hhᵀ", "backward", b, g, h, t - 1, b_t=True, sequence=True),
        Gemm("dE = S·W_ihᵀ", "backward", VOCAB, g, EMBED, 1, b_t=True),
        Gemm("dW_ih = Eᵀ·S", "backward", EMBED, VOCAB, g, 1, a_t=True),
        Gemm("dW_hh = hᵀ·dz", "backward", h, rows, g, 1, a_t=True),
    ]


def _dense_gemms(workload):
    from workloads import WORKLOADS

    b, widths = WORKLOADS[workload][0], WIDTHS[workload]
    layers = list(itertools.pairwise(widths))
    out = [Gemm(f"Dense {k + 1} x·W", "forward", b, i, o, 1) for k, (i, o) in enumerate(layers)]
    for k in reversed(range(len(layers))):
        i, o = layers[k]
        out.append(Gemm(f"Dense {k + 1} dW = xᵀ·g", "backward", i, b, o, 1, a_t=True))
        if k:
            out.append(Gemm(f"Dense {k + 1} dx = g·Wᵀ", "backward", b, o, i, 1, b_t=True))
    return out


def _inference_gemms():
    from workloads import WORKLOADS

    b, out = WORKLOADS["W6"][0], []
    for k, (side, c, o) in enumerate(CONVS):
        rows = b * (side - 2) ** 2
        out.append(Gemm(f"conv {k + 1} im2col·W", "forward", rows, 9 * c, o, 1))
    i, h, o = W6_DENSE
    return [
        *out,
        Gemm("Dense 1 x·W", "forward", b, i, h, 1),
        Gemm("Dense 2 x·W", "forward", b, h, o, 1),
    ]


def parameters(workload: str) -> int:
    """The model's parameter count (Embedding, LSTM weights and both biases, Dense), or 0 for
    W6 (an inference pass: no update)."""
    if workload in WIDTHS:
        widths = WIDTHS[workload]
        return sum(i * o + o for i, o in itertools.pairwise(widths))
    if workload == "W6":
        return 0
    h = UNITS[workload]
    return VOCAB * EMBED + (EMBED + h + 2) * 4 * h + h * VOCAB + VOCAB


# ----- the child: timing -----------------------------------------------------------------
def _operand(rng, rows, cols, transposed):
    import numpy as np

    shape = (cols, rows) if transposed else (rows, cols)
    x = rng.standard_normal(shape, dtype=np.float32)
    return x.T if transposed else x


def _repeat(run, seconds, least=3):
    """Warm up once, then call `run` for about `seconds` (at least `least` times); returns the
    list of what each timed call returned."""
    run()
    samples, start = [], time.perf_counter()
    while len(samples) < least or time.perf_counter() - start < seconds:
        samples.append(run())
    return samples


class Timer:
    """One entry's products on operands laid out as the op has them. `timed()` makes the
    entry's calls once and returns each call's seconds (`count` calls in a row for a per-step
    entry, each on its own time step's rows, as the loop does; else the one call)."""

    def __init__(self, gemm: Gemm):
        import numpy as np

        self.gemm, self.samples, self.loops = gemm, [], []
        rng = np.random.default_rng(0)
        self.b = _operand(rng, gemm.k, gemm.n, gemm.b_t)
        calls = gemm.count if gemm.sequence else 1
        if gemm.sequence:
            self.a = rng.standard_normal((calls, gemm.m, gemm.k), dtype=np.float32)
        else:
            self.a = _operand(rng, gemm.m, gemm.k, gemm.a_t)[None]
        self.out = np.empty((calls, gemm.m, gemm.n), np.float32)

    def timed(self):
        import numpy as np

        a, b, out, clock = self.a, self.b, self.out, time.perf_counter
        times = []
        for i in range(len(out)):
            t = clock()
            np.matmul(a[i], b, out=out[i])
            times.append(clock() - t)
        return times

    def run(self, seconds):
        """One pass: time the entry for about `seconds` and keep the samples."""
        for times in _repeat(self.timed, seconds):
            self.samples += times
            self.loops.append(sum(times))

    def seconds(self):
        """(roofline seconds, best whole loop) for the entry's `count` products.

        One product: its best call. Per-step products: `count` × the 10th percentile of all
        their calls. On this shared 2-core machine another busy process stalls OpenBLAS's
        second thread for a scheduler tick on some calls (an 8-row call then takes ~10 ms
        instead of ~1), and a 100-call loop is rarely left alone from start to end; the best
        whole loop is kept alongside for comparison.
        """
        import numpy as np

        g = self.gemm
        if not g.sequence:
            return min(self.samples) * g.count, min(self.loops) * g.count
        return float(np.percentile(self.samples, 10)) * g.count, min(self.loops)


def time_adam(size: int, seconds: float) -> float:
    """Best seconds for one plain in-place NumPy Adam update of `size` float32 parameters."""
    import numpy as np

    rng = np.random.default_rng(0)
    p, grad = (rng.standard_normal(size, dtype=np.float32) for _ in range(2))
    m, v, tmp = (np.zeros(size, np.float32) for _ in range(3))
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
    clock = time.perf_counter

    def run():  # in-place ufuncs only, as an optimizer that allocates nothing would do
        t = clock()
        np.multiply(m, b1, out=m)
        np.multiply(grad, 1 - b1, out=tmp)
        np.add(m, tmp, out=m)
        np.multiply(v, b2, out=v)
        np.multiply(grad, grad, out=tmp)
        np.multiply(tmp, 1 - b2, out=tmp)
        np.add(v, tmp, out=v)
        np.sqrt(v, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(m, tmp, out=tmp)
        np.multiply(tmp, lr, out=tmp)
        np.subtract(p, tmp, out=p)
        return clock() - t

    return min(_repeat(run, seconds))


def measure(workloads, seconds: float, passes: int) -> dict:
    """Runs in the child: every entry of every workload timed, the roofline, the kernel.

    The entries are timed in `passes` interleaved rounds of seconds/passes each, so that a
    burst of another program's work on the shared cores spoils one round of an entry, not all
    of its samples."""
    import os

    import numpy  # noqa: F401 - loads OpenBLAS before threadpoolctl looks
    from threadpoolctl import threadpool_info
    from workloads import WORKLOADS

    out = {"workloads": {}, "load_1min_start": os.getloadavg()[0]}
    timers = {w: [Timer(g) for g in gemms(w)] for w in workloads}
    for _ in range(passes):
        for w in workloads:
            for timer in timers[w]:
                timer.run(seconds / passes)
    for w in workloads:
        rows, total = [], 0.0
        for timer in timers[w]:
            g = timer.gemm
            s, loop = timer.seconds()
            total += s
            shape = f"{g.m}x{g.k}{'ᵀ' if g.a_t else ''} @ {g.k}x{g.n}{'ᵀ' if g.b_t else ''}"
            rows.append(
                {**g._asdict(), "shape": shape, "flops": g.flops, "ms": s * 1e3,
                 "loop_ms": loop * 1e3, "gflops": g.flops / s / 1e9}
            )  # fmt: skip
        flops = sum(g.flops for g in gemms(w))
        out["workloads"][w] = {
            "gemms": rows,
            "total_ms": total * 1e3,
            "gflop": flops / 1e9,
            "gflops": flops / total / 1e9,
            "roofline_steps_per_s": 1.0 / total,
            "convention_gflop": WORKLOADS[w][2] / 1e9,  # docs/benchmarks.md's 3 × forward
            "adam_ms": time_adam(parameters(w), min(seconds, 1.0)) * 1e3 if parameters(w) else 0.0,
            "parameters": parameters(w),
        }
    out["threadpool"] = [
        {k: i.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    out["runtime"] = benchenv.runtime()
    return out


# ----- the parent: a fresh child under the kernel, then the table -----------------------
def run_child(workloads, blas_kernel="auto", malloc="tuned", seconds=1.0, passes=3) -> dict:
    """Time `workloads` in a fresh process under benchenv's kernel and malloc settings."""
    cmd = [sys.executable, __file__, "--worker", *workloads, "--seconds", str(seconds)]
    cmd += ["--passes", str(passes)]
    env = benchenv.child_env(blas_kernel, malloc)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise SystemExit(f"roofline: the timing process failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["settings"] = {
        "blas_kernel": blas_kernel,
        "malloc": malloc,
        "seconds": seconds,
        "passes": passes,
    }
    return result


def print_table(result: dict) -> None:
    rt, s = result["runtime"], result["settings"]
    print(
        f"BLAS kernel that ran: {rt['blas']} (--blas-kernel {s['blas_kernel']}, "
        f"OPENBLAS_CORETYPE={rt['coretype']}); malloc {rt['malloc']}; 1-min load "
        f"{result['load_1min_start']:.1f} at the start, {rt['load_1min']:.1f} at the end "
        f"(2 cores); ~{s['seconds']} s per entry in {s['passes']} interleaved passes"
    )
    for w, r in result["workloads"].items():
        what = "inference pass" if w == "W6" else "training step"
        print(f"\n{w}: every GEMM of one {what}, timed alone in NumPy (float32)")
        print(f"  {'GEMM':26s} {'phase':8s} {'shape (m×k @ k×n)':24s} {'count':>5s} "
              f"{'ms':>8s} {'GFLOPS':>7s} {'best whole loop ms':>18s}")  # fmt: skip
        for g in r["gemms"]:
            loop = f"{g['loop_ms']:18.2f}" if g["sequence"] else ""
            print(
                f"  {g['name']:26s} {g['phase']:8s} {g['shape']:24s} {g['count']:5d} "
                f"{g['ms']:8.2f} {g['gflops']:7.1f} {loop}"
            )
        print(
            f"  {'total':26s} {'':8s} {r['gflop']:17.2f} GFLOP {'':5s} {r['total_ms']:8.2f} "
            f"{r['gflops']:7.1f}"
        )
        print(f"  roofline steps/s: {r['roofline_steps_per_s']:.2f}")
        if r["parameters"]:
            print(
                f"  Adam over {r['parameters']:,} parameters (elementwise, not in the "
                f"roofline): {r['adam_ms']:.2f} ms"
            )


def beside(summary: dict, frameworks, blas_kernel: str, malloc: str, seconds=1.0) -> dict:
    """For compare.py --roofline: time the measured workloads' rooflines in a fresh process
    under the same kernel and malloc, print every framework's steps/s next to them (over 100 %:
    faster than NumPy's BLAS multiplies those shapes), and return the rows."""
    workloads = [w for w in ROOFLINES if any(f"{w}/{f}" in summary for f in frameworks)]
    if not workloads:
        print(f"roofline: no figures to compare with (it covers {', '.join(ROOFLINES)})")
        return {}
    result = run_child(workloads, blas_kernel, malloc, seconds)
    print(f"\nroofline (benchmarks/roofline.py; BLAS kernel that ran: {result['runtime']['blas']})")
    print(f"{'wl':4s} {'framework':9s} {'steps/s':>9s} {'roofline steps/s':>16s} "
          f"{'% of roofline':>13s}")  # fmt: skip
    rows = {}
    for w in workloads:
        roof = result["workloads"][w]["roofline_steps_per_s"]
        for f in frameworks:
            if f"{w}/{f}" not in summary:
                continue
            med = summary[f"{w}/{f}"]["median"]
            rows[f"{w}/{f}"] = {"steps_per_s": med, "roofline_steps_per_s": roof,
                                "percent": 100 * med / roof}  # fmt: skip
            print(f"{w:4s} {f:9s} {med:9.1f} {roof:16.2f} {100 * med / roof:12.0f}%")
    return {"rows": rows, "blas": result["runtime"]["blas"], "detail": result}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "workloads", nargs="*", default=["W3", "W3b"], help=f"any of {', '.join(ROOFLINES)}"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="timing budget per GEMM entry, all passes together",
    )
    parser.add_argument(
        "--passes", type=int, default=3, help="interleaved rounds the budget is split into"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="the figures as JSON: on stdout instead of the table, or into PATH",
    )
    benchenv.add_options(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for w in args.workloads:
        gemms(w)  # a clear message for a workload without a roofline, before any timing
    if args.worker:
        print(json.dumps(measure(args.workloads, args.seconds, args.passes)))
        return
    result = run_child(args.workloads, args.blas_kernel, args.malloc, args.seconds, args.passes)
    if args.json == "-":
        print(json.dumps(result, indent=1))
        return
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
