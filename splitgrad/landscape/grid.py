"""Evaluating the loss at many points θ = θ* + Σ_k c_k·d_k, here or spread over places.

    values = evaluate_grid(model, x, y, center, directions, coords)   # (n, 1 + metrics)

Each point is one `Model.evaluate` over (x, y): inference mode (Dropout off, BatchNorm on its
running statistics), no graph, batched forward passes of `batch_size` rows, the loss plus the
model's compiled metrics. That is the same number `model.evaluate` reports, so the centre of a
curve is the model's evaluated loss.

Spread over places (split/places.py: `Inline` or `RayPlaces`), every place gets a replica, the
data, the centre and the directions once (`install`, a place op run in a host slot); then chunks
of grid points go out, and only their coordinates and their values cross. Two chunks per place
are kept queued so no place waits for the driver; a tqdm bar counts the points.
"""

from __future__ import annotations

import copy
import math
from collections import deque

import numpy as np

from .. import metrics as metrics_mod
from ..split import host as host_ops
from ..split import replicas

SLOT = "landscape"


def evaluate_points(model, x, y, center, directions, coords, batch_size=256) -> np.ndarray:
    """[loss, *metrics] at each point center + coords[i] @ directions; (n, 1 + metrics).

    The model's weights are put back as they were afterwards.
    """
    center = np.asarray(center, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64).reshape(-1, center.size)
    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    if coords.shape[1] != len(directions):
        raise ValueError(
            f"evaluate_points: coordinates of {coords.shape[1]} numbers for "
            f"{len(directions)} directions; give one coordinate per direction"
        )
    saved = replicas.get_flat(model)
    rows = []
    try:
        for c in coords:
            replicas.set_flat(model, center + c @ directions)  # cast to the model's dtype
            rows.append(model.evaluate(x, y, batch_size=batch_size))
    finally:
        replicas.set_flat(model, saved)
    return np.array(rows, dtype=np.float64).reshape(len(coords), 1 + len(model.metrics))


# ----- place ops: run where the replica lives -------------------------------------------------
def install(host, key, center, directions, metric_specs):
    """Place op: keep the landscape's centre and directions in slot `key` (set up before with
    `split.host.setup`, which installs the replica and the data), and compile the replica's
    metrics (a replica spec carries the loss and optimizer, not the metrics)."""
    slot = host.slots[key]
    slot.model.metric_specs = copy.deepcopy(list(metric_specs))  # inline: not the driver's
    slot.model.metrics = metrics_mod.get_list(slot.model.metric_specs, slot.model.loss)
    slot.state["center"] = np.array(center, dtype=np.float64)
    slot.state["directions"] = np.array(directions, dtype=np.float64)


def evaluate_chunk(host, key, coords, batch_size):
    """Place op: [loss, *metrics] at each of `coords` on this place's replica."""
    slot = host.slots[key]
    return evaluate_points(
        slot.model,
        slot.x,
        slot.y,
        slot.state["center"],
        slot.state["directions"],
        coords,
        batch_size,
    )


def forget(host, key):
    """Place op: drop slot `key` (other slots on the place are left alone)."""
    host.slots.pop(key, None)


# ----- the driver side ----------------------------------------------------------------------
def _chunks(n_points, n_places, row):
    """[lo, hi) ranges of about four chunks per place, at most one grid row each, so the bar
    moves and the places stay evenly loaded."""
    size = max(1, min(row, math.ceil(n_points / (4 * n_places))))
    return [(lo, min(lo + size, n_points)) for lo in range(0, n_points, size)]


def evaluate_grid(
    model,
    x,
    y,
    center,
    directions,
    coords,
    places=None,
    batch_size=256,
    row=None,
    verbose=1,
    desc="loss landscape",
):
    """[loss, *metrics] at every point center + coords[i] @ directions, on `places` (default:
    this process, `Inline()`); returns (n, 1 + metrics) in the order of `coords`. `row` is the
    most points one chunk holds (a grid row)."""
    from ..split.places import Inline

    places = Inline() if places is None else places
    coords = np.asarray(coords, dtype=np.float64)
    coords = coords.reshape(len(coords), -1)
    n = len(coords)
    out = np.empty((n, 1 + len(model.metrics)))
    spec = places.put(replicas.pack(model, x[:1]))
    data = places.put(np.asarray(x)), places.put(np.asarray(y))
    where = places.put(np.asarray(center, np.float64)), places.put(np.asarray(directions))
    hosts = list(range(places.n))
    places.gather([places.submit(h, host_ops.setup, SLOT, spec, *data) for h in hosts])
    specs = list(getattr(model, "metric_specs", []))
    places.gather([places.submit(h, install, SLOT, *where, specs) for h in hosts])
    bar = _bar(n, desc, verbose)
    chunks = _chunks(n, len(hosts), row or n)
    queued = deque()

    def collect():
        wave = queued.popleft()
        for ((lo, hi), _), value in zip(wave, places.gather([p for _, p in wave])):
            if np.shape(value) != out[lo:hi].shape:  # a place measuring other metrics
                raise RuntimeError(
                    f"evaluate_grid: a place returned values of shape {np.shape(value)} for "
                    f"{hi - lo} points of {out.shape[1]} columns (loss and metrics)"
                )
            out[lo:hi] = value
            bar.update(hi - lo)

    try:
        for start in range(0, len(chunks), len(hosts)):
            wave = chunks[start : start + len(hosts)]
            queued.append(
                [
                    ((lo, hi), places.submit(h, evaluate_chunk, SLOT, coords[lo:hi], batch_size))
                    for h, (lo, hi) in zip(hosts, wave)
                ]
            )
            if len(queued) > 1:  # the next wave is queued at every place before we wait
                collect()
        while queued:
            collect()
    finally:
        bar.close()
    places.gather([places.submit(h, forget, SLOT) for h in hosts])
    return out


def _bar(total, desc, verbose):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="point", disable=not verbose, dynamic_ncols=True)
