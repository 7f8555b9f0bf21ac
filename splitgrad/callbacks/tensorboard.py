"""The TensorBoard callback: what `fit` logs, written as event files that TensorBoard reads.

The event files themselves (protobufs, record framing, histograms, the graph) are made in
splitgrad/tensorboard/; this file only decides what to write and when, as Keras's callback does.
"""

from __future__ import annotations

import numbers
import os
import time

from .. import tensorboard as tb
from .. import validate as check
from .base import Callback

# Keras arguments for features splitgrad does not have; accepted at their "off" values only,
# so that a Keras program that spells them out still runs.
_UNSUPPORTED = {
    "write_images": "weights drawn as images",
    "profile_batch": "the profiler",
    "embeddings_freq": "the embedding projector",
    "embeddings_metadata": "the embedding projector",
}


class TensorBoard(Callback):
    """Write scalars, weight histograms and the model graph for TensorBoard (Keras's callback:
    its arguments and its tag names).

    Under `log_dir/train`:
      * `epoch_<name>` at step = epoch for every log that is not val_* (loss, metrics) and
        `epoch_learning_rate` (logs["learning_rate"] when a learning-rate callback before this
        one put it there, else the optimizer's rate at the epoch's end);
      * with update_freq="batch" or N: `batch_<name>` every N batches, at step = batches trained
        so far by this callback's fits (1, 2, ...); the batch logs are the epoch's running means;
      * with histogram_freq=k > 0: `<layer>/<weight>/histogram` for every weight, every k-th
        epoch (epochs 0, k, 2k, ...);
      * with write_graph (the default): the model graph, one node per layer (Graphs tab);
      * with write_steps_per_second: `epoch_steps_per_second`, `batch_steps_per_second`.

    Under `log_dir/validation` (when there is validation data): `epoch_<name>` for every
    val_<name>, and `evaluation_<name>_vs_iterations` at step = the optimizer's steps.

    Then: `tensorboard --logdir log_dir`. Needs the tensorboard extra
    (pip install 'splitgrad[tensorboard]'); the constructor says so if it is missing.
    """

    def __init__(
        self,
        log_dir="logs",
        histogram_freq=0,
        write_graph=True,
        write_images=False,
        write_steps_per_second=False,
        update_freq="epoch",
        profile_batch=0,
        embeddings_freq=0,
        embeddings_metadata=None,
    ):
        tb.require()  # fail here, with the install line, rather than after the first epoch
        given = {
            "write_images": write_images,
            "profile_batch": profile_batch,
            "embeddings_freq": embeddings_freq,
            "embeddings_metadata": embeddings_metadata,
        }
        for arg, value in given.items():
            if value:
                raise ValueError(
                    f"TensorBoard: {arg}={value!r} asks for {_UNSUPPORTED[arg]}, which "
                    f"splitgrad's TensorBoard callback does not write; leave {arg} unset."
                )
        if update_freq == "batch":
            update_freq = 1
        elif update_freq != "epoch":
            try:
                update_freq = check.positive_int(update_freq, "TensorBoard: update_freq")
            except ValueError:
                raise ValueError(
                    "TensorBoard: update_freq must be 'epoch', 'batch' or a positive number of "
                    f"batches, got {update_freq!r}"
                ) from None
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = check.non_negative_int(histogram_freq, "TensorBoard: histogram_freq")
        self.write_graph = bool(write_graph)
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = update_freq
        self.global_batch = 0
        self._writers = {}

    # ----- writers ------------------------------------------------------------------------
    def _writer(self, run):
        """The event writer of log_dir/<run> ("train" or "validation"), opened when first used
        so that a fit without validation data makes no validation folder."""
        if run not in self._writers:
            from ..tensorboard.events import EventWriter

            self._writers[run] = EventWriter(os.path.join(self.log_dir, run))
        return self._writers[run]

    def _close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    # ----- hooks --------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._close()  # a previous fit that raised left its files open
        self._writer("train")
        self._graph_pending = self.write_graph

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start, self._epoch_batches = time.perf_counter(), 0

    def on_train_batch_begin(self, batch, logs=None):
        self.global_batch += 1
        self._epoch_batches += 1
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._graph_pending:  # after the first step: every layer is built by now
            from ..tensorboard.graph import graph_def

            self._writer("train").graph(graph_def(self.model))
            self._graph_pending = False
        scalars = {}
        if self.write_steps_per_second:
            scalars["steps_per_second"] = 1.0 / max(time.perf_counter() - self._batch_start, 1e-9)
        if self.update_freq != "epoch" and self.global_batch % self.update_freq == 0:
            scalars.update(_numbers(logs))
        for name, value in scalars.items():
            self._writer("train").scalar(f"batch_{name}", value, self.global_batch)

    def on_epoch_end(self, epoch, logs=None):
        logs = _numbers(logs)
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        optimizer = getattr(self.model, "optimizer", None)
        if "learning_rate" not in train and optimizer is not None:
            train["learning_rate"] = float(optimizer.learning_rate)
        if self.write_steps_per_second:
            seconds = max(time.perf_counter() - self._epoch_start, 1e-9)
            train["steps_per_second"] = self._epoch_batches / seconds
        writer = self._writer("train")
        for name, value in train.items():
            writer.scalar(f"epoch_{name}", value, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            from ..tensorboard.graph import weight_tags

            for tag, weight in weight_tags(self.model).items():
                writer.histogram(f"{tag}/histogram", weight.data, epoch)
        writer.flush()
        if val:
            writer = self._writer("validation")
            for name, value in val.items():
                writer.scalar(f"epoch_{name}", value, epoch)
            if optimizer is not None:
                for name, value in val.items():
                    writer.scalar(f"evaluation_{name}_vs_iterations", value, optimizer.iterations)
            writer.flush()

    def on_train_end(self, logs=None):
        self._close()


def _numbers(logs) -> dict:
    """The entries of `logs` that are real numbers (TensorBoard scalars), as floats."""
    return {
        k: float(v)
        for k, v in (logs or {}).items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }
