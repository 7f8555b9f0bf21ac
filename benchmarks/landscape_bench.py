"""Loss-landscape grid time: the 51×51 grid of the digits CNN (recipe digits-cnn), in this
process and spread over 2 Ray places, next to what one example at a time would cost.

    python benchmarks/landscape_bench.py                   # about 5 minutes on 2 cores
    python benchmarks/landscape_bench.py --resolution 21   # shorter
    python benchmarks/landscape_bench.py --haswell         # the environment's Haswell kernel

The model is digits-cnn trained with its default settings; every grid point is one pass over
the 1,437 training images in inference mode, in batches of 512. Timed: the grid in this
process with the BLAS's 2 threads and with 1, over 2 Ray places, and (for scale, from two
points) one example at a time. The measurement runs in a
fresh process under the GLIBC_TUNABLES setting of docs/benchmarks.md, with OPENBLAS_CORETYPE
and OPENBLAS_L2_SIZE unset (the kernel NumPy picks by itself) unless --haswell. Inline the BLAS
uses its 2 threads; each Ray place gets 1 thread, so 2 places share the 2 cores. The BLAS
kernel is reported for this process and for every place.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def blas() -> str:
    from threadpoolctl import threadpool_info

    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(
        f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}" for i in info
    )


def place_blas(host, threads):
    """Place op: limit this place's BLAS to `threads` (Ray's env vars come too late: the
    worker has loaded OpenBLAS already), then report its kernel and threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")  # stays in force: not used as a context
    return blas()


def measure(resolution: int, places: int) -> dict:
    """Runs in the fresh worker process: train, then time the grid each way."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from threadpoolctl import threadpool_limits

    from splitgrad import landscape, recipes
    from splitgrad.checkpoint import load_model
    from splitgrad.split import RayPlaces

    out = {"resolution": resolution, "points": resolution**2, "blas": blas()}
    out["load_average_start"] = os.getloadavg()  # a shared machine: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        recipes.train("digits-cnn", out=Path(tmp) / "run", verbose=0)
        out["train_s"] = time.perf_counter() - start
        model = load_model(Path(tmp) / "run")
    data = recipes.get("digits-cnn").load_data()
    x, y = data.x_train, data.y_train
    out["rows"] = len(x)
    grid = {"resolution": resolution, "seed": 0, "batch_size": 512, "verbose": 0}

    # One example at a time, for scale: a few points, per point.
    direction = landscape.random_directions(model, 1, seed=0)
    center = np.concatenate([p.data.astype(np.float64).ravel() for p in model.parameters()])
    start = time.perf_counter()
    landscape.evaluate_points(model, x, y, center, direction, np.zeros((2, 1)), batch_size=1)
    out["one_at_a_time_point_s"] = (time.perf_counter() - start) / 2

    start = time.perf_counter()
    inline = landscape.surface_2d(model, x, y, **grid)
    out["inline_s"] = time.perf_counter() - start
    with threadpool_limits(1, user_api="blas"):  # what each Ray place gets
        start = time.perf_counter()
        landscape.surface_2d(model, x, y, **grid)
        out["inline_1thread_s"] = time.perf_counter() - start

    import ray

    ray.init(
        address="local",
        num_cpus=places,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=128 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"}},
    )
    where = RayPlaces(places)
    threads = [where.submit(h, place_blas, 1) for h in range(places)]
    out["place_blas"] = where.gather(threads)
    start = time.perf_counter()
    spread = landscape.surface_2d(model, x, y, places=where, **grid)
    out["ray_s"] = time.perf_counter() - start
    out["ray_places"] = places
    out["max_abs_diff"] = float(np.abs(spread["values"] - inline["values"]).max())
    where.close()
    ray.shutdown()
    out["load_average"] = os.getloadavg()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=51)
    parser.add_argument("--places", type=int, default=2)
    parser.add_argument("--haswell", action="store_true", help="OPENBLAS_CORETYPE=Haswell")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.resolution, args.places)))
        return
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    env["GLIBC_TUNABLES"] = TUNABLES
    if args.haswell:
        env["OPENBLAS_CORETYPE"] = "Haswell"
    command = [sys.executable, __file__, "--worker", "--resolution", str(args.resolution)]
    done = subprocess.run(
        [*command, "--places", str(args.places)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    r = json.loads(done.stdout.strip().splitlines()[-1])
    n = r["points"]
    print(f"digits-cnn, {r['resolution']}×{r['resolution']} = {n} points, {r['rows']} rows each")
    print(f"BLAS here: {r['blas']}; at the Ray places: {r['place_blas']}")
    busy = [f"{a[0]:.1f}" for a in (r["load_average_start"], r["load_average"])]
    print(f"load average (1 min) at the start and the end: {busy[0]}, {busy[1]}")
    print("| how | grid s | ms per point | speed vs inline 2 threads |")
    print("|---|---:|---:|---:|")
    one = r["one_at_a_time_point_s"] * n
    for how, seconds in (
        ("inline, 2 BLAS threads", r["inline_s"]),
        ("inline, 1 BLAS thread", r["inline_1thread_s"]),
        (f"{r['ray_places']} Ray places, 1 BLAS thread each", r["ray_s"]),
        ("one example at a time (from 2 points)", one),
    ):
        print(
            f"| {how} | {seconds:.1f} | {1e3 * seconds / n:.1f} | {r['inline_s'] / seconds:.2f}× |"
        )
    print(f"largest difference Ray vs inline: {r['max_abs_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
