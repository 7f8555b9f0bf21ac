"""Callbacks that set the optimizer's learning rate between epochs: LearningRateScheduler (a
function of the epoch) and ReduceLROnPlateau (divide it when a monitored quantity stalls).

Both write the rate the epoch trained with into the epoch's logs as "learning_rate" (Keras 3's
key), so History, CSVLogger and TensorBoard after them record it. Both need a float rate: an
optimizer built with a schedule (`Adam(CosineDecay(...))`) already sets its rate at every step,
and a callback overwriting it would silently drop the schedule, so they refuse it (as Keras does).
"""

from __future__ import annotations

import math
import numbers
import warnings

from .. import validate as check
from .base import Callback, monitor_mode


def learning_rate(model) -> float:
    """The rate the model's optimizer takes its next step with."""
    return float(model.optimizer.learning_rate)


def settable_optimizer(model, who):
    """The model's optimizer, after checking that its learning rate is a float that a callback
    may change (not a schedule, and there is an optimizer at all)."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        raise RuntimeError(
            f"{who}: the model has no optimizer; call model.compile(optimizer=..., loss=...) "
            "before fit."
        )
    rate = opt.get_config().get("learning_rate")
    if isinstance(rate, dict):  # get_config stores a schedule as its serialised dict
        raise TypeError(
            f"{who}: the optimizer's learning rate is a schedule "
            f"({rate.get('class_name', 'a LearningRateSchedule')}), which sets the rate at every "
            f"step; {who} would overwrite it. Give the optimizer a float learning_rate to use "
            f"{who}, or keep the schedule and drop the callback."
        )
    return opt


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch start: lr = schedule(epoch, lr)."""

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(
                f"LearningRateScheduler: schedule must be a function (epoch, lr) -> lr, got "
                f"{type(schedule).__name__}"
            )
        self.schedule, self.verbose = schedule, verbose

    def on_train_begin(self, logs=None):
        settable_optimizer(self.model, "LearningRateScheduler")

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch, learning_rate(self.model))
        if not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
            raise ValueError(
                f"LearningRateScheduler: the schedule returned {lr!r} for epoch {epoch}; it must "
                "return a finite number >= 0."
            )
        self.model.optimizer.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {float(lr):.4g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = learning_rate(self.model)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` once `monitor` has not improved for `patience`
    epochs (Keras semantics and defaults).

    Improvement (min mode): current < best − min_delta; max mode: current > best + min_delta
    (an absolute threshold, torch's threshold_mode="abs"). At each epoch end:

    1. logs["learning_rate"] = the rate this epoch trained with;
    2. if cooling down: cooldown_counter −= 1, wait = 0;
    3. if improved: best = current, wait = 0; else, unless still cooling down, wait += 1, and
       when wait ≥ patience and lr > min_lr: lr ← max(lr · factor, min_lr),
       cooldown_counter = cooldown, wait = 0.

    As in Keras, the epoch that ends the cooldown already counts towards patience, so
    `cooldown=c` leaves c − 1 epochs out (and cooldown=1 acts as 0). Hence
    torch.optim.lr_scheduler.ReduceLROnPlateau(threshold_mode="abs", threshold=min_delta,
    patience=patience − 1, cooldown=max(cooldown − 1, 0)) follows the same rates.
    `best` and the counters start afresh at each `fit` (on_train_begin).
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        if not isinstance(factor, numbers.Real) or not 0 < factor < 1:
            raise ValueError(
                f"ReduceLROnPlateau: factor must be in (0, 1) (new_lr = lr * factor), got "
                f"{factor!r}"
            )
        if not isinstance(min_lr, numbers.Real) or not (math.isfinite(min_lr) and min_lr >= 0):
            raise ValueError(f"ReduceLROnPlateau: min_lr must be a number >= 0, got {min_lr!r}")
        if not isinstance(min_delta, numbers.Real) or not math.isfinite(min_delta):
            raise ValueError(f"ReduceLROnPlateau: min_delta must be a number, got {min_delta!r}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = check.non_negative_int(patience, "ReduceLROnPlateau: patience")
        self.verbose = verbose
        self.mode = monitor_mode(monitor, mode, "ReduceLROnPlateau")
        self.min_delta = abs(float(min_delta))
        self.cooldown = check.non_negative_int(cooldown, "ReduceLROnPlateau: cooldown")
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _is_improvement(self, current):
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        settable_optimizer(self.model, "ReduceLROnPlateau")
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        logs["learning_rate"] = learning_rate(self.model)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"ReduceLROnPlateau: metric {self.monitor!r} is not in the logs "
                f"({sorted(logs)}); pass validation data or change monitor",
                stacklevel=2,
            )
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current):
            self.best, self.wait = current, 0
            return
        if self.in_cooldown():
            return
        self.wait += 1
        old = learning_rate(self.model)
        if self.wait >= self.patience and old > self.min_lr:
            new = max(old * self.factor, self.min_lr)
            self.model.optimizer.learning_rate = new
            self.cooldown_counter, self.wait = self.cooldown, 0
            if self.verbose:
                print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:.4g}.")
