"""Callbacks: hooks that `fit` calls at the start and end of training, epochs and batches.

History (always on), ProgressBar (tqdm, on by default), EarlyStopping (Keras semantics),
ModelCheckpoint, CSVLogger, TerminateOnNaN, LearningRateScheduler and LambdaCallback.
"""

from __future__ import annotations

import csv
import math
import os
import warnings

import numpy as np


class Callback:
    """Base class: override any of the on_* hooks. `self.model` is set by fit."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...


class CallbackList(Callback):
    """Calls the same hook on every callback, in order. A callback need not subclass
    `Callback`: hooks it lacks are skipped, and it gets `.model` if it has no `set_model`."""

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if hasattr(cb, "set_model"):
                cb.set_model(model)
            else:
                cb.model = model

    def __getattribute__(self, name):
        if name.startswith("on_"):

            def call_all(*args, **kwargs):
                for cb in object.__getattribute__(self, "callbacks"):
                    hook = getattr(cb, name, None)
                    if hook is not None:
                        hook(*args, **kwargs)

            return call_all
        return object.__getattribute__(self, name)


class History(Callback):
    """Records every epoch's logs: `.history["loss"]`, `.history["val_loss"]`, ..., `.epoch`."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.traffic = None  # filled by a way that splits training across places

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


def _format_logs(logs):
    return {k: f"{v:.4g}" for k, v in logs.items() if isinstance(v, (int, float))}


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and metrics (verbose=1), or one line per
    epoch (verbose=2). `label` names the epoch ("Round" for federated learning)."""

    def __init__(self, verbose=1, steps=None, epochs=None, label="Epoch"):
        self.verbose, self.steps, self.epochs, self.label = verbose, steps, epochs, label
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.steps,
                desc=f"{self.label} {epoch + 1}/{self.epochs}",
                unit="batch",
                leave=True,
                dynamic_ncols=True,
            )

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0 or batch + 1 == self.steps:
                self.bar.set_postfix(_format_logs(logs or {}), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        text = " - ".join(f"{k}: {v}" for k, v in _format_logs(logs or {}).items())
        if self.bar is not None:
            self.bar.set_postfix(_format_logs(logs or {}))
            self.bar.close()
            self.bar = None
        elif self.verbose == 2:
            print(f"{self.label} {epoch + 1}/{self.epochs} - {text}", flush=True)


def _monitor_mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or "auc" in monitor) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs (Keras semantics).

    Improvement (min mode): current < best − min_delta (max mode: current > best + min_delta).
    With restore_best_weights, the weights of the best epoch are restored at the end.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0.0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.mode = _monitor_mode(monitor, mode)
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch

    def _is_improvement(self, value, reference):
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(
                f"EarlyStopping: metric {self.monitor!r} is not in the logs "
                f"({sorted(logs or {})}); pass validation data or change monitor",
                stacklevel=2,
            )
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring the weights from the best epoch: {self.best_epoch + 1}")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (model.save) at the end of every epoch, or only when `monitor` improves.

    `filepath` may contain `{epoch}` and log names, e.g. "run/ckpt-{epoch:02d}".
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", verbose=0):
        self.filepath = str(filepath)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _monitor_mode(monitor, mode)
        self.verbose = verbose
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: {self.monitor!r} not in logs", stacklevel=2)
                return
            better = self.best is None or (
                current < self.best if self.mode == "min" else current > self.best
            )
            if not better:
                return
            self.best = current
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved model to {path}")


class CSVLogger(Callback):
    """Append one row per epoch (epoch, then every log value) to a CSV file."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = str(filename), separator, append
        self.keys = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename)
        self.file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self.writer = csv.writer(self.file, delimiter=self.separator)
        self.header_written = exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if not self.header_written:
            self.writer.writerow(["epoch", *self.keys])
            self.header_written = True
        self.writer.writerow([epoch, *(logs.get(k, "") for k in self.keys)])
        self.file.flush()

    def on_train_end(self, logs=None):
        self.file.close()


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch start: lr = schedule(epoch, lr)."""

    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(self.schedule(epoch, float(np.asarray(opt.learning_rate))))
        opt.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {lr:.4g}")


class LambdaCallback(Callback):
    """A callback from plain functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    def __init__(self, **hooks):
        for name, fn in hooks.items():
            if not name.startswith("on_"):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)
