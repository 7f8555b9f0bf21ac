"""The catalogue of ways to split training (docs/split-training.md), derived from the way classes.

Each registered way (registry.py) carries its row: number, what it cuts along, what crosses,
the textbook volume and the property a test checks. The ways not built yet are listed in
`PLANNED` until a registered way takes their number. `print_ways()` is `splitgrad ways`.
"""

from __future__ import annotations

from .registry import WAYS as REGISTERED

HEADER = ("#", "name", "cut", "crosses", "formula", "property")
PLANNED = [
    (
        7,
        "pipeline",
        "the layers",
        "activations + their gradients",
        "2(B/M)d per micro-batch/cut",
        "GPipe gradients = full batch; bubble (S-1)/(M+S-1)",
    ),
    (
        8,
        "tensor-parallel",
        "inside a layer",
        "partial activations",
        "all-reduce per layer pair",
        "column then row parallel Dense = unsharded",
    ),
    (
        9,
        "zero",
        "the optimizer state",
        "reduce-scatter grads + all-gather params",
        "~2(N-1)/N*P",
        "same weights as #1; 1/N optimizer state per place",
    ),
    (
        10,
        "offload",
        "forward/backward vs update",
        "gradients out, weights back",
        "2P per step",
        "remote step = local step bitwise",
    ),
    (
        11,
        "split-learning",
        "layers and data ownership",
        "cut activations up, gradients down",
        "2Bd per batch (+labels)",
        "client o server = centralized; U-shaped sends no labels",
    ),
    (
        12,
        "local-learning",
        "the backward pass",
        "activations forward only",
        "Bd per batch",
        "single block = backprop; greedy: no gradient into earlier blocks",
    ),
    (15, "recompute", "memory vs compute", "nothing", "0", "gradients bitwise equal"),
    (
        16,
        "distillation",
        "the model",
        "teacher outputs",
        "B*C per batch",
        "distillation weight 0 = plain training",
    ),
]


def catalogue() -> list:
    """Rows (number, name, cut, crosses, formula, property, done, variants): one per number,
    from the first registered way with that number, else from PLANNED; then the registered
    ways outside the catalogue's numbering (number None, e.g. one of your own), marked "-"."""
    rows, extra = {}, []
    for cls in REGISTERED.values():
        if cls.number is None:
            extra.append(("-", cls.name, cls.cut, cls.crosses, cls.formula, cls.checks, "yes", []))
        elif cls.number in rows:
            rows[cls.number][7].append(cls.name)  # a variant (diloco, fedprox)
        else:
            rows[cls.number] = [
                cls.number,
                cls.name,
                cls.cut,
                cls.crosses,
                cls.formula,
                cls.checks,
                "yes",
                [],
            ]
    for row in PLANNED:
        rows.setdefault(row[0], [*row, "part 2", []])
    return [tuple(rows[k]) for k in sorted(rows)] + extra


def print_ways(file=None):
    """Print the catalogue (the `splitgrad ways` command)."""
    rows = [(*r[:2], *r[2:5]) for r in catalogue()]
    names = [r[1] + (f" (+{', '.join(r[7])})" if r[7] else "") for r in catalogue()]
    rows = [(r[0], name, *r[2:]) for r, name in zip(rows, names)]
    widths = [max(len(str(row[i])) for row in [HEADER, *rows]) for i in range(5)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADER, widths)) + "  done"
    print(line, file=file)
    print("-" * len(line), file=file)
    for row, full in zip(rows, catalogue()):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + f"  {full[6]}", file=file)
    print("\nproperty a test checks:", file=file)
    for row in catalogue():
        print(f"  {row[0]:>2} {row[1]}: {row[5]}", file=file)
