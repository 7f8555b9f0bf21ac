"""The progress output of `fit`: a tqdm bar per epoch (verbose=1) or one line per epoch
(verbose=2), with the running loss and metrics."""

from __future__ import annotations

from .base import Callback


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
