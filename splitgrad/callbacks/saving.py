"""Callbacks that write files as training goes: ModelCheckpoint (the model, every epoch or when
it improves) and CSVLogger (one row of logs per epoch)."""

from __future__ import annotations

import csv
import os
import warnings

from .. import validate as check
from .base import Callback, monitor_mode


class ModelCheckpoint(Callback):
    """Save the model (`model.save`, or `model.save_weights` with save_weights_only) at the end
    of every epoch, or every `save_freq` batches; with save_best_only, only when `monitor`
    improves on the best so far (strictly; `initial_value_threshold` is the first "best").

    `filepath` may contain `{epoch}` (1-based), `{batch}` (1-based, with an integer save_freq)
    and log names, e.g. "run/ckpt-{epoch:02d}-{val_loss:.3f}". Keras's arguments and defaults.
    """

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        if save_freq != "epoch":
            try:
                save_freq = check.positive_int(save_freq, "ModelCheckpoint: save_freq")
            except ValueError:
                raise ValueError(
                    "ModelCheckpoint: save_freq must be 'epoch' or a positive number of "
                    f"batches, got {save_freq!r}"
                ) from None
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = monitor_mode(monitor, mode, type(self).__name__)
        self.save_freq = save_freq
        self.best = initial_value_threshold
        self._epoch, self._batches = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save(self._epoch, logs or {}, batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs or {})

    def _save(self, epoch, logs, batch=None):
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: {self.monitor!r} not in logs", stacklevel=3)
                return
            better = self.best is None or (
                current < self.best if self.mode == "min" else current > self.best
            )
            if not better:
                return
            self.best = current
        fields = {**logs, "epoch": epoch + 1}
        if batch is not None:
            fields["batch"] = batch
        path = self.filepath.format(**fields)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
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
