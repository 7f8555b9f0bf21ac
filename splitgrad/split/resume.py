"""#14 Checkpoint / resume: move a run to another place (or machine, or process) mid-training.

The whole state crosses once: weights, optimizer state (moments, step counts, schedule
position), every RNG state and the data position (global step; the batch order depends only on
(seed, epoch)). It is written to a checkpoint folder (arrays in .npz without pickle, the rest
in JSON) and read back at the new place. 2n steps straight = n steps, save, new process, n more
(bitwise).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import random as sg_random
from . import tools
from .base import Way, batch_plan
from .data_parallel import adopt
from .places import Inline

STATE_FILE, ARRAYS_FILE = "split_state.json", "split_arrays.npz"


def save_state(directory, state: dict, position: dict):
    """Write `state` (nested dicts/lists of arrays and JSON values) and the data position."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}

    def encode(value):
        if isinstance(value, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {"__array__": key}
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    doc = {"state": encode(state), "position": position}
    tmp = directory / (ARRAYS_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(directory / ARRAYS_FILE)
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(directory / STATE_FILE)  # written last: its presence marks a whole checkpoint


def load_state(directory):
    """(state, position) as written by `save_state`."""
    directory = Path(directory)
    doc = json.loads((directory / STATE_FILE).read_text())
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def decode(value):
        if isinstance(value, dict):
            if set(value) == {"__array__"}:
                return arrays[value["__array__"]]
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return decode(doc["state"]), doc["position"]


class CheckpointResume(Way):
    """Train at `places[0]` for `move_at` steps, checkpoint, continue at `places[1]`.

    `stop_after_save=True` ends `fit` right after the checkpoint (to resume in a new process
    with `resume`). The state crosses once (counted as kind 'state').
    """

    name = "checkpoint-resume"

    def __init__(self, move_at: int | None = None, directory=None, places=None,
                 stop_after_save: bool = False):
        places = list(places) if isinstance(places, (list, tuple)) else [places or Inline()]
        super().__init__(places[0])
        self.targets = places if len(places) > 1 else places * 2
        self.move_at, self.directory = move_at, directory
        self.stop_after_save = stop_after_save
        self._start_step, self._stop = 0, False

    def _setup(self, run):
        self.places = self.targets[0]
        self.places.reset()
        self._install(run, tools.pack(run.model))
        run.step = self._start_step

    def _install(self, run, spec):
        run.places = self.places
        run._x_ref = run._y_ref = None
        x_ref, y_ref = run.data_refs()
        # One replica: it continues the driver's random stream (dropout) wherever it runs.
        stream = spec.get("stream") or sg_random.get_state()
        self.places.gather([self.places.submit(0, "setup", "run", self.places.put(spec), x_ref,
                                               y_ref, None, False, stream)])

    def _epoch(self, run, epoch):
        plan = batch_plan(len(run.x), run.batch_size, epoch, run.shuffle, run.seed)
        first = epoch * len(plan)
        losses, sizes = [], []
        for i, index in enumerate(plan):
            step = first + i
            if step < run.step or self._stop:
                continue  # already done before the move (resume), or stopped after saving
            if self.move_at is not None and step == self.move_at and not self._moved:
                self._move(run, epoch)
                if self._stop:
                    break
            loss = run.gather([self.places.submit(0, "train", "run", [index], step)],
                              ["place"])[0][0]
            run.step = step + 1
            losses.append(loss)
            sizes.append(len(index))
            run.callback("on_train_batch_end", step, {"loss": loss})
        if self._stop:
            run.model.stop_training = True
        return {"loss": float(np.average(losses, weights=sizes)) if losses else float("nan")}

    def fit(self, model, x, y, **kwargs):
        self._moved, self._stop = False, False
        return super().fit(model, x, y, **kwargs)

    def _move(self, run, epoch):
        state = run.gather([self.places.submit(0, "export", "run")], ["place"])[0]
        run.traffic.record("state", "place0", "place1", payload=state)
        position = {"step": run.step, "epoch": epoch, "batch_size": run.batch_size,
                    "epochs": run.epochs, "shuffle": run.shuffle, "seed": run.seed}
        if self.directory is not None:
            save_state(self.directory, state, position)
            state, _ = load_state(self.directory)
        self._moved = True
        if self.stop_after_save:
            self._finish(run)
            self._stop = True
            return
        spec = run.gather([self.places.submit(0, "get_model", "run")], ["place"])[0]
        self.places = self.targets[1]
        self.places.reset()
        self._install(run, spec)
        self.places.gather([self.places.submit(0, "import", "run", state)])

    def _finish(self, run):
        adopt(run.model, self.places.gather([self.places.submit(0, "get_model", "run")])[0])

    def textbook_bytes(self, n_params, steps, itemsize=4):
        # One move carries the weights plus the optimizer's per-parameter state; the measured
        # figure is exact, the textbook one depends on the optimizer, so none is claimed here.
        return None


def resume(model, x, y, directory, places=None, verbose=0, callbacks=None):
    """Continue a run saved by `CheckpointResume(..., stop_after_save=True)` to its end.

    `model` must be built and compiled like the original (e.g. by the same script); its
    weights, optimizer state and RNGs are replaced by the checkpoint's.
    """
    state, position = load_state(directory)
    if hasattr(model, "build_from_sample"):
        model.build_from_sample(np.asarray(x))
    model._split_sample = np.array(np.asarray(x)[:1])
    tools.import_state(model, state)
    way = CheckpointResume(None, places=places)
    way._start_step = int(position["step"])
    return way.fit(model, x, y, batch_size=position["batch_size"], epochs=position["epochs"],
                   shuffle=position["shuffle"], seed=position["seed"], verbose=verbose,
                   callbacks=callbacks)
