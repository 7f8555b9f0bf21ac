"""Model and Sequential: layers that can be compiled, trained, evaluated, saved and loaded.

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=5, validation_split=0.1)

One training step (`train_step`) is: zero the gradients, forward, loss (+ regularizers),
backward, optimizer update. `fit(..., way=...)` hands the whole loop to a way of splitting
training across places (splitgrad.split).
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import callbacks as cbks
from . import metrics as metrics_mod
from ._kernels.thread_team import own_threads
from .layers.layer import Layer, layer_class, register
from .random import get_rng
from .tensor import Tensor, no_grad


def _as_input(x, name):
    """Check and convert user data to an array; NaN/inf and bad types get a clear error."""
    if isinstance(x, Tensor):
        x = x.data
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], np.ndarray):
        raise TypeError(f"{name}: expected one array, got a list of {len(x)} arrays")
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name}: could not turn the data into a numeric array (ragged rows?)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))
        raise ValueError(
            f"{name} contains {len(bad)} NaN or infinite values (first at index "
            f"{tuple(int(i) for i in bad[0])}); clean or impute the data before training"
        )
    return arr


def _check_pair(x, y):
    if y is not None and len(x) != len(y):
        raise ValueError(
            f"x and y must have the same number of samples, got {len(x)} inputs and "
            f"{len(y)} targets"
        )


def epoch_batches(n, batch_size, shuffle, seed, epoch):
    """Index arrays for one epoch. The permutation depends only on (seed, epoch), so a run
    resumed at `initial_epoch` sees exactly the batches the uninterrupted run would have."""
    if shuffle:
        rng = np.random.default_rng([seed, epoch]) if seed is not None else get_rng()
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


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
        with self.threads():
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
            self._thread_policy = own_threads if wanted else contextlib.nullcontext()
        return self._thread_policy

    # ----- setup ------------------------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None):
        """Choose the optimizer, the loss and the metrics reported during training."""
        from . import losses as losses_mod
        from . import optim as optim_mod

        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='mse' or "
                             "loss='sparse_categorical_crossentropy'")
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
        """zero_grad → forward → loss → backward → optimizer step. Returns the batch logs."""
        if not self.training:
            self.train()
        opt = self.optimizer
        opt.zero_grad()
        with self.threads():
            loss = self.compute_loss(x, y)
            loss.backward(into=opt.grad_buffers())
        opt.step()
        logs = {"loss": float(loss.data)}
        if self.metrics:
            pred = self._last_pred.data
            for m in self.metrics:
                m.reset()
                m.update(y, pred)
                logs[m.name] = m.result()
        return logs

    def train_on_batch(self, x, y) -> dict:
        self._require_compiled("train_on_batch")
        x = _as_input(x, "x")
        self.build_from_sample(x)
        return self.train_step(x, y)

    # ----- loops ------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            seed=None, way=None):
        """Train for `epochs` epochs; returns a History (`.history` dict, `.epoch` list).

        validation_split takes the LAST fraction of the data before shuffling (Keras).
        `seed` fixes the shuffling; `way` splits training across places (splitgrad.split).
        """
        self._require_compiled("fit")
        x, y = _as_input(x, "x"), _as_input(y, "y")
        _check_pair(x, y)
        if validation_data is None and validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            cut = int(len(x) * (1.0 - validation_split))
            x, y, validation_data = x[:cut], y[:cut], (x[cut:], y[cut:])
        if way is not None:
            return way.fit(self, x, y, batch_size=batch_size, epochs=epochs,
                           validation_data=validation_data, callbacks=callbacks,
                           verbose=verbose, shuffle=shuffle, seed=seed)
        if len(x) == 0:
            raise ValueError("fit: no training samples (empty x, or validation_split took all)")
        self.build_from_sample(x)
        if seed is None:
            seed = int(get_rng().integers(2**31))
        steps = -(-len(x) // batch_size)
        verbose = 1 if verbose == "auto" else int(verbose)
        history = cbks.History()
        extra = [cbks.ProgressBar(verbose, steps, epochs)] if verbose else []
        cb = cbks.CallbackList([history, *extra, *(callbacks or [])], self)
        self.stop_training = False
        self.history = history
        cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch)
            logs = self._run_epoch(x, y, batch_size, shuffle, seed, epoch, cb)
            if validation_data is not None:
                vals = self.evaluate(*validation_data, batch_size=batch_size, return_dict=True)
                logs.update({f"val_{k}": v for k, v in vals.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end()
        return history

    def _run_epoch(self, x, y, batch_size, shuffle, seed, epoch, cb):
        total, count = 0.0, 0
        for m in self.metrics:
            m.reset()
        pred_metrics = self.metrics
        self.metrics = []  # per-batch metric values are not needed: accumulate once below
        try:
            for step, idx in enumerate(epoch_batches(len(x), batch_size, shuffle, seed, epoch)):
                cb.on_train_batch_begin(step)
                xb, yb = x[idx], y[idx]
                logs = self.train_step(xb, yb)
                total += logs["loss"] * len(idx)
                count += len(idx)
                pred = self._last_pred.data
                for m in pred_metrics:
                    m.update(yb, pred)
                running = {"loss": total / count, **{m.name: m.result() for m in pred_metrics}}
                cb.on_train_batch_end(step, running)
                if self.stop_training:
                    break
        finally:
            self.metrics = pred_metrics
        return {"loss": total / max(count, 1), **{m.name: m.result() for m in pred_metrics}}

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False):
        """Loss and metrics in inference mode: [loss, *metrics] (or a dict)."""
        self._require_compiled("evaluate")
        x, y = _as_input(x, "x"), _as_input(y, "y")
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
                    xb, yb = x[i:i + batch_size], y[i:i + batch_size]
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
        x = _as_input(x, "x")
        was = self.training
        self.eval()
        try:
            with no_grad():
                outs = [self(x[i:i + batch_size]).data for i in range(0, len(x), batch_size)]
        finally:
            self.train(was)
        return np.concatenate(outs) if outs else np.zeros((0,))

    # ----- saving -----------------------------------------------------------------------
    def save(self, path):
        """Write config JSON + safetensors weights + optimizer state to the folder `path`."""
        from .checkpoint import save_model

        save_model(self, path)

    def save_weights(self, path):
        from .checkpoint import save_weights

        save_weights(self, path)

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
        return {**super().get_config(),
                "layers": [{"class": type(la).__name__, "config": la.get_config()}
                           for la in self.layers]}

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
