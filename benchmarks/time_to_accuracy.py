"""End to end, the headline figure: a recipe trained by splitgrad next to the same model in PyTorch.

    python benchmarks/time_to_accuracy.py                          # the four recipes, full runs
    python benchmarks/time_to_accuracy.py --recipes digits-cnn fashion-mlp
    python benchmarks/time_to_accuracy.py --recipes irish-lstm --epochs 10    # 1,000 iterations
    python benchmarks/time_to_accuracy.py --blas-kernel Haswell --rounds 2 --json out.json

splitgrad trains each recipe exactly as `splitgrad train NAME` does (its data, model, settings,
`fit_options` schedule and callbacks, through `recipes.fit_recipe`), except that the model is
built on one sample before `fit` (torch_recipes.built_model). PyTorch trains the same network
from the same initial weights (copied from that splitgrad model) on the same rows: the same
training/validation cut (the last 10 % validate), the same batch order (splitgrad's
`ArrayBatches` with the same seed; irish-lstm: the same random windows), batch size, Adam
settings, learning-rate schedule (cosine decay evaluated per batch, as splitgrad's
`CosineDecay`), early stopping (fashion-cnn: patience 3 on val_loss, best weights restored) and
epochs, and validates after every epoch as splitgrad's loop does. So the two runs differ only
in float32 rounding and in speed, and the time to target compares speed, not initial luck.

Each side runs in its own fresh process, under the same malloc setting and BLAS kernel
(benchenv.py: `--malloc`, `--blas-kernel`); sides alternate which goes first in each round.
Reported per side: wall time of the training (fit with its per-epoch validation, from the
first step to the restored best weights; loading the data, building the model and the test pass
are outside it on both sides), time until the target of TARGETS is first met at an epoch's end,
the final test accuracy (irish-lstm: test loss), peak RSS of the process, training steps/s
(validation excluded: compare it with compare.py's W7 for fashion-cnn and W3 for irish-lstm),
the fastest epoch (on a busy machine the least disturbed one), the whole process's wall time,
and the BLAS kernel that ran; then the ratios splitgrad / PyTorch.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchenv.py and torch_recipes.py sit next to this script

import benchenv

# recipe: (log key, target, "above" or "below", what it means)
TARGETS = {
    "digits-cnn": ("val_accuracy", 0.95, "above", "validation accuracy >= 95 %"),
    "fashion-mlp": ("val_accuracy", 0.87, "above", "validation accuracy >= 87 %"),
    "fashion-cnn": ("val_accuracy", 0.90, "above", "validation accuracy >= 90 %"),
    "irish-lstm": ("loss", 1.0, "below", "training loss < 1.0 nats/char (block mean)"),
}
SEED = 0


class Clock:
    """Times a run with splitgrad's callback hooks (the PyTorch loop calls them too): the
    training's wall time from on_train_begin to on_train_end (so loading the data, building the
    model and the final test pass are outside it, on both sides), the time since training began
    at each epoch's end (after validation), and the time spent in training steps alone."""

    def __init__(self):
        self.epochs, self.steps, self.step_s = [], 0, 0.0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.last = time.perf_counter(), None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.last is not None:
            self.step_s += self.last - self.epoch_start
        row = {"epoch": epoch + 1, "t": time.perf_counter() - self.start}
        row.update({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})
        self.epochs.append(row)
        shown = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch")
        print(f"    epoch {epoch + 1}: {shown}", file=sys.stderr, flush=True)

    def on_train_end(self, logs=None):
        self.train_s = time.perf_counter() - self.start

    def summary(self) -> dict:
        return {
            "epochs": self.epochs,
            "train_s": self.train_s,
            "steps": self.steps,
            "steps_per_s": self.steps / self.step_s if self.step_s else float("nan"),
        }


def run_splitgrad(name, epochs):
    """The recipe through recipes.fit_recipe, as `splitgrad train NAME` trains it."""
    from torch_recipes import built_model

    from splitgrad import random as sg_random
    from splitgrad import recipes

    recipe = recipes.get(name)
    settings = recipes.settings_for(recipe, epochs=epochs)
    sg_random.seed(SEED)
    data, _ = recipes.load_recipe_data(name, recipe, False, SEED)
    model = built_model(name, recipe, settings, data, SEED)  # PyTorch starts from these weights
    clock = Clock()
    recipes.fit_recipe(recipe, model, data, settings, SEED, verbose=0, callbacks=[clock])
    out = clock.summary()
    out["test"] = recipes.recipe_metrics(recipe, model, data)
    return out


def run_torch(name, epochs, initial):
    """The same model, initial weights (the file `initial`), data, batches, optimizer,
    schedule and epochs in PyTorch."""
    from torch_recipes import train

    clock = Clock()
    test = train(name, epochs, SEED, clock, initial)
    out = clock.summary()
    out["test"] = test
    return out


def worker(side, name, epochs, initial):
    """In a fresh process: train, then add peak RSS and the kernel that ran."""
    import numpy  # noqa: F401 - loaded before either framework, as in compare.py

    if side == "splitgrad":
        out = run_splitgrad(name, epochs)
    else:
        out = run_torch(name, epochs, initial)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(benchenv.runtime())
    key, target, direction, _ = TARGETS[name]
    out["to_target_s"] = out["to_target_epoch"] = None
    for row in out["epochs"]:
        value = row.get(key)
        if value is not None and (value >= target if direction == "above" else value < target):
            out["to_target_s"], out["to_target_epoch"] = row["t"], row["epoch"]
            break
    return out


def _fmt(value, spec):
    """`spec % value`, or a dash as wide when there is no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(len(spec % 0))
    return spec % value


def _fastest_epoch(run):
    """The shortest epoch (training and validation): on a busy machine, the least disturbed."""
    ends = [row["t"] for row in run["epochs"]]
    return min(b - a for a, b in zip([0.0, *ends], ends))


def _final(name, run):
    """Test accuracy; irish-lstm's test loss (nats/char)."""
    return run["test"]["loss" if name == "irish-lstm" else "accuracy"]


def report(results, args):
    """Print the table: per recipe each side's figures (median over rounds), then the ratios."""
    import statistics

    def med(runs, key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    sides = ("splitgrad", "torch")
    for side in sides:
        seen = sorted({r["blas"] for (s, _), runs in results.items() if s == side for r in runs})
        print(f"BLAS kernel that ran ({side}): {' | '.join(seen) or 'no run'}")
    every = [r for runs in results.values() for r in runs]
    mallocs = sorted({r["malloc"] for r in every})
    loads = [r["load_1min"] for r in every]
    print(
        f"malloc: {' | '.join(mallocs)}; --blas-kernel {args.blas_kernel}; rounds {args.rounds}; "
        f"1-min load average at the runs' ends {min(loads, default=0):.1f}-"
        f"{max(loads, default=0):.1f} (2 cores)"
    )
    print(
        f"{'recipe':12s} {'side':9s} {'ep':>3s} {'train s':>8s} {'to target s':>11s} {'@ep':>4s} "
        f"{'final':>7s} {'peak MiB':>8s} {'steps/s':>8s} {'fastest ep':>10s} {'process s':>9s}"
    )
    summary = {}
    for name in args.recipes:
        row = {}
        for side in sides:
            runs = results.get((side, name), [])
            if not runs:
                continue
            row[side] = s = {
                "epochs": med([{"n": len(r["epochs"])} for r in runs], "n"),
                "train_s": med(runs, "train_s"),
                "to_target_s": med(runs, "to_target_s"),
                "to_target_epoch": med(runs, "to_target_epoch"),
                "final": med([{"f": _final(name, r)} for r in runs], "f"),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "steps_per_s": med(runs, "steps_per_s"),
                "fastest_epoch_s": min(_fastest_epoch(r) for r in runs),
                "process_s": med(runs, "process_s"),
                "blas": sorted({r["blas"] for r in runs}),
                "load_1min": [r["load_1min"] for r in runs],
                "runs": runs,
            }
            print(
                f"{name:12s} {side:9s} {s['epochs']:3.0f} {_fmt(s['train_s'], '%8.1f')} "
                f"{_fmt(s['to_target_s'], '%11.1f')} {_fmt(s['to_target_epoch'], '%4.0f')} "
                f"{_fmt(s['final'], '%7.4f')} {s['peak_rss_mib']:8.0f} "
                f"{_fmt(s['steps_per_s'], '%8.1f')} {s['fastest_epoch_s']:10.2f} "
                f"{_fmt(s['process_s'], '%9.1f')}"
            )
        if len(row) == 2:
            sg, pt = row["splitgrad"], row["torch"]
            ratios = {
                k: sg[k] / pt[k] if sg[k] and pt[k] else None
                for k in (
                    "train_s",
                    "to_target_s",
                    "peak_rss_mib",
                    "steps_per_s",
                    "fastest_epoch_s",
                    "process_s",
                )
            }
            row["ratios"] = ratios
            print(
                f"{name:12s} {'ratio':9s} {'':3s} {_fmt(ratios['train_s'], '%7.2fx')} "
                f"{_fmt(ratios['to_target_s'], '%10.2fx')} {'':4s} {'':7s} "
                f"{_fmt(ratios['peak_rss_mib'], '%7.2fx')} {_fmt(ratios['steps_per_s'], '%7.2fx')} "
                f"{_fmt(ratios['fastest_epoch_s'], '%9.2fx')} {_fmt(ratios['process_s'], '%8.2fx')}"
            )
        print(
            f"{'':12s} target: {TARGETS[name][3]}; "
            "final: test accuracy (irish-lstm: test loss, nats/char)"
        )
        summary[name] = row
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs")
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes per side")
    parser.add_argument("--json", help="also write the raw results here")
    benchenv.add_options(parser)
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "RECIPE"), help=argparse.SUPPRESS)
    parser.add_argument("--initial", help=argparse.SUPPRESS)  # the workers' initial weights
    args = parser.parse_args(argv)
    if args.worker:
        side, name = args.worker
        if side == "initial":
            from torch_recipes import save_initial

            save_initial(name, args.initial, SEED)
        else:
            print(json.dumps(worker(side, name, args.epochs, args.initial)))
        return
    env = benchenv.child_env(args.blas_kernel, args.malloc)
    with tempfile.TemporaryDirectory() as folder:
        results = _run_rounds(args, env, Path(folder))
    summary = report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))


def _run_rounds(args, env, folder) -> dict:
    """Each recipe's initial weights saved once (a process of its own), then `rounds` fresh
    processes per side, alternating which side goes first; {(side, recipe): [runs]}."""
    initial = {}
    for name in args.recipes:
        initial[name] = folder / f"{name}.safetensors"
        command = [sys.executable, __file__, "--worker", "initial", name]
        subprocess.run([*command, "--initial", str(initial[name])], check=True, env=env)
    results = {}
    for round_ in range(args.rounds):
        for name in args.recipes:
            sides = ("torch", "splitgrad") if round_ % 2 == 0 else ("splitgrad", "torch")
            for side in sides:
                print(f"round {round_ + 1}: {side} {name}", file=sys.stderr, flush=True)
                command = [sys.executable, __file__, "--worker", side, name]
                command += ["--initial", str(initial[name])]
                if args.epochs:
                    command += ["--epochs", str(args.epochs)]
                start = time.perf_counter()
                done = subprocess.run(
                    command, check=False, stdout=subprocess.PIPE, text=True, env=env
                )
                if done.returncode:
                    print(f"{side} {name}: worker failed", file=sys.stderr)
                    continue
                run = json.loads(done.stdout.strip().splitlines()[-1])
                run["process_s"] = time.perf_counter() - start
                results.setdefault((side, name), []).append(run)
    return results


if __name__ == "__main__":
    main()
