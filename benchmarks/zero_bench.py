"""ZeRO (#9): memory per place under stages 1–3 against the formula, for an MLP of about 10 M
parameters (784-2048-2048-2048-10, float32, Adam), next to data parallel (#1).

    python benchmarks/zero_bench.py               # Inline (N = 1, 2, 4, 8) and Ray (N = 2)
    python benchmarks/zero_bench.py --no-ray      # Inline only

Two measurements:
1. the bytes each worker holds between steps, summed over its arrays by category (weights,
   gradients, optimizer = the master piece and Adam's two moments; `zero.footprint`), for N
   workers inline, next to the formula of zero.py's docstring and to data parallel's worker;
2. the resident memory of each Ray place (one worker per place, N = 2; /proc VmRSS now and
   VmHWM, the peak) after training, for data parallel and the three stages, each in fresh
   actors: what the process really holds, Python, the library and transient buffers included.
Memory does not depend on the BLAS kernel; the kernel is printed anyway (threadpoolctl).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import splitgrad as sg
from splitgrad import nn
from splitgrad.split import DataParallel, Inline, RayPlaces
from splitgrad.split.zero import Zero

MB = 1024 * 1024


def build(seed=0):
    sg.seed(seed)
    model = nn.Sequential(
        [
            nn.Dense(2048, activation="relu"),
            nn.Dense(2048, activation="relu"),
            nn.Dense(2048, activation="relu"),
            nn.Dense(10),
        ]
    )
    model.compile(sg.optim.Adam(learning_rate=1e-3), sg.losses.SparseCategoricalCrossentropy(True))
    return model


def data(rows=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 784)).astype(np.float32), rng.integers(0, 10, rows)


def held(host, key):
    """Place op (sent by value): what a data-parallel worker holds, by the same categories."""
    model = host.slots[key].model
    opt = model.optimizer.state_dict()["state"].values()
    return {
        "weights": sum(p.data.nbytes for p in model.parameters()),
        "gradients": sum(0 if p.grad is None else p.grad.nbytes for p in model.parameters()),
        "optimizer": sum(a.nbytes for a in opt),
    }


def resident(host):
    """Place op (sent by value): this process's private resident memory (RssAnon, after
    handing freed heap back to the system), its whole RSS and its peak, in MiB. RssAnon leaves
    out the object store's shared pages that Ray maps into every worker."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines())
    return {k: int(fields[k].split()[0]) / 1024 for k in ("RssAnon", "VmRSS", "VmHWM")}


def fit(way, steps=4, batch=64):
    x, y = data(batch * steps)
    model = build()
    history = model.fit(x, y, batch_size=batch, epochs=1, seed=0, verbose=0, way=way)
    return model, history


def inline_table():
    model = build()
    model.build_from_sample(data(1)[0])
    p = sg.split.replicas.count(model)
    print(f"\n## held between steps, per worker, inline (P = {p:,} float32, Adam; MiB)")
    print("| way | N | weights | gradients | optimizer | gathered peak | total | formula total |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    way = DataParallel(1)
    fit(way, steps=1)
    one = way.places.gather([way.places.submit(0, held, "w0")])[0]
    total = sum(one.values())
    print(
        f"| one place / #1 | any | {one['weights'] / MB:.1f} | {one['gradients'] / MB:.1f} | "
        f"{one['optimizer'] / MB:.1f} | 0 | {total / MB:.1f} | {4 * p * 4 / MB:.1f} |"
    )
    for n in (1, 2, 4, 8):
        for stage in (1, 2, 3):
            _, history = fit(Zero(n, stage=stage), steps=2)
            worst = max(history.traffic["memory"], key=lambda m: sum(m["measured"].values()))
            got, book = worst["measured"], worst["formula"]
            assert got == book, (got, book)
            print(
                f"| zero-{stage} | {n} | {got['weights'] / MB:.1f} | {got['gradients'] / MB:.1f} | "
                f"{got['optimizer'] / MB:.1f} | {got['gathered_peak'] / MB:.1f} | "
                f"{sum(got.values()) / MB:.1f} | {sum(book.values()) / MB:.1f} |"
            )


def ray_table():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=1024 * MB)  # fmt: skip
    print("\n## memory of each Ray place, N = 2 (one worker per place), MiB")
    print("| way | idle place: private (RssAnon) | after training: private, place 0 / 1 | "
          "whole RSS, place 0 / 1 | peak RSS (VmHWM) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name, make in [
        ("data-parallel", lambda w: DataParallel(2, places=w)),
        ("zero-1", lambda w: Zero(2, stage=1, places=w)),
        ("zero-2", lambda w: Zero(2, stage=2, places=w)),
        ("zero-3", lambda w: Zero(2, stage=3, places=w)),
    ]:
        places = RayPlaces(2, object_store_mb=1024, timeout=600)
        idle = places.gather([places.submit(h, resident) for h in range(2)])
        fit(make(places))
        after = places.gather([places.submit(h, resident) for h in range(2)])
        print(
            f"| {name} | {idle[0]['RssAnon']:.0f} | {after[0]['RssAnon']:.0f} / "
            f"{after[1]['RssAnon']:.0f} | {after[0]['VmRSS']:.0f} / {after[1]['VmRSS']:.0f} | "
            f"{max(a['VmHWM'] for a in after):.0f} |"
        )
        places.close()
    ray.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    args = parser.parse_args()
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    kernel = ", ".join(
        f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}" for i in blas
    )
    print(f"BLAS: {kernel or 'none found'}; places: {Inline().describe()}")
    inline_table()
    if not args.no_ray:
        ray_table()


if __name__ == "__main__":
    main()
