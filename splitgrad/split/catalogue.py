"""The catalogue of ways to split training (docs/split-training.md) and the comparison report.

`print_ways()` lists all 16 ways: what each cuts along, what crosses, the textbook volume and
the property a test checks. `compare(recipe, places=N)` trains a recipe once on one place and
then under every implemented way, and sets loss/accuracy, wall time, measured bytes next to
the formula, and the largest weight difference from the single-place run side by side.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

W = ("#", "name", "cut", "crosses", "formula", "property")
WAYS = [
    (1, "data-parallel", "the batch", "gradients (ring all-reduce)", "2(N-1)/N*P per worker/step",
     "N workers with B/N = 1 worker with B; replicas bitwise equal"),
    (2, "parameter-server", "the batch, in time", "gradients up, weights down",
     "2P per worker/push", "1 worker = SGD; staleness 0 = #1; each push once; staleness <= s"),
    (3, "local-sgd", "the batch, in time", "weights every H steps", "2(N-1)/N*P per H steps",
     "H = 1 with SGD = #1; DiLoCo outer lr 1 = local SGD"),
    (4, "federated", "data ownership", "weights down, deltas + counts up", "2P per client/round",
     "1 client 1 step = SGD; K clients = GD on union; FedProx mu 0 = FedAvg; data stays"),
    (5, "robust", "trust", "as #4", "2P per client/round",
     "identical updates unchanged; order-free; attackers stay inside honest range"),
    (6, "dp-sgd", "trust", "as #1, clipped and noised", "as #1",
     "sigma 0 and no clipping = SGD; clipped norms <= C"),
    (7, "pipeline", "the layers", "activations + their gradients", "2(B/M)d per micro-batch/cut",
     "GPipe gradients = full batch; bubble (S-1)/(M+S-1)"),
    (8, "tensor-parallel", "inside a layer", "partial activations", "all-reduce per layer pair",
     "column then row parallel Dense = unsharded"),
    (9, "zero", "the optimizer state", "reduce-scatter grads + all-gather params",
     "~2(N-1)/N*P", "same weights as #1; 1/N optimizer state per place"),
    (10, "offload", "forward/backward vs update", "gradients out, weights back", "2P per step",
     "remote step = local step bitwise"),
    (11, "split-learning", "layers and data ownership", "cut activations up, gradients down",
     "2Bd per batch (+labels)", "client o server = centralized; U-shaped sends no labels"),
    (12, "local-learning", "the backward pass", "activations forward only", "Bd per batch",
     "single block = backprop; greedy: no gradient into earlier blocks"),
    (13, "accumulation", "the batch, in time", "nothing", "0",
     "k micro-batches = one batch of kB"),
    (14, "checkpoint-resume", "time, across machines", "the whole state once",
     "P + optimizer state", "2n straight = n, save, new process, n more (bitwise)"),
    (15, "recompute", "memory vs compute", "nothing", "0", "gradients bitwise equal"),
    (16, "distillation", "the model", "teacher outputs", "B*C per batch",
     "distillation weight 0 = plain training"),
]

IMPLEMENTED = {"data-parallel", "parameter-server", "local-sgd", "diloco", "federated",
               "fedprox", "robust", "dp-sgd", "accumulation", "checkpoint-resume"}


def print_ways(file=None):
    """Print the catalogue (the `splitgrad ways` command)."""
    widths = [max(len(str(row[i])) for row in [W, *WAYS]) for i in range(5)]
    line = "  ".join(h.ljust(w) for h, w in zip(W, widths)) + "  done"
    print(line, file=file)
    print("-" * len(line), file=file)
    for row in WAYS:
        done = "yes" if row[1] in IMPLEMENTED else "part 2"
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + f"  {done}", file=file)
    print("\nproperty a test checks:", file=file)
    for row in WAYS:
        print(f"  {row[0]:>2} {row[1]}: {row[5]}", file=file)


def make_way(name: str, places: int = 2, options=None, where=None):
    """A way object by its CLI name; `places` = workers/clients, `options` = keyword dict."""
    from .accumulation import GradientAccumulation
    from .data_parallel import DataParallel
    from .dp_sgd import DPSGD
    from .federated import Federated, FedProx, RobustFederated
    from .local_sgd import DiLoCo, LocalSGD
    from .parameter_server import ParameterServer
    from .resume import CheckpointResume

    o = dict(options or {})
    n = int(places)
    if name in OPTIONS:
        unknown = sorted(set(o) - set(OPTIONS[name]))
        if unknown:
            accepted = ", ".join(OPTIONS[name]) or "none"
            raise ValueError(f"way {name!r} has no option {unknown[0]!r}; its options: "
                             f"{accepted}")
    factories = {
        "data-parallel": lambda: DataParallel(n, places=where),
        "parameter-server": lambda: ParameterServer(n, o.get("staleness", 1), places=where),
        "local-sgd": lambda: LocalSGD(n, o.get("H", 4), places=where),
        "diloco": lambda: DiLoCo(n, o.get("H", 4), o.get("outer_lr", 0.7),
                                 o.get("outer_momentum", 0.9), places=where),
        "federated": lambda: Federated(o.get("clients", max(n, 10)), **_fed(o), places=where),
        "fedprox": lambda: FedProx(o.get("clients", max(n, 10)), **_fed(o, mu=0.01),
                                   places=where),
        "robust": lambda: RobustFederated(o.get("clients", max(n, 10)),
                                          **_fed(o, aggregator="median"), places=where),
        "dp-sgd": lambda: DPSGD(o.get("clip", 1.0), o.get("noise", 1.0), workers=n,
                                seed=o.get("seed", 0), places=where,
                                delta=o.get("delta", 1e-5)),
        "accumulation": lambda: GradientAccumulation(o.get("k", 4), places=where),
        "checkpoint-resume": lambda: CheckpointResume(o.get("move_at", 1),
                                                      directory=o.get("directory"),
                                                      places=where),
    }
    if name not in factories:
        known = ", ".join(sorted(factories))
        raise ValueError(f"unknown way {name!r}; implemented ways: {known} "
                         "(`splitgrad ways` lists the whole catalogue)")
    return factories[name]()


_FED_KEYS = ("fraction", "local_epochs", "local_batch_size", "mu", "partition", "alpha",
             "dropout", "aggregator", "poisoned", "seed")

# The --way-option keys each way reads; any other key is an error, not silently ignored.
OPTIONS = {
    "data-parallel": (),
    "parameter-server": ("staleness",),
    "local-sgd": ("H",),
    "diloco": ("H", "outer_lr", "outer_momentum"),
    "federated": ("clients",) + _FED_KEYS,
    "fedprox": ("clients",) + _FED_KEYS,
    "robust": ("clients",) + _FED_KEYS,
    "dp-sgd": ("clip", "noise", "seed", "delta"),
    "accumulation": ("k",),
    "checkpoint-resume": ("move_at", "directory"),
}


def _fed(o, **defaults):
    return {**defaults, **{k: o[k] for k in _FED_KEYS if k in o}}


# Ways that should reproduce the single-place run (allclose) with compare's settings.
EQUIVALENT = {"data-parallel", "accumulation", "checkpoint-resume"}

# Why each way's weights differ from the single-place run (or why they match), as run by
# `compare` with make_way's defaults; the catalogue's property column says when they would match.
NOTES = {
    "single place": "the reference run",
    "data-parallel": "gradients all-reduced before every step: the one-place step up to "
                     "float rounding",
    "data-parallel/dropout": "each worker draws its own dropout masks (seeded by run seed, "
                             "rank, step): same distribution, other masks; exact without dropout",
    "parameter-server": "each push is its own optimizer step on weights up to s=1 clocks old; "
                        "= #1 only with s=0 and plain SGD",
    "local-sgd": "replicas take H=4 local optimizer steps on their shards between averagings; "
                 "= #1 only with H=1 and plain SGD",
    "diloco": "local SGD whose averaging is an outer Nesterov step (lr 0.7, momentum 0.9)",
    "federated": "one round per epoch: sampled clients train from the global weights with a "
                 "fresh optimizer, the server averages their deltas",
    "fedprox": "federated plus the proximal term mu/2*|w - w_global|^2 (mu=0.01)",
    "robust": "federated with the coordinate-wise median of the deltas instead of their mean",
    "dp-sgd": "every example's gradient clipped to C=1 and Gaussian noise sigma*C added",
    "accumulation": "k micro-batches weighted by their share of the batch: the big batch up to "
                    "float rounding",
    "checkpoint-resume": "the whole state (weights, optimizer, RNGs, data position) moves: "
                         "bitwise",
}


def has_dropout(model) -> bool:
    """True when a layer of `model` drops units in training (its masks depend on the place)."""
    from ..layers.core import Dropout

    stack = [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, Dropout) and layer.rate > 0:
            return True
        stack.extend(child for _, child in layer.sublayers())
    return False


def _expectation(name, model):
    """(should the way match the single-place run, the note that says why or why not)."""
    if name is None:
        return True, NOTES["single place"]
    if name == "data-parallel" and has_dropout(model):
        return False, NOTES["data-parallel/dropout"]
    return name in EQUIVALENT, NOTES.get(name, "")


def _recipe(recipe):
    """(build(quick, seed) -> (model, data), settings) for a recipe name, module or function."""
    if callable(recipe):
        return recipe, {}
    if isinstance(recipe, str):
        from .. import recipes

        module = recipes.get(recipe)
    else:
        module = recipe
    if hasattr(module, "build"):
        return module.build, getattr(module, "DEFAULTS", {})

    def build(quick, seed):
        from .. import random as sg_random
        from .. import recipes

        settings = recipes.settings_for(module, quick)
        sg_random.seed(seed)
        data = module.load_data(quick=quick, seed=seed)
        return module.build_model(settings["learning_rate"], data), data

    from .. import recipes as recipes_mod

    return build, recipes_mod.settings_for(module, True)


def compare(recipe, places: int = 2, quick: bool = True, seed: int = 0, out="runs/compare",
            ways=None, ray: bool = False, epochs=None, batch_size=None, verbose=True) -> list:
    """Train `recipe` on one place, then under each implemented way; print and save a table.

    Returns the rows (dicts). Writes `out/compare.md` and `out/compare.png`.
    """
    build, settings = _recipe(recipe)
    epochs = epochs or settings.get("epochs", 2)
    batch_size = batch_size or settings.get("batch_size", 32)
    where = None
    if ray:
        from .places import RayPlaces

        where = RayPlaces(places)
    names = ways or ["data-parallel", "parameter-server", "local-sgd", "diloco", "federated",
                     "fedprox", "robust", "dp-sgd", "accumulation", "checkpoint-resume"]
    rows = []
    baseline = None
    for name in [None, *names]:
        model, data = build(quick, seed)
        way = None if name is None else make_way(name, places, where=where)
        start = time.perf_counter()
        history = model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
                            seed=seed, verbose=0, way=way, shuffle=True)
        wall = time.perf_counter() - start
        scores = model.evaluate(data.x_test, data.y_test, batch_size=256, return_dict=True)
        weights = model.get_weights()
        if baseline is None:
            baseline = weights
        traffic = getattr(history, "traffic", None) or {}
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, baseline))
        should_match, note = _expectation(name, model)
        rows.append({"way": name or "single place", "loss": float(scores.get("loss", np.nan)),
                     "accuracy": float(scores.get("accuracy", np.nan)), "wall_s": wall,
                     "bytes": traffic.get("total_bytes", 0),
                     "textbook": traffic.get("textbook_bytes", 0),
                     "max_weight_diff": diff, "should_match": should_match, "note": note})
        if verbose:
            print(_format_row(rows[-1]), flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(markdown(rows, recipe, places, ray))
    plot(rows, out / "compare.png")
    if verbose:
        print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")
    return rows


def _format_row(r):
    book = "-" if r["textbook"] is None else f"{int(r['textbook']):,}"
    match = f"{r['max_weight_diff']:.2e}" + (" (should be ~0)" if r["should_match"] else "")
    return (f"{r['way']:<18} loss {r['loss']:.4f}  acc {r['accuracy']:.4f}  "
            f"{r['wall_s']:6.2f} s  bytes {r['bytes']:>14,} (formula {book:>14})  "
            f"max |dw| {match}" + (f"\n{'':<18} {r['note']}" if r.get("note") else ""))


def markdown(rows, recipe, places, ray) -> str:
    name = recipe if isinstance(recipe, str) else getattr(recipe, "__name__", "recipe")
    lines = [f"# {name}: every way, {places} places ({'Ray' if ray else 'inline'})", "",
             ("| way | loss | accuracy | wall s | bytes measured | bytes formula | "
              "max weight diff | should match | why |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        book = "-" if r["textbook"] is None else f"{int(r['textbook']):,}"
        lines.append(f"| {r['way']} | {r['loss']:.4f} | {r['accuracy']:.4f} | "
                     f"{r['wall_s']:.2f} | {r['bytes']:,} | {book} | "
                     f"{r['max_weight_diff']:.2e} | {'yes' if r['should_match'] else 'no'} | "
                     f"{r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["way"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(rows))
    axes[0].bar(x - 0.2, [r["bytes"] / 1e6 for r in rows], 0.4, label="measured")
    axes[0].bar(x + 0.2, [(r["textbook"] or 0) / 1e6 for r in rows], 0.4, label="formula")
    axes[0].set_ylabel("MB crossed")
    axes[0].legend()
    axes[1].bar(x, [r["accuracy"] for r in rows])
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        ax.set_xticks(x, names, rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
