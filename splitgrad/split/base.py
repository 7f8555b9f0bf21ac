"""The `Way` base class: the fit loop every way shares (batches, epochs, callbacks, History).

A way decides which steps of training run at which place. Subclasses implement `_setup(run)`
(install replicas on the places), `_step(run, step, index)` (one global batch) or override
`_train(run)`, and `textbook_bytes(...)` (the formula the measured traffic is set against).
"""

from __future__ import annotations

import time

import numpy as np

from .. import random as sg_random
from . import tools
from .accounting import Traffic
from .places import Inline, PlaceFailure


class _History:
    """Stand-in for splitgrad.callbacks.History: `.history` (dict of lists) and `.epoch`."""

    def __init__(self):
        self.history, self.epoch = {}, []


def new_history():
    try:
        from ..callbacks import History
    except ImportError:
        return _History()
    history = History()
    if not hasattr(history, "history"):
        history.history = {}
    if not hasattr(history, "epoch"):
        history.epoch = []
    return history


def batch_plan(n: int, batch_size: int, epoch: int, shuffle: bool, seed) -> list:
    """Index arrays of one epoch's batches; the order depends only on (seed, epoch)."""
    order = np.arange(n)
    if shuffle:
        order = np.random.default_rng([0 if seed is None else int(seed), epoch]).permutation(n)
    return [order[lo:lo + batch_size] for lo in range(0, n, batch_size)]


class Run:
    """Everything one `fit` call needs: the model, data refs, places, traffic and counters."""

    def __init__(self, way, model, x, y, batch_size, epochs, shuffle, seed, callbacks,
                 keep_payloads):
        self.way, self.model, self.places = way, model, way.places
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.batch_size, self.epochs = int(batch_size or 32), int(epochs)
        self.shuffle, self.seed = shuffle, seed
        self._noise_seed = None if seed is None else int(seed)
        self.callbacks = list(callbacks or [])
        self.traffic = Traffic(way.name, keep_payloads=keep_payloads)
        self.step = 0  # completed global steps
        self.n_params = tools.count(model)
        self.itemsize = tools.flat_dtype(model).itemsize
        self._x_ref = self._y_ref = None

    @property
    def noise_seed(self) -> int:
        """Seeds the replicas' dropout streams (`tools.noise_key`). Without a run seed it is
        drawn once from the default generator, so `splitgrad.seed(n)` still makes the run
        reproducible; drawn lazily, so ways that never ask leave that stream untouched."""
        if self._noise_seed is None:
            self._noise_seed = int(sg_random.get_rng().integers(2**31))
        return self._noise_seed

    def data_refs(self):
        """The training arrays as place-shareable objects (one Ray object each, put once)."""
        if self._x_ref is None:
            self._x_ref, self._y_ref = self.places.put(self.x), self.places.put(self.y)
        return self._x_ref, self._y_ref

    def gather(self, pendings, names):
        """Values of pendings; busy seconds go to the named places."""
        values = self.places.gather(pendings)
        for name, busy in zip(names, self.places.busy(pendings)):
            self.traffic.busy(name, busy)
        return values

    def callback(self, hook, *args):
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)


class Way:
    """Base of every way: `fit(model, x, y, ...) -> History` with `history.traffic` filled in."""

    name = "way"
    keep_payloads = False
    max_recoveries = 3

    def __init__(self, places=None):
        self.places = places if places is not None else Inline()

    def _slots(self):
        """(place, replica key) of each of `self.workers` replicas, spread over the places."""
        return [(self.places.host_of(r), f"w{r}") for r in range(self.workers)]

    # ----- the shared loop --------------------------------------------------------------------
    def fit(self, model, x, y, batch_size=32, epochs=1, validation_data=None, callbacks=None,
            verbose=0, shuffle=True, seed=None, **_ignored):
        if hasattr(model, "build_from_sample"):
            model.build_from_sample(np.asarray(x))
        model._split_sample = np.array(np.asarray(x)[:1])
        run = Run(self, model, x, y, batch_size, epochs, shuffle, seed, callbacks,
                  self.keep_payloads)
        history = new_history()
        for cb in run.callbacks:
            if hasattr(cb, "set_model"):
                cb.set_model(model)
        model.stop_training = False
        run.callback("on_train_begin", {})
        self.places.reset()
        self._setup(run)
        for epoch in range(run.epochs):
            run.callback("on_epoch_begin", epoch, {})
            start = time.perf_counter()
            logs = self._epoch(run, epoch)
            self._finish(run)
            if validation_data is not None and hasattr(model, "evaluate"):
                vx, vy = validation_data[:2]
                values = model.evaluate(vx, vy, batch_size=run.batch_size, verbose=0)
                values = values if isinstance(values, (list, tuple)) else [values]
                logs["val_loss"] = float(values[0])
            for key, value in logs.items():
                history.history.setdefault(key, []).append(value)
            history.epoch.append(epoch)
            if verbose:
                print(f"epoch {epoch + 1}/{run.epochs} [{self.name}] "
                      + " ".join(f"{k}={v:.4g}" for k, v in logs.items())
                      + f" ({time.perf_counter() - start:.2f} s)")
            run.callback("on_epoch_end", epoch, logs)
            if getattr(model, "stop_training", False):
                break
        run.traffic.textbook = self.textbook_bytes(run.n_params, run.step, run.itemsize)
        run.traffic.extra["steps"] = run.step
        run.traffic.extra.update(self._report(run))
        run.traffic.stop()
        history.traffic = run.traffic.report()
        history.traffic_log = run.traffic
        run.callback("on_train_end", {})
        if verbose:
            print(run.traffic.summary())
        return history

    def _epoch(self, run, epoch) -> dict:
        losses, sizes = [], []
        for index in batch_plan(len(run.x), run.batch_size, epoch, run.shuffle, run.seed):
            loss = self._guarded_step(run, run.step, index)
            run.step += 1
            losses.append(loss)
            sizes.append(len(index))
            run.callback("on_train_batch_end", run.step - 1, {"loss": loss})
        return {"loss": float(np.average(losses, weights=sizes))}

    def _guarded_step(self, run, step, index):
        """Run a step; when a place dies, restore it from the last completed step and retry."""
        for attempt in range(self.max_recoveries + 1):
            try:
                return self._step(run, step, index)
            except PlaceFailure as failure:
                if attempt == self.max_recoveries:
                    raise
                done = self._recover(run, failure.hosts, step)
                run.traffic.extra.setdefault("recoveries", []).append(
                    {"step": step, "places": failure.hosts, "step_already_done": done})
                if done:
                    return float("nan")
        raise AssertionError("unreachable")

    # ----- what subclasses provide ------------------------------------------------------------
    def _setup(self, run):
        raise NotImplementedError

    def _step(self, run, step, index) -> float:
        raise NotImplementedError

    def _recover(self, run, hosts, step) -> bool:
        """Restore dead places; return True when `step` had already completed everywhere."""
        raise PlaceFailure(hosts, "this way cannot recover from a dead place")

    def _finish(self, run):
        """Copy the trained state back into the driver's model (end of each epoch)."""

    def _report(self, run) -> dict:
        return {}

    def textbook_bytes(self, n_params: int, steps: int, itemsize: int = 4):
        return None

    def describe(self) -> str:
        return f"{self.name} on {self.places.describe()}"
