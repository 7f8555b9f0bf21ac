"""The optimizer's step on W1 (MLP 784-256-128-10, 235,146 parameters): one group, two groups.

Times, in one process each (best of `--repeats`):
- `train`: 1,000 W1 training steps (`Model.train_step`: forward, backward, Adam step);
- `step`: 1,000 `opt.step()` calls alone on W1's parameters with fixed gradients, for the
  plain optimizer (one group, the fast flat path), and with two parameter groups (first layer
  / the rest, their own lr); also SGD with Keras's per-variable `clipnorm`.

Run it from the repository root: `python benchmarks/optim_step_bench.py`. To compare with
another version of the package, put that version first on PYTHONPATH. Prints the BLAS kernel
(threadpoolctl), which the `train` figure depends on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def blas_info() -> str:
    from threadpoolctl import threadpool_info

    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(
        f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}" for i in info
    )


def _best(fn, n, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from workloads import splitgrad_model

    import splitgrad as sg

    model, x, y = splitgrad_model("W1")
    model.train()
    rows = {
        "train (Adam, 1 group)": _best(lambda: model.train_step(x, y), args.steps, args.repeats)
    }

    params = model.parameters()
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=p.shape).astype(p.data.dtype) for p in params]

    def stepper(opt):
        bufs = opt.grad_buffers()
        for p, g in zip(params, grads):
            bufs[p][...] = g
            p.grad = bufs[p]
        return opt.step

    makers = {
        "step Adam, 1 group": lambda: sg.optim.Adam(params, learning_rate=1e-5),
        "step SGD momentum, 1 group": lambda: sg.optim.SGD(params, lr=1e-5, momentum=0.9),
        "step SGD clipnorm (per variable)": lambda: sg.optim.SGD(params, lr=1e-5, clipnorm=1.0),
    }
    try:
        first, rest = params[:2], params[2:]
        sg.optim.Adam([{"params": first}, {"params": rest}])
        makers["step Adam, 2 groups"] = lambda: sg.optim.Adam(
            [{"params": first, "lr": 1e-5}, {"params": rest}], learning_rate=2e-5
        )
    except (TypeError, ValueError):  # a version without parameter groups
        pass
    for label, make in makers.items():
        try:
            opt = make()
        except (TypeError, ValueError):
            continue
        model.optimizer = None  # the parameters are now the new optimizer's
        rows[label] = _best(stepper(opt), args.steps, args.repeats)

    print(f"splitgrad from {Path(sg.__file__).parent}; BLAS: {blas_info()}")
    for label, seconds in rows.items():
        print(f"  {label:36s} {seconds * 1e3:8.3f} ms/step")


if __name__ == "__main__":
    main()
