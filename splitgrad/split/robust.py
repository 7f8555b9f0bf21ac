"""#5 Robust aggregation of client updates: coordinate-wise median, trimmed mean, Krum.

Each takes the K client updates as rows of a (K, P) array and returns one update. None of
them depends on the order of the clients; identical honest updates come back unchanged; with
f hostile clients (f < K/2 for the median, f ≤ trimmed count, K > 2f + 2 for Krum) every
coordinate stays inside the honest clients' range.
"""

from __future__ import annotations

import numpy as np


def median(updates: np.ndarray, f: int = 0) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018)."""
    return np.median(updates, axis=0).astype(updates.dtype)


def trimmed_mean(updates: np.ndarray, f: int = 0, trim: float = 0.1) -> np.ndarray:
    """Drop the b = max(f, ⌊trim·K⌋) largest and smallest values per coordinate, average the
    rest."""
    k = len(updates)
    b = max(int(f), int(trim * k))
    if 2 * b >= k:
        raise ValueError(
            f"trimmed_mean: cannot trim {b} from each side of {k} updates; "
            "use more clients or fewer hostile ones"
        )
    ordered = np.sort(updates, axis=0)
    return ordered[b : k - b].mean(axis=0, dtype=np.float64).astype(updates.dtype)


def krum(updates: np.ndarray, f: int = 0) -> np.ndarray:
    """The update with the smallest sum of squared distances to its K − f − 2 nearest others
    (Blanchard et al. 2017). Ties go to the update that is smallest lexicographically, so the
    choice does not depend on the clients' order."""
    k = len(updates)
    if k <= 2 * f + 2:
        raise ValueError(f"krum: needs K > 2f + 2 updates, got K={k}, f={f}")
    u = updates.astype(np.float64)
    sq = (u * u).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (u @ u.T), 0.0)
    m = k - f - 2
    scores = np.array([np.sort(np.delete(dist[i], i))[:m].sum() for i in range(k)])
    best = np.flatnonzero(scores == scores.min())
    if len(best) > 1:
        best = sorted(best, key=lambda i: tuple(updates[i]))
    return updates[best[0]].copy()


AGGREGATORS = {"median": median, "trimmed-mean": trimmed_mean, "krum": krum}


def hostile_update(size: int, dtype, seed) -> np.ndarray:
    """What a poisoned client sends: ±1e6 on every coordinate (signs from `seed`)."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=size)
    return (signs * 1e6).astype(dtype)
