"""Forward and backward of splitgrad's conv and pooling primitives, alone, on the shapes of the
fashion-cnn recipe (the MIT lab CNN, W7), W2, W6 (inference, batch 256) and a strided
Conv2DTranspose: where a convolutional step spends its time outside the GEMMs.

    python benchmarks/conv_kernels_bench.py                          # this checkout
    python benchmarks/conv_kernels_bench.py --against /tmp/sg-base   # old vs new, interleaved
    python benchmarks/conv_kernels_bench.py --rounds 5 --blas-kernel Haswell

Each round runs one fresh process per checkout (this one, then each `--against` path), in turn,
so machine drift hits both alike. A process builds each layer on float32 NHWC input, warms it
up, then times `--calls` forward calls (training mode: the graph is built) and as many
backward calls (the op's own `backward` on a fixed output gradient); W6 cases run forward only,
under no_grad. Reported per case: the median over rounds of each process's fastest call (ms;
on a shared machine slower calls measure the neighbours), with min and max over rounds, and
the ratio other/this (> 1: this checkout is faster). Every process runs under the glibc malloc
setting of docs/benchmarks.md and reports the BLAS kernel it ran on (threadpoolctl) and the
numba version its compiled kernels came from.

Ops are timed alone, so a conv's backward here always applies its own ReLU mask: the pass it
skips behind a max pool (the pool applies the mask at pooled size) shows only in whole steps:
the last case, "fashion-cnn train step", times the recipe's whole training step (forward,
backward, Adam; batch 64, real Fashion-MNIST when installed), as benchmarks/compare.py's
W2/W7 and a fashion-cnn epoch do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MALLOC_TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"

# name: (layer spec, input shape). Layer spec: (class name, args, kwargs). A "conv1" is a first
# layer: its input needs no gradient.
CASES = {
    "lab conv1 1->24 relu": (("Conv2D", (24, 3), {"activation": "relu"}), (64, 28, 28, 1)),
    "lab pool1 26x26x24": (("MaxPool2D", (2,), {}), (64, 26, 26, 24)),
    "lab conv2 24->36 relu": (("Conv2D", (36, 3), {"activation": "relu"}), (64, 13, 13, 24)),
    "lab pool2 11x11x36": (("MaxPool2D", (2,), {}), (64, 11, 11, 36)),
    "W2 conv1 1->32 relu": (("Conv2D", (32, 3), {"activation": "relu"}), (64, 28, 28, 1)),
    "W2 pool1 26x26x32": (("MaxPool2D", (2,), {}), (64, 26, 26, 32)),
    "W2 conv2 32->64 relu": (("Conv2D", (64, 3), {"activation": "relu"}), (64, 13, 13, 32)),
    "W2 pool2 11x11x64": (("MaxPool2D", (2,), {}), (64, 11, 11, 64)),
    "W6 conv1 1->32 (b256)": (("Conv2D", (32, 3), {"activation": "relu"}), (256, 28, 28, 1)),
    "W6 conv2 32->64 (b256)": (("Conv2D", (64, 3), {"activation": "relu"}), (256, 13, 13, 32)),
    "W6 pool1 (b256)": (("MaxPool2D", (2,), {}), (256, 26, 26, 32)),
    "W6 pool2 (b256)": (("MaxPool2D", (2,), {}), (256, 11, 11, 64)),
    "pool 3x3 stride 2 same": (("MaxPool2D", (3, 2, "same"), {}), (64, 26, 26, 24)),
    "convT 32->16 s2 same": (
        ("Conv2DTranspose", (16, 3), {"strides": 2, "padding": "same"}),
        (64, 7, 7, 32),
    ),
    "conv 16->16 s1 same": (("Conv2D", (16, 3), {"padding": "same"}), (64, 14, 14, 16)),
}


def worker(calls: int) -> dict:
    """In a fresh process: ms per forward and per backward call of every case (medians)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    import splitgrad
    from splitgrad import Tensor, nn, no_grad

    rng = np.random.default_rng(0)
    out = {}
    for name, ((cls, args, kwargs), shape) in CASES.items():
        layer = getattr(nn, cls)(*args, **kwargs)
        xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
        fwd, bwd = [], []
        g = None
        infer = "(b256)" in name  # W6: inference, forward only under no_grad
        for i in range(calls + 5):  # the first 5 calls warm up (build, workspace)
            # A first layer's input needs no gradient in training (its backward skips dx).
            x = Tensor(xs[i % 4], requires_grad="conv1" not in name)
            t0 = time.perf_counter()
            if infer:
                with no_grad():
                    y = layer(x)
            else:
                y = layer(x)
            t1 = time.perf_counter()
            if not infer:
                if g is None:
                    g = rng.standard_normal(y.shape).astype(np.float32)
                ctx = y._ctx
                t2 = time.perf_counter()
                ctx.backward(g)
                t3 = time.perf_counter()
                del ctx
            if i >= 5:
                fwd.append(t1 - t0)
                bwd.append(float("nan") if infer else t3 - t2)
            del y
        # The fastest call: on a shared 2-core machine slower calls measure the neighbours.
        out[name] = (1e3 * min(fwd), 1e3 * (float("nan") if infer else min(bwd)))
    out["fashion-cnn train step"] = (recipe_step(calls), float("nan"))
    blas = [
        f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    jit = sys.modules.get("numba")  # loaded by the first compiled kernel, if any ran
    return {
        "times": out,
        "blas": ", ".join(blas),
        "numba": jit.__version__ if jit else "not used",
        "splitgrad": str(Path(splitgrad.__file__)),
    }


def recipe_step(calls: int) -> float:
    """ms of the fastest of `calls` whole training steps (forward, backward, Adam) of the
    fashion-cnn recipe's model at batch 64, on Fashion-MNIST when it is installed (else random
    images: timing barely depends on the pixels)."""
    import numpy as np

    import splitgrad
    from splitgrad import recipes

    rec = recipes.get("fashion-cnn")
    splitgrad.seed(0)
    try:
        data = rec.load_data(False, 0)
        x, y = data.x_train[: 64 * (calls + 5)], data.y_train[: 64 * (calls + 5)]
    except Exception:  # noqa: BLE001 - no dataset here: random images of the same shape
        rng = np.random.default_rng(0)
        x = rng.random((64 * (calls + 5), 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, 64 * (calls + 5))
        data = None
    model = rec.build_model(1e-3, data)
    model.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)  # build, compile kernels
    times = []
    for i in range(calls + 5):
        xb, yb = x[64 * i : 64 * (i + 1)], y[64 * i : 64 * (i + 1)]
        t0 = time.perf_counter()
        model.train_step(xb, yb)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def run_child(root: str, calls: int, kernel: str) -> dict:
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = MALLOC_TUNED
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(var, None)
    if kernel != "auto":
        env["OPENBLAS_CORETYPE"] = kernel
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--calls", str(calls)]
    res = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", nargs="*", default=[], help="other checkouts to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--blas-kernel", default="auto", help="auto or an OPENBLAS_CORETYPE")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.calls)))
        return
    roots = [str(ROOT)] + [str(Path(p).resolve()) for p in args.against]
    results = {r: [] for r in roots}
    for _ in range(args.rounds):
        for r in roots:
            results[r].append(run_child(r, args.calls, args.blas_kernel))
    kernels = sorted({res["blas"] for rs in results.values() for res in rs})
    print(f"BLAS: {'; '.join(kernels)}; malloc tuned; {args.rounds} rounds x {args.calls} calls")
    jits = sorted({str(res.get("numba")) for rs in results.values() for res in rs})
    print(f"numba: {'; '.join(jits)}")
    print("fastest call of each process, ms: median over rounds [min-max]; ratio = other / this")
    head = f"{'case':26s} {'pass':4s} " + " ".join(f"{Path(r).name[:22]:>24s}" for r in roots)
    print(head + ("  ratio" if len(roots) > 1 else ""))
    for name in results[roots[0]][0]["times"]:  # CASES, then the whole step
        for k, kind in enumerate(("fwd", "bwd")):
            cells, meds = [], []
            for r in roots:
                v = [res["times"][name][k] for res in results[r]]
                meds.append(statistics.median(v))
                cells.append(f"{meds[-1]:8.3f} [{min(v):.3f}-{max(v):.3f}]")
            ratio = "  ".join(f"{m / meds[0]:5.2f}" for m in meds[1:])
            if all(math.isnan(m) for m in meds):  # NaN: a forward-only (W6) case has no backward
                continue
            print(f"{name:26s} {kind:4s} " + " ".join(f"{c:>24s}" for c in cells) + "  " + ratio)


if __name__ == "__main__":
    main()
