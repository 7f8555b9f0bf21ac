"""The four views of the loss around a trained model, as arrays (the plots are in plots.py).

* `curve_1d`: L(θ* + a·d), a in linspace(−1, 1, N), d filter-normalised (Li et al. 2018).
* `surface_2d`: L(θ* + a·d + b·e) on an N×N grid, a second independent direction e. With the
  same seed, d is the 1D curve's direction, so that curve is the row b = 0 of this grid.
* `interpolation`: L((1 − t)·θ_A + t·θ_B), t in linspace(−0.5, 1.5, N) plus t = 0 and 1
  (Goodfellow, Vinyals & Saxe 2015): is there a wall between two trained models?
* `trajectory_plane`: the loss on the plane of the top two PCA directions of the training path,
  with the path projected onto it (Li et al. §7); random directions would miss the path, which
  lies in a very low-dimensional subspace.

Each returns a dict of plain arrays: `values[..., 0]` is the loss, the other columns the
model's compiled metrics named in `names`.
"""

from __future__ import annotations

import numpy as np

from .directions import flat_of, pca_directions, random_directions
from .grid import evaluate_grid


def metric_names(model):
    """The columns of `values`: the loss, then the model's compiled metrics."""
    return ["loss", *(m.name for m in model.metrics)]


def curve_1d(model, x, y, resolution=51, seed=0, **grid):
    """The 1D curve; `grid` goes to `evaluate_grid` (places, batch_size, verbose)."""
    center, direction = flat_of(model), random_directions(model, 1, seed)
    alpha = np.linspace(-1.0, 1.0, resolution)
    values = evaluate_grid(model, x, y, center, direction, alpha[:, None], desc="1D curve", **grid)
    return {"alpha": alpha, "values": values, "names": metric_names(model)}


def _plane(model, x, y, center, directions, xs, ys, desc, **grid):
    """values (len(ys), len(xs), columns) at center + xs[j]·d0 + ys[i]·d1."""
    a, b = np.meshgrid(xs, ys)  # row i of the grid is ys[i]: one chunk per row
    coords = np.stack([a.ravel(), b.ravel()], axis=1)
    values = evaluate_grid(model, x, y, center, directions, coords, row=len(xs), desc=desc, **grid)
    return values.reshape(len(ys), len(xs), -1)


def surface_2d(model, x, y, resolution=51, seed=0, **grid):
    """The 2D grid; values[i, j] is at (alpha[j], beta[i])."""
    center, directions = flat_of(model), random_directions(model, 2, seed)
    alpha = np.linspace(-1.0, 1.0, resolution)
    values = _plane(model, x, y, center, directions, alpha, alpha, "2D grid", **grid)
    return {"alpha": alpha, "beta": alpha.copy(), "values": values, "names": metric_names(model)}


def check_same_parameters(model, other):
    """ValueError unless both models have trainable parameters of the same shapes, in order."""
    mine = [p.shape for p in model.parameters()]
    theirs = [p.shape for p in other.parameters()]
    if mine != theirs:
        raise ValueError(
            f"--between: the two models have different parameters ({len(mine)} tensors of "
            f"shapes {mine[:4]}... and {len(theirs)} of shapes {theirs[:4]}...); the line "
            "between two models needs two runs of the same architecture"
        )


def interpolation(model, other, x, y, resolution=51, **grid):
    """The straight line from `model` (t = 0) to `other` (t = 1), evaluated with `model`'s
    non-trainable state (BatchNorm statistics); both must have the same parameter shapes."""
    check_same_parameters(model, other)
    start = flat_of(model)
    step = flat_of(other) - start
    t = np.union1d(np.linspace(-0.5, 1.5, resolution), [0.0, 1.0])
    values = evaluate_grid(model, x, y, start, step[None], t[:, None], desc="interpolation", **grid)
    return {"t": t, "values": values, "names": metric_names(model)}


def trajectory_plane(model, x, y, trajectory, resolution=51, margin=0.25, **grid):
    """The PCA plane of `trajectory` ((T, P) flat weights, oldest first) around the model,
    with the path's coordinates in it; the grid spans the path and the model, plus `margin`
    of that span on every side."""
    center = flat_of(model)
    if np.shape(trajectory)[1:] != center.shape:
        raise ValueError(
            f"the trajectory holds vectors of {np.shape(trajectory)[1:]} numbers, the model "
            f"has {center.size} parameters; it was recorded for another model"
        )
    directions, ratio, path = pca_directions(trajectory, final=center)
    axes = []
    for k in range(2):
        lo, hi = min(path[:, k].min(), 0.0), max(path[:, k].max(), 0.0)
        pad = margin * (hi - lo) or 1.0
        axes.append(np.linspace(lo - pad, hi + pad, resolution))
    values = _plane(model, x, y, center, directions, *axes, "PCA plane", **grid)
    return {
        "alpha": axes[0],
        "beta": axes[1],
        "values": values,
        "names": metric_names(model),
        "path": path,
        "explained": ratio,
    }
