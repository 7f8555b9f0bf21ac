"""Model and Sequential: layers that can be compiled, trained, evaluated, saved and loaded.

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=5, validation_split=0.1)

One training step (`train_step`) is: zero the gradients, forward, loss (+ regularizers),
backward, optimizer update. `fit` turns its data into a batch source and runs the one training
loop (training.py) with a step function: `train_step` here, or, with `way=...`, the step of a
way of splitting training across places (splitgrad.split), which runs it at its places.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import numpy as np

from . import metrics as metrics_mod
from . import training
from . import validate as check
from ._kernels.thread_team import own_threads
from .data import ArrayBatches, DataLoader
from .layers.layer import Layer, layer_class, register
from .random import get_rng
from .tensor import Tensor, no_grad

_BLAS_THREADS = contextlib.nullcontext()  # the policy of models without recurrent layers


def _check_pair(x, y):
    if y is not None and len(x) != len(y):
        raise ValueError(
            f"x and y must have the same number of samples, got {len(x)} inputs and "
            f"{len(y)} targets"
        )


def _first_inputs(source):
    """(the source, unchanged in what it will yield, and the inputs of its first batch), to
    build the model from: a DataLoader and a list are looked into, a generator's first batch
    is put back in front, a batch source's first epoch is started (RandomWindows draws)."""
    if isinstance(source, DataLoader):
        return source, source.dataset.x[:1]
    if isinstance(source, Iterator):
        first = next(source, None)
        if first is None:
            raise ValueError("fit: the batch source gave no batches")
        return itertools.chain([first], source), first[0]
    if isinstance(source, (list, tuple)):
        return source, source[0][0]
    first = next(iter(source.batches(0)), None)
    if first is None:
        raise ValueError("fit: the batch source gave no batches")
    return source, first[0]


class _Iterated:
    """A batch source over any iterable of (x, y) batches (a DataLoader, a list): one pass per
    epoch."""

    def __init__(self, iterable):
        self.iterable = iterable
        self.batch_size = getattr(iterable, "batch_size", 32)

    def __len__(self):
        return len(self.iterable)  # TypeError for a generator: the progress bar has no total

    def batches(self, epoch):
        count = 0
        for batch in self.iterable:
            count += 1
            yield batch
        if not count:
            raise ValueError(
                f"fit: the batch source gave no batches in epoch {epoch + 1}; a "
                "generator is used up after one pass: pass a DataLoader or a "
                "list of batches to train for several epochs"
            )


class Model(Layer):
    """A layer that can be trained. Subclass it and write `call(x)`, or use `Sequential`."""

    def __init__(self, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.stop_training = False
        self._thread_policy = None

    def __call__(self, x, *args, **kwargs):
        if self.threads() is _BLAS_THREADS:  # most models: no context to enter (per-call cost)
            return super().__call__(x, *args, **kwargs)
        with self._thread_policy:
            return super().__call__(x, *args, **kwargs)

    def threads(self):
        """The context this model's passes run in: splitgrad's own thread team when a layer
        inside `wants_own_threads` (the recurrent ones), else nothing (the BLAS threads).
        Decided once, at the first call; see _kernels/thread_team.py."""
        if self._thread_policy is None:
            stack, wanted = [self], False
            while stack and not wanted:
                layer = stack.pop()
                wanted = layer.wants_own_threads
                stack.extend(child for _, child in layer.sublayers())
            self._thread_policy = own_threads if wanted else _BLAS_THREADS
        return self._thread_policy

    # ----- setup ------------------------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None):
        """Choose the optimizer, the loss and the metrics reported during training."""
        from . import losses as losses_mod
        from . import optim as optim_mod

        if loss is None:
            raise ValueError(
                "compile: a loss is required, e.g. loss='mse' or "
                "loss='sparse_categorical_crossentropy'"
            )
        self.optimizer = optim_mod.get(optimizer)
        self.loss = losses_mod.get(loss)
        self.metric_specs = list(metrics or [])
        self.metrics = metrics_mod.get_list(self.metric_specs, self.loss)
        if self.built:
            self.optimizer.build(self.parameters())

    def _require_compiled(self, what):
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(f"call model.compile(optimizer, loss) before model.{what}()")

    def build_from_sample(self, x):
        """Build all layers from one sample batch (inference mode, so no RNG is consumed)."""
        if not self.built:
            was = self.training
            self.eval()
            with no_grad():
                self(x[:1])
            self.train(was)
        if self.optimizer is not None:
            # Also catches layers added after compile, which would otherwise never train.
            try:
                self.optimizer.build(self.parameters())
            except ValueError as exc:
                raise ValueError(
                    f"model {self.name!r}: its parameters changed after compile (a layer was "
                    f"added?); call compile again with a new optimizer. ({exc})"
                ) from None

    # ----- one step ---------------------------------------------------------------------
    def compute_loss(self, x, y) -> Tensor:
        """Forward in the current mode, the compiled loss, plus regularization penalties."""
        y_pred = self(x)
        loss = self.loss(y_pred, y)
        penalties = self.regularization_losses()
        for p in penalties:
            loss = loss + p
        self._last_pred = y_pred
        return loss

    def train_step(self, x, y) -> dict:
        """zero_grad → forward → loss → backward → optimizer step, on one batch.

        Returns the logs: the batch loss, and each metric's running value (metrics accumulate
        until reset; `fit` resets them each epoch). Override it for a custom step (a GAN's
        alternating updates): `fit` calls it for every batch.
        """
        if not self.training:
            self.train()
        opt = self.optimizer
        opt.zero_grad()
        with self.threads():
            loss = self.compute_loss(x, y)
            loss.backward(into=opt.grad_buffers())
        opt.step()
        logs = {"loss": float(loss.data)}
        for m in self.metrics:
            m.update(y, self._last_pred.data)
            logs[m.name] = m.result()
        return logs

    def train_on_batch(self, x, y) -> dict:
        """One `train_step` on (x, y); the metrics cover this batch only."""
        self._require_compiled("train_on_batch")
        x, y = check.numeric_array(x, "x"), check.numeric_array(y, "y")
        _check_pair(x, y)
        self.build_from_sample(x)
        for m in self.metrics:
            m.reset()
        return self.train_step(x, y)

    # ----- the loops ----------------------------------------------------------------------
    def fit(
        self,
        x=None,
        y=None,
        batch_size=32,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        initial_epoch=0,
        seed=None,
        way=None,
        validation_batch_size=None,
    ):
        """Train for `epochs` epochs; returns a History (`.history` dict, `.epoch` list).

        `x, y` are arrays, or `x` is a batch source (a `DataLoader`, `datasets.RandomWindows`,
        anything with `batches(epoch)`) or an iterable of (x, y) batches, and y is None.
        validation_split takes the LAST fraction of the data before shuffling (Keras).
        `seed` fixes the shuffling; `way` splits training across places (splitgrad.split).
        """
        self._require_compiled("fit")
        epochs = check.non_negative_int(epochs, "fit: epochs")
        initial_epoch = check.non_negative_int(initial_epoch, "fit: initial_epoch")
        verbose = 1 if verbose == "auto" else check.non_negative_int(verbose, "fit: verbose")
        source, held_out = self._batch_source(x, y, batch_size, shuffle, seed, validation_split)
        if validation_data is None:
            validation_data = held_out
        if validation_data is not None:
            validation_data = tuple(validation_data)[:2]
        if way is not None:
            step = way.step_function(self, source)
        else:
            step = training.LocalStep(self)
        return training.run(
            self,
            source,
            step,
            epochs,
            initial_epoch,
            callbacks,
            verbose,
            validation_data,
            validation_batch_size or getattr(source, "batch_size", 32),
        )

    def _batch_source(self, x, y, batch_size, shuffle, seed, validation_split):
        """(the batch source `fit` trains on, the held-out validation pair or None); the model
        is built from the first batch."""
        batch_list = isinstance(x, (list, tuple)) and x and isinstance(x[0], tuple)
        if y is None and (
            isinstance(x, (DataLoader, Iterator)) or hasattr(x, "batches") or batch_list
        ):
            if validation_split:
                raise ValueError(
                    "fit: validation_split needs arrays x and y; pass "
                    "validation_data=(x_val, y_val) with a batch source"
                )
            if not self.built:
                x, sample = _first_inputs(x)
                self.build_from_sample(check.numeric_array(sample, "x"))
            source = x if hasattr(x, "batches") else _Iterated(x)
            return source, None
        batch_size = check.positive_int(batch_size, "fit: batch_size")
        x, y = check.numeric_array(x, "x"), check.numeric_array(y, "y")
        _check_pair(x, y)
        held_out = None
        if validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(
                    f"fit: validation_split must be in (0, 1), got {validation_split!r}"
                )
            cut = int(len(x) * (1.0 - validation_split))
            x, y, held_out = x[:cut], y[:cut], (x[cut:], y[cut:])
        if len(x) == 0:
            raise ValueError("fit: no training samples (empty x, or validation_split took all)")
        self.build_from_sample(x)
        if seed is None:  # drawn from splitgrad's generator, so splitgrad.seed(n) fixes it
            seed = int(get_rng().integers(2**31))
        return ArrayBatches(x, y, batch_size, shuffle, seed), held_out

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False):
        """Loss and metrics in inference mode: [loss, *metrics] (or a dict)."""
        self._require_compiled("evaluate")
        batch_size = check.positive_int(batch_size, "evaluate: batch_size")
        x, y = check.numeric_array(x, "x"), check.numeric_array(y, "y")
        _check_pair(x, y)
        if len(x) == 0:
            raise ValueError("evaluate: no samples (empty x)")
        self.build_from_sample(x)
        was = self.training
        self.eval()
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        try:
            with no_grad():
                for i in range(0, len(x), batch_size):
                    xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                    loss = self.compute_loss(xb, yb)
                    total += float(loss.data) * len(xb)
                    count += len(xb)
                    for m in self.metrics:
                        m.update(yb, self._last_pred.data)
        finally:
            self.train(was)
        out = {"loss": total / max(count, 1), **{m.name: m.result() for m in self.metrics}}
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in out.items()))
        return out if return_dict else list(out.values())

    def predict(self, x, batch_size=32, verbose=0):
        """Outputs in inference mode, batched, as one NumPy array."""
        batch_size = check.positive_int(batch_size, "predict: batch_size")
        x = check.numeric_array(x, "x")
        was = self.training
        self.eval()
        try:
            with no_grad():
                outs = [self(x[i : i + batch_size]).data for i in range(0, len(x), batch_size)]
        finally:
            self.train(was)
        return np.concatenate(outs) if outs else np.zeros((0,))

    # ----- saving -----------------------------------------------------------------------
    def save(self, path, overwrite=False):
        """Write config JSON + safetensors weights + optimizer state to the folder `path`.

        Replacing a splitgrad checkpoint is atomic; a folder holding anything else is refused
        unless `overwrite=True` (splitgrad/checkpoint/)."""
        from .checkpoint import save_model

        save_model(self, path, overwrite=overwrite)

    def save_weights(self, path, overwrite=False):
        from .checkpoint import save_weights

        save_weights(self, path, overwrite=overwrite)

    def load_weights(self, path):
        from .checkpoint import load_weights

        load_weights(self, path)

    def summary(self, print_fn=print):
        """Print each layer's output shape and parameter count (call after the model is built)."""
        rows = [(name, type(la).__name__, la.count_params()) for name, la in self.sublayers()]
        width = max([len(r[0]) + len(r[1]) for r in rows] + [20]) + 4
        print_fn(f"Model {self.name!r}")
        for name, cls, n in rows:
            print_fn(f"  {name} ({cls})".ljust(width) + f"{n:>10,d} params")
        print_fn("  total".ljust(width) + f"{self.count_params():>10,d} params")


@register
class Sequential(Model):
    """y = layer_n(... layer_2(layer_1(x))). `Sequential([...])` or `.add(layer)`."""

    def __init__(self, layers=None, name=None, dtype=None):
        layers = list(layers or [])
        for layer in layers:
            self._check_layer(layer)
        # An explicit dtype is imposed on every layer at build time; without one, the
        # layers keep their own and inputs are converted to the first layer's dtype.
        explicit = dtype is not None
        if dtype is None:
            dtype = layers[0].dtype if layers else "float32"
        super().__init__(name=name, dtype=dtype)
        self.dtype_explicit = explicit
        self.layers = []
        for layer in layers:
            self._append(layer)

    def _append(self, layer):
        """Add a layer, renaming a default name that repeats (dense, dense_1, ...) so that
        error messages and `summary()` point at one layer."""
        taken = {la.name for la in self.layers}
        base, n = layer.name, 1
        while layer.name in taken:
            layer.name = f"{base}_{n}"
            n += 1
        self.layers = self.layers + [layer]

    @staticmethod
    def _check_layer(layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential expects Layer objects, got {type(layer).__name__}")

    def add(self, layer):
        self._check_layer(layer)
        self._append(layer)
        self.built = False
        self._thread_policy = None

    def build(self, input_shape):
        if not self.layers:
            raise ValueError("Sequential model has no layers; add some before calling it")
        if self.dtype_explicit:
            for layer in self.layers:
                layer.dtype = self.dtype

    def call(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "layers": [
                {"class": type(la).__name__, "config": la.get_config()} for la in self.layers
            ],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layers = [layer_class(c["class"]).from_config(c["config"]) for c in config.pop("layers")]
        return cls(layers=layers, **config)


def clone_model(model, sample=None):
    """A new model with the same architecture and a copy of the weights (for replicas)."""
    twin = type(model).from_config(model.get_config())
    if model.built:
        shape = model.input_shape
        sample = np.zeros((1,) + tuple(shape[1:]), dtype=model.dtype) if sample is None else sample
        twin.build_from_sample(sample)
        twin.set_weights(model.get_weights())
    return twin
