"""Directions to look along: filter-normalised random ones (Li et al. 2018) and the top
principal directions of a training trajectory.

Every direction is a flat float64 vector over the model's trainable parameters, in the order of
`model.parameters()` (the order of `split.replicas.get_flat`), so a point of the landscape is
θ* + a·d (+ b·e) and one `set_flat` puts it into the model.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-10  # Li et al.: d_j *= ||θ_j|| / (||d_j|| + 1e-10)


def filter_normalize(direction: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Scale each slice of `direction` along the OUTPUT-unit axis to the norm of the same slice
    of `weight`: d_j *= ||θ_j|| / (||d_j|| + 1e-10). Tensors of dim ≤ 1 (biases, BatchNorm's
    scale and offset) get a zero direction.

    The output axis is the LAST one for every splitgrad kernel (Dense (in, out), Conv2D
    (kh, kw, in, out), the recurrent kernels (in, gates·units), Embedding (vocab, dim)); PyTorch
    keeps it first, which is why code written for PyTorch loops over dim 0 instead.
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim <= 1:
        return np.zeros_like(weight)
    direction = np.asarray(direction, dtype=np.float64)
    if direction.shape != weight.shape:
        raise ValueError(
            f"filter_normalize: direction of shape {direction.shape} for a weight of shape "
            f"{weight.shape}; draw the direction with the weight's shape"
        )
    inner = tuple(range(weight.ndim - 1))  # everything but the output axis: one filter
    w_norm = np.sqrt((weight**2).sum(axis=inner, keepdims=True))
    d_norm = np.sqrt((direction**2).sum(axis=inner, keepdims=True))
    return direction * (w_norm / (d_norm + EPS))


def random_direction(model, rng) -> np.ndarray:
    """One filter-normalised direction d ~ N(0, 1) for the model's trainable parameters, drawn
    from `rng` (a numpy Generator); zero on every tensor of dim ≤ 1."""
    parts = []
    for p in model.parameters():
        w = p.data
        d = rng.standard_normal(w.shape) if w.ndim >= 2 else np.zeros(w.shape)
        parts.append(filter_normalize(d, w).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def random_directions(model, count: int = 1, seed: int = 0) -> np.ndarray:
    """`count` independent filter-normalised directions, shape (count, P), seeded by `seed`
    (the same seed gives the same directions on any machine)."""
    rng = np.random.default_rng(seed)
    return np.stack([random_direction(model, rng) for _ in range(count)])


def pca_directions(trajectory: np.ndarray, final=None, count: int = 2):
    """The top `count` principal directions of a training trajectory (Li et al. §7).

    `trajectory` is (T, P): the flat weights at T moments of training, the last one the final
    model unless `final` is given. The rows θ_i − θ_final are centred (as sklearn's PCA does)
    and decomposed by SVD. Returns (directions (count, P) with unit norm, the fraction of the
    variance each explains, the coordinates (T, count) of every θ_i − θ_final along them).
    """
    weights = np.asarray(trajectory, dtype=np.float64)
    final = weights[-1] if final is None else np.asarray(final, dtype=np.float64)
    diffs = weights - final
    if len(weights) < count + 1:
        raise ValueError(
            f"pca_directions: {count} directions need at least {count + 1} points of the "
            f"trajectory, got {len(weights)}; record more often (TrajectoryRecorder(every=...))"
        )
    centred = diffs - diffs.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    ratio = variance[:count] / max(variance.sum(), np.finfo(np.float64).tiny)
    directions = vt[:count]
    return directions, ratio, diffs @ directions.T


def flat_of(model) -> np.ndarray:
    """The model's trainable parameters as one float64 vector (the centre θ*)."""
    params = model.parameters()
    if not params:
        raise ValueError(f"model {model.name!r} has no trainable parameters to move along")
    return np.concatenate([p.data.astype(np.float64).ravel() for p in params])
