"""Cutting a model into consecutive blocks: what the ways that cut through the layers share.

Pipeline stages, split learning's client and server parts, local learning's blocks: each is a
run of consecutive layers of a `Sequential` (or of a list of blocks the user gives). A cut is a
list of boundaries, e.g. [0, 2, 5] for the blocks layers[0:2] and layers[2:5]. The blocks are
new `Sequential` models holding the SAME layer objects, so their weights are the model's.

    bounds = balance(costs=[p.size for p in ...], parts=2)   # or by measured time
    first, second = cut(model, bounds)
"""

from __future__ import annotations

import itertools

from ..layers.layer import Layer
from ..model import Sequential


def layers_of(model) -> list:
    """The layers (or blocks) a model is cut between: a Sequential's layers, or the list given."""
    if isinstance(model, Sequential):
        return list(model.layers)
    if isinstance(model, (list, tuple)) and model and all(isinstance(b, Layer) for b in model):
        return list(model)
    raise TypeError(
        f"cutting a model into blocks needs a Sequential or a list of layers/blocks, got "
        f"{type(model).__name__}; write the model as nn.Sequential([...]) or pass its blocks "
        "as a list"
    )


def check_bounds(bounds, n_layers: int, who: str = "cut") -> list:
    """`bounds` as a list of ints 0 = b0 < b1 < ... < bk = n_layers, or a clear error."""
    bounds = [int(b) for b in bounds]
    if (
        len(bounds) < 2
        or bounds[0] != 0
        or bounds[-1] != n_layers
        or any(a >= b for a, b in itertools.pairwise(bounds))
    ):
        raise ValueError(
            f"{who}: boundaries must rise strictly from 0 to the number of layers "
            f"({n_layers}), e.g. [0, {max(1, n_layers // 2)}, {n_layers}]; got {bounds}"
        )
    return bounds


def cut(model, bounds) -> list:
    """The blocks layers[b_i:b_{i+1}] as Sequential models sharing the model's layer objects."""
    layers = layers_of(model)
    bounds = check_bounds(bounds, len(layers))
    dtype = getattr(model, "dtype", None) if getattr(model, "dtype_explicit", False) else None
    blocks = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        block = Sequential(name=f"block{i}", dtype=dtype)
        block.layers = layers[lo:hi]  # the same objects: no renaming, no copies
        blocks.append(block)
    return blocks


def balance(costs, parts: int) -> list:
    """Boundaries cutting items with these `costs` (parameter counts, measured seconds) into
    `parts` consecutive runs, none empty, so that the largest run's total is as small as
    possible (the linear partition problem, solved exactly by dynamic programming)."""
    n, parts = len(costs), int(parts)
    if not 1 <= parts <= n:
        raise ValueError(f"cannot cut {n} layers into {parts} non-empty blocks")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[k][i]: the smallest possible largest-block cost of the first i items in k blocks.
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    choice = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i]:
                    best[k][i], choice[k][i] = value, j
    bounds, i = [n], n
    for k in range(parts, 0, -1):
        i = choice[k][i]
        bounds.append(i)
    return bounds[::-1]
