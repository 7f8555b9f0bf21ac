"""The path training took: flat weights recorded during `Model.fit`, and a recipe run replayed
to record them.

    recorder = TrajectoryRecorder()               # at the start and after every epoch
    model.fit(x, y, epochs=10, callbacks=[recorder])
    recorder.weights                              # (11, P) float32
    save_model(model, "runs/m", attachments={TRAJECTORY_FILE: recorder.to_bytes()})

`splitgrad landscape RUN --trajectory` reads that attachment from the run folder. A run saved by
`splitgrad train` keeps only its final weights, so then the run is trained again from its saved
recipe, settings and seed, the way `recipes.train` trains it (same data, model, options, batch
order), with a recorder attached.
"""

from __future__ import annotations

import io
import math

import numpy as np

from ..callbacks import Callback
from ..split import replicas

TRAJECTORY_FILE = "trajectory.npz"


class TrajectoryRecorder(Callback):
    """Keeps a copy of the flat trainable weights at the start of training, then after every
    epoch (`every=None`) or every `every` batches, and at the end if they moved since."""

    def __init__(self, every=None):
        if every is not None and (isinstance(every, bool) or int(every) != every or every < 1):
            raise ValueError(
                f"TrajectoryRecorder: every must be None or an int >= 1, got {every!r}"
            )
        self.every = every
        self.snapshots = []
        self._batches = 0

    def _take(self):
        flat = replicas.get_flat(self.model).copy()
        if not self.snapshots or not np.array_equal(self.snapshots[-1], flat):
            self.snapshots.append(flat)

    def on_train_begin(self, logs=None):
        self.snapshots, self._batches = [], 0
        self._take()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.every is not None and self._batches % self.every == 0:
            self._take()

    def on_epoch_end(self, epoch, logs=None):
        if self.every is None:
            self._take()

    def on_train_end(self, logs=None):
        self._take()  # after EarlyStopping's restore, when it comes first in the list

    @property
    def weights(self) -> np.ndarray:
        """(T, P): one row per snapshot, oldest first."""
        return np.stack(self.snapshots)

    def to_bytes(self) -> bytes:
        """The snapshots as an .npz file (arrays only; load with allow_pickle=False)."""
        buffer = io.BytesIO()
        np.savez(buffer, weights=self.weights)
        return buffer.getvalue()


def load_trajectory(path) -> np.ndarray:
    """The (T, P) weights of a trajectory .npz written by `TrajectoryRecorder.to_bytes`."""
    with np.load(path, allow_pickle=False) as npz:
        if "weights" not in npz:
            raise ValueError(f"{path}: no 'weights' array in this trajectory file")
        return np.asarray(npz["weights"])


def replay(extra: dict, verbose=1):
    """Train the recipe run described by a saved model's `extra` (recipe, settings, seed,
    quick, data options) again, as `recipes.train` does, recording its trajectory. Returns
    (the model, its (T, P) trajectory). Runs of fewer than 3 epochs are recorded about ten
    times per run instead of once per epoch, so the path has enough points for two PCA axes."""
    from .. import random as sg_random
    from .. import recipes

    name, settings, seed = extra["recipe"], dict(extra["settings"]), extra.get("seed", 0)
    recipe = recipes.get(name)
    sg_random.seed(seed)
    data, _ = recipes.load_recipe_data(
        name, recipe, extra.get("quick", False), seed, extra.get("data_options")
    )
    model = recipe.build_model(settings["learning_rate"], data)
    every = None
    if settings["epochs"] < 3:
        if hasattr(recipe, "batches"):
            try:
                per_epoch = len(recipe.batches(data, settings))
            except TypeError:  # an unsized source: guess, the recorder only thins the path
                per_epoch = 10
        else:  # the rows `fit` trains on after validation_split=0.1 takes its share
            rows = len(data.x_train) - int(len(data.x_train) * 0.1)
            per_epoch = math.ceil(rows / settings["batch_size"])
        every = max(1, per_epoch * settings["epochs"] // 10)
    recorder = TrajectoryRecorder(every)
    recipes.fit_recipe(recipe, model, data, settings, seed, verbose=verbose, callbacks=[recorder])
    return model, recorder.weights
