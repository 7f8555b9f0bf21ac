"""Cutting a model into consecutive blocks: what the ways that cut through the layers share.

Pipeline stages, split learning's client and server parts, local learning's blocks: each is a
run of consecutive layers of a `Sequential` (or of a list of blocks the user gives). A cut is a
list of boundaries, e.g. [0, 2, 5] for the blocks layers[0:2] and layers[2:5]. The blocks are
new `Sequential` models holding the SAME layer objects, so their weights are the model's.

    bounds = balance(costs=[p.size for p in ...], parts=2)   # or by measured time
    first, second = cut(model, bounds)
    bounds = plan(model, 2, by="time", x=x_train[:16])       # the same, measured on the model

A block can live at another place: `block_spec` packs one block of a compiled model as a
replica spec (replicas.pack's format: its layers, the model's optimizer with the state of the
block's parameters only, the loss), and `adopt_blocks` brings the trained blocks home.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time

import numpy as np

from ..layers.layer import Layer, generators
from ..model import Sequential
from ..tensor import Tensor, no_grad


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


def parse_cuts(cuts, who: str = "cuts"):
    """Cut points (layer indices where a block starts) as a list of ints, from a list, an int
    or a string "2,5" (a command-line option); None stays None."""
    if cuts is None or cuts == "":
        return None
    if isinstance(cuts, str):
        cuts = [c for c in cuts.replace(" ", "").split(",") if c]
    elif isinstance(cuts, (int, np.integer)):
        cuts = [cuts]
    try:
        return [int(c) for c in cuts]
    except (TypeError, ValueError):
        raise ValueError(f"{who} must be layer indices like '2,5', got {cuts!r}") from None


def cut(model, bounds) -> list:
    """The blocks layers[b_i:b_{i+1}] as Sequential models sharing the model's layer objects."""
    layers = layers_of(model)
    bounds = check_bounds(bounds, len(layers))
    return [
        block_of(model, layers[lo:hi], f"block{i}")
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds))
    ]


def block_of(model, layers, name) -> Sequential:
    """A Sequential running these layers of `model` (the same objects: no renaming, no copies),
    with the model's dtype if the model imposes one, else its first layer's (as a Sequential
    built from them would have)."""
    explicit = getattr(model, "dtype_explicit", False)
    block = Sequential(name=name, dtype=model.dtype if explicit else layers[0].dtype)
    block.dtype_explicit = explicit
    block.layers = list(layers)
    return block


def balance(costs, parts: int, cut_costs=None) -> list:
    """Boundaries cutting items with these `costs` (parameter counts, measured seconds) into
    `parts` consecutive runs, none empty, so that the largest run's total is as small as
    possible (the linear partition problem, solved exactly by dynamic programming).

    `cut_costs[b]` (optional, one per boundary 0..n: e.g. the activation width there) breaks
    ties: among the cuts with that smallest largest run, the one whose boundaries cost least
    in all (a second exact pass under that bound)."""
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
    if cut_costs is not None:
        return _cheapest_cut(prefix, parts, best[parts][n], cut_costs)
    bounds, i = [n], n
    for k in range(parts, 0, -1):
        i = choice[k][i]
        bounds.append(i)
    return bounds[::-1]


def _cheapest_cut(prefix, parts, bound, cut_costs) -> list:
    """The boundaries of least total `cut_costs` among the cuts into `parts` runs, none empty,
    none heavier than `bound` (dynamic programming again)."""
    n = len(prefix) - 1
    if len(cut_costs) != n + 1:
        raise ValueError(f"balance: cut_costs needs one entry per boundary (n + 1 = {n + 1})")
    limit = bound + 1e-12 * max(1.0, abs(bound))  # the bound itself came from these sums
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    choice = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                if prefix[i] - prefix[j] > limit or best[k - 1][j] == inf:
                    continue
                value = best[k - 1][j] + (float(cut_costs[j]) if k > 1 else 0.0)
                if value < best[k][i]:
                    best[k][i], choice[k][i] = value, j
    bounds, i = [n], n
    for k in range(parts, 0, -1):
        i = choice[k][i]
        bounds.append(i)
    return bounds[::-1]


# ----- what to balance: parameters, time, and the widths at the boundaries -------------------
@contextlib.contextmanager
def _inference(layers):
    """The layers in inference mode (no dropout draws, no running-statistics updates)."""
    modes = [layer.training for layer in layers]
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)


def param_counts(model) -> list:
    """The trainable parameter count of each layer (or block)."""
    return [sum(p.size for p in layer.parameters()) for layer in layers_of(model)]


def given_or_balanced(model, cuts, parts) -> list:
    """Block boundaries: the user's `cuts` (inner boundaries), or `parts` blocks balanced by
    parameter count."""
    if cuts is None:
        return balance(param_counts(model), parts)
    return [0, *cuts, len(layers_of(model))]


def boundary_activations(model, x) -> list:
    """[a_0 = x, a_1, ..., a_n]: the input of each layer and the output of the last, as arrays,
    in inference mode and without a graph (one sample row is enough to know the shapes)."""
    layers = layers_of(model)
    out = [np.asarray(x)]
    with _inference(layers), no_grad():
        a = x
        for layer in layers:
            a = layer(a)
            out.append(a.data)
    return out


def widths(model, x) -> list:
    """The values per example at each boundary 0..n (d in the pipeline's 2·(B/M)·d)."""
    return [math.prod(a.shape[1:]) for a in boundary_activations(model, x[:1])]


def layer_times(model, x, repeats: int = 5) -> list:
    """Seconds of one forward and one backward of each layer on the batch `x` (the median of
    `repeats`, after one run not counted), in inference mode, leaving the weights' gradients
    as they were."""
    layers = layers_of(model)
    inputs = boundary_activations(model, x)[:-1]
    times = []
    with _inference(layers):
        for i, (layer, a) in enumerate(zip(layers, inputs)):
            params = layer.parameters()
            kept = [p.grad for p in params]
            runs = []
            for _ in range(max(1, int(repeats)) + 1):
                start = time.perf_counter()
                out = layer(Tensor(a, requires_grad=i > 0))  # no gradient for the data
                if out.requires_grad:
                    out.backward(np.ones(out.shape, out.dtype))
                runs.append(time.perf_counter() - start)
            for p, grad in zip(params, kept):
                p.grad = grad
            runs = sorted(runs[1:])  # the first run pays for first allocations
            times.append(runs[len(runs) // 2])
    return times


def plan(model, parts: int, by: str = "params", x=None) -> list:
    """Boundaries cutting the model into `parts` blocks balanced by parameter count
    (`by="params"`) or by measured forward + backward time on the batch `x` (`by="time"`);
    ties go to the cut with the narrowest boundaries (least to send across)."""
    if by not in ("params", "time"):
        raise ValueError(f"balance by 'params' or 'time', got {by!r}")
    if x is None:
        raise ValueError("plan: give a batch x (it measures the widths at the boundaries)")
    costs = param_counts(model) if by == "params" else layer_times(model, x)
    return balance(costs, parts, cut_costs=widths(model, x))


# ----- a block at another place --------------------------------------------------------------
def positions(model, block) -> list:
    """Where each of the block's parameters stands in the model's (and its optimizer's) order."""
    where = {id(p): i for i, p in enumerate(model.parameters())}
    return [where[id(p)] for p in block.parameters()]


def param_names(state_dict) -> list:
    """An optimizer's parameter names in order, from its state_dict (keys are "name.kind")."""
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in state_dict["state"]))


def sliced_state(state_dict, sources) -> dict:
    """The optimizer state of the parameter pieces `sources` = [(position, axis, indices)]
    (indices None: the whole parameter), numbered 0..k-1: what an optimizer built on just
    those pieces holds. Blocks take whole parameters, tensor-parallel shards slices."""
    out = copy.deepcopy({k: v for k, v in state_dict.items() if k != "state"})
    out["param_steps"] = [state_dict["param_steps"][pos] for pos, _, _ in sources]
    names, saved = param_names(state_dict), state_dict["state"]
    kinds = list(dict.fromkeys(key.rsplit(".", 1)[1] for key in saved))
    out["state"] = {}
    for local, (pos, axis, idx) in enumerate(sources):
        for kind in kinds:
            value = np.asarray(saved[f"{names[pos]}.{kind}"])
            piece = value if idx is None else np.take(value, idx, axis=axis)
            out["state"][f"{local}.{kind}"] = np.array(piece)
    return out


def scatter_state(state_dict, parts) -> dict:
    """The model's optimizer state with pieces put back: `parts` is [(sources, the pieces'
    optimizer state_dict)], `sources` as in `sliced_state`; the model's settings are kept."""
    out = copy.deepcopy(state_dict)
    names = param_names(state_dict)
    for sources, part in parts:
        out["step"] = part["step"]
        for local, (pos, axis, idx) in enumerate(sources):
            out["param_steps"][pos] = part["param_steps"][local]
            for key, value in part["state"].items():
                name, kind = key.rsplit(".", 1)
                if name != str(local):
                    continue
                target = out["state"][f"{names[pos]}.{kind}"]
                if idx is None:
                    target[...] = value
                else:
                    np.moveaxis(target, axis, 0)[idx] = np.moveaxis(np.asarray(value), axis, 0)
    return out


def block_state(state_dict, where) -> dict:
    """The optimizer state of the parameters at positions `where`, numbered 0..k-1 (what an
    optimizer built on the block's parameters alone holds)."""
    return sliced_state(state_dict, [(i, None, None) for i in where])


def merge_state(state_dict, parts) -> dict:
    """The model's optimizer state with each block's put back: `parts` is [(positions, the
    block optimizer's state_dict)]; the model's settings are kept."""
    return scatter_state(state_dict, [([(i, None, None) for i in w], st) for w, st in parts])


def block_spec(model, block, sample, clipnorm: bool = True) -> dict:
    """One block of a compiled model as a replica spec (`replicas.unpack` builds it anywhere):
    the block's layers and weights, the model's optimizer with the state of the block's
    parameters, the model's loss, the block's generators. `sample` is one input row of the
    block. With clipnorm=False the block's optimizer does not clip by its own norm (the norm
    over all blocks is the caller's to apply)."""
    opt = model.optimizer
    state = block_state(opt.state_dict(), positions(model, block))
    config = opt.get_config()
    if not clipnorm:
        config["global_clipnorm"] = state["config"]["global_clipnorm"] = None
    return {
        "cls": Sequential,
        "config": block.get_config(),
        "sample": np.array(sample[:1]),
        "weights": block.get_weights(),
        "opt_cls": type(opt),
        "opt_config": config,
        "opt_state": state,
        "loss": copy.deepcopy(model.loss),
        "layer_rngs": {k: g.bit_generator.state for k, g in generators(block).items()},
    }


def adopt_blocks(model, blocks, trained):
    """Copy trained blocks into the model: `blocks` are the model's own (cut(model, ...)),
    `trained` for each a dict with its "weights", its optimizer's "opt_state" and its
    "layer_rngs"."""
    for block, part in zip(blocks, trained):
        block.set_weights(part["weights"])
        for key, gen in generators(block).items():
            gen.bit_generator.state = part["layer_rngs"][key]
    parts = [(positions(model, b), part["opt_state"]) for b, part in zip(blocks, trained)]
    model.optimizer.load_state_dict(merge_state(model.optimizer.state_dict(), parts))
