"""The one training loop: epochs of batches from a batch source, each given to a step function.

    history = run(model, source, step, epochs=5, callbacks=[...], verbose=1)

`Model.fit` builds the two pieces and calls `run`; nothing else in splitgrad loops over epochs.

* A **batch source** has `batches(epoch)`, an iterable of that epoch's batches, and usually a
  length (the batches per epoch, for the progress bar): `data.ArrayBatches` over arrays x, y,
  a `data.DataLoader`, `datasets.RandomWindows` (random text windows), or any iterable of
  (x, y) pairs wrapped by `Model.fit`.
* A **step function** (`StepFunction` below) trains on one batch and returns how many examples
  it held and the batch's loss. `LocalStep` runs `model.train_step` here; each way of splitting
  training (splitgrad.split) is a step function that runs the step at its places instead.

Around them the loop does what every run needs: callbacks and History, the progress bar,
`stop_training`, validation after each epoch.
"""

from __future__ import annotations

from . import callbacks as cbks
from . import sample_weights


class StepFunction:
    """One training step per batch, driven by `run`. Override `__call__`; the rest is optional.

    `begin(epochs)` before the first epoch; `batches(source, epoch)` is what one epoch feeds to
    `__call__` (by default the source's batches); `__call__(batch) -> (examples, loss)`;
    `logs()` the running values to show besides the loss (e.g. accuracy so far this epoch);
    `label` what one epoch is called in the progress output ("Round" for federated learning);
    `end_epoch(epoch)` returns extra logs for the epoch (called before validation, so a way
    brings its weights home first); `end(history)` after the last epoch.
    """

    label = "Epoch"

    def begin(self, epochs):
        pass

    def batches(self, source, epoch):
        return source.batches(epoch)

    def __call__(self, batch) -> tuple[int, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def logs(self) -> dict:
        return {}

    def end_epoch(self, epoch) -> dict:
        return {}

    def end(self, history):
        pass


class LocalStep(StepFunction):
    """`model.train_step(x, y)` on each (x, y) batch, in this process; the model's metrics
    accumulate over the epoch (reset at its start)."""

    def __init__(self, model):
        self.model = model

    def batches(self, source, epoch):
        for m in self.model.metrics:
            m.reset()
        return source.batches(epoch)

    def __call__(self, batch):
        xb, yb, *weights = batch  # a source may yield (x, y, sample_weight), as in Keras
        if weights and weights[0] is not None:
            yb = sample_weights.weigh(yb, None, weights[0], "fit")
        return len(xb), self.model.train_step(xb, yb)["loss"]

    def logs(self):
        return {m.name: m.result() for m in self.model.metrics}


def run(
    model,
    source,
    step: StepFunction,
    epochs: int,
    initial_epoch: int = 0,
    callbacks=None,
    verbose: int = 1,
    validation=None,
    validation_batch_size: int = 32,
):
    """Train for epochs [initial_epoch, epochs); returns the History (also `model.history`).

    `validation` = (x, y) is evaluated after each epoch into val_* logs.
    """
    try:
        steps = len(source)
    except TypeError:
        steps = None  # an unsized source: the bar counts without a total
    history = cbks.History()
    progress = [cbks.ProgressBar(verbose, steps, epochs, step.label)] if verbose else []
    # History and the progress output last, as in Keras: they see what callbacks add to the
    # logs (ReduceLROnPlateau's learning_rate).
    cb = cbks.CallbackList([*(callbacks or []), history, *progress], model)
    model.stop_training = False
    model.history = history
    cb.on_train_begin()
    step.begin(epochs)
    for epoch in range(initial_epoch, epochs):
        batches = step.batches(source, epoch)
        if progress and hasattr(batches, "__len__"):  # e.g. one round per epoch (federated)
            progress[0].steps = len(batches)
        cb.on_epoch_begin(epoch)
        total, count = 0.0, 0
        for i, batch in enumerate(batches):
            cb.on_train_batch_begin(i)
            size, loss = step(batch)
            total, count = total + loss * size, count + size
            cb.on_train_batch_end(i, {"loss": total / max(count, 1), **step.logs()})
            if model.stop_training:
                break
        logs = {"loss": total / count if count else float("nan"), **step.logs()}
        logs.update(step.end_epoch(epoch))
        if validation is not None:
            vals = model.evaluate(*validation, batch_size=validation_batch_size, return_dict=True)
            logs.update({f"val_{k}": v for k, v in vals.items()})
        cb.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    step.end(history)
    cb.on_train_end()
    return history
