"""#14 Checkpoint / resume: move a run to another place (or machine, or process) mid-training.

The whole state crosses once: weights, optimizer state (moments, step counts, schedule
position), every RNG state and the data position (global step; the batch order depends only on
(seed, epoch), data.batch_order). With a `directory` it goes through splitgrad's one checkpoint
format (splitgrad/checkpoint/: safetensors + JSON under a manifest of checksums, replaced
atomically) and is read back from there at the new place. 2n steps straight = n steps, save,
new process, n more (bitwise): `resume(model, x, y, directory)` continues a run saved with
`stop_after_save=True`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import checkpoint
from .. import random as sg_random
from . import host as host_ops
from . import replicas
from .base import Way
from .places import Inline

POSITION = "split_position"  # the key of the data position in the checkpoint's extra dict


# ----- place side ------------------------------------------------------------------------------
def train(host, key, index, step):
    """Place op: one ordinary training step (one place, nothing crosses); returns the loss."""
    slot = host.slots[key]
    loss = replicas.train_step(slot.model, slot.x[index], slot.y[index])
    slot.step = step
    return loss


def export(host, key):
    return replicas.export_state(host.slots[key].model)


def install(host, key, state):
    replicas.import_state(host.slots[key].model, state)


# ----- driver side -----------------------------------------------------------------------------
class CheckpointResume(Way):
    """Train at `places[0]` for `move_at` steps, checkpoint, continue at `places[1]`.

    `stop_after_save=True` ends `fit` right after the checkpoint (to resume in a new process
    with `resume`). The state crosses once (counted as kind 'state').
    """

    name = "checkpoint-resume"
    number, cut, crosses = 14, "time, across machines", "the whole state once"
    formula = "P + optimizer state"
    checks = "2n straight = n, save, new process, n more (bitwise)"
    options: ClassVar[dict] = {"move_at": 1, "directory": None}
    equivalent = True
    note = "the whole state (weights, optimizer, RNGs, data position) moves: bitwise"

    def __init__(
        self,
        move_at: int | None = None,
        directory=None,
        places=None,
        stop_after_save: bool = False,
        start_step: int = 0,
    ):
        places = list(places) if isinstance(places, (list, tuple)) else [places or Inline()]
        super().__init__(places[0])
        self.targets = places if len(places) > 1 else places * 2
        self.move_at, self.directory = move_at, directory
        self.stop_after_save = stop_after_save
        self.start_step = int(start_step)

    @classmethod
    def from_options(cls, n, options, places=None):
        return cls(places=places, **cls.with_defaults(options))  # one place at a time

    def setup(self, run):
        self._moved = False
        self.places = run.places = self.targets[0]
        self.places.reset()
        self._install(run, run.spec())
        run.step = self.start_step

    def _install(self, run, spec):
        run.places, run._x_ref, run._y_ref = self.places, None, None
        x_ref, y_ref = run.data_refs()
        # One replica: it continues the driver's random stream (dropout) wherever it runs.
        stream = spec.get("stream") or sg_random.get_state()
        self.places.gather(
            [
                self.places.submit(
                    0, host_ops.setup, "run", self.places.put(spec), x_ref, y_ref, None, stream
                )
            ]
        )

    def batches(self, run, epoch):
        plan = run.source.indices(epoch)
        first = epoch * len(plan)
        # Steps done before the move (a resumed run) are skipped; the step number rides along.
        return [(first + i, index) for i, index in enumerate(plan) if first + i >= run.step]

    def examples(self, batch):
        return len(batch[1])

    def step(self, run, step, batch):
        step, index = batch
        if self.move_at is not None and step == self.move_at and not self._moved:
            self._move(run, step // len(run.source))
            if self.stop_after_save:
                run.model.stop_training = True
                return None  # no step taken: the run continues in `resume`
        return run.gather([self.places.submit(0, train, "run", index, step)], ["place"])[0]

    def _move(self, run, epoch):
        state = run.gather([self.places.submit(0, export, "run")], ["place"])[0]
        run.traffic.record("state", "place0", "place1", payload=state)
        self._moved = True
        if self.directory is not None:
            # Through the one checkpoint format: the driver's model takes the state, is saved,
            # and the state the next place gets is what was read back from the files.
            replicas.import_state(run.model, state)
            position = {
                "step": run.step,
                "epoch": epoch,
                "epochs": run.epochs,
                "batch_size": run.batch_size,
                "shuffle": run.source.shuffle,
                "seed": int(run.seed),
            }
            checkpoint.save_model(run.model, self.directory, extra={POSITION: position})
            checkpoint.restore(run.model, self.directory)
            state = replicas.export_state(run.model)
        if self.stop_after_save:
            self.finish(run)
            return
        spec = run.gather([self.places.submit(0, host_ops.get_model, "run")], ["place"])[0]
        self.places = self.targets[1]
        self.places.reset()
        self._install(run, spec)
        self.places.gather([self.places.submit(0, install, "run", state)])

    def finish(self, run):
        replicas.adopt(
            run.model, self.places.gather([self.places.submit(0, host_ops.get_model, "run")])[0]
        )

    def textbook_bytes(self, n_params, steps, itemsize=4):
        # One move carries the weights plus the optimizer's per-parameter state; the measured
        # figure is exact, the textbook one depends on the optimizer, so none is claimed here.
        return None


def resume(model, x, y, directory, places=None, verbose=0, callbacks=None):
    """Continue to its end a run saved by `CheckpointResume(..., directory,
    stop_after_save=True)`.

    `model` must be compiled like the original (e.g. by the same script); its weights,
    optimizer state and RNGs are replaced by the checkpoint's (checkpoint.restore).
    """
    model.build_from_sample(np.asarray(x)[:1])
    position = checkpoint.restore(model, directory).get(POSITION)
    if position is None:
        raise checkpoint.CheckpointError(
            f"{directory}: not saved by CheckpointResume (no data position "
            "in it); load it with splitgrad.load_model instead"
        )
    way = CheckpointResume(None, places=places, start_step=position["step"])
    return model.fit(
        x,
        y,
        batch_size=position["batch_size"],
        epochs=position["epochs"],
        shuffle=position["shuffle"],
        seed=position["seed"],
        verbose=verbose,
        callbacks=callbacks,
        way=way,
        initial_epoch=position["epoch"],
    )
