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

from . import functional_model as fm
from . import graph, training
from . import metrics as metrics_mod
from . import sample_weights as weights_mod
from . import validate as check
from ._kernels.thread_team import own_threads
from .data import ArrayBatches, DataLoader
from .layers import fusion
from .layers.input_layer import InputLayer
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


@register
class Model(Layer):
    """A layer that can be trained, in Keras's three ways: subclass it and write `call(x)`;
    give it the symbolic `inputs` and `outputs` of a graph of layers (the functional API,
    `Model(inputs, outputs)`, functional_model.py); or use `Sequential`."""

    _generic_config = True  # a subclass without get_config is saved by its __init__ arguments

    def __init__(self, inputs=None, outputs=None, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.stop_training = False
        self._thread_policy = None
        self._graph = None
        self._optimized = None  # the parameters the optimizer was built for
        if inputs is not None or outputs is not None:
            self._attach_graph(inputs, outputs)

    def _attach_graph(self, inputs, outputs):
        if inputs is None or outputs is None:
            raise TypeError("Model(inputs, outputs): give both the Input(s) and the output(s)")
        self._graph = fm.FunctionalGraph(inputs, outputs, self.name)
        fm.unique_names(self._graph.layers, f"Model {self.name!r}")
        self.layers = self._graph.layers
        shapes = [t.shape for t in self._graph.inputs]
        self.input_shape = shapes[0] if len(shapes) == 1 else shapes
        self.output_shape = graph.map_structure(lambda t: t.shape, outputs)
        self.built = True
        self.reset_states()  # the functional API's shape probes ran the stateful layers

    def __setattr__(self, key, value):
        # A subclass's sub-layers get names unique in the model (dense, dense_1), as in Keras.
        if isinstance(value, Layer) and value.default_name and "_children" in self.__dict__:
            taken = {c.name for k, c in self.sublayers() if k != key and c is not value}
            base, n = value.name, 1
            while value.name in taken:
                value.name, n = f"{base}_{n}", n + 1
        super().__setattr__(key, value)

    def __call__(self, x, *args, **kwargs):
        if isinstance(x, fm.ArrayTree):
            x = x.structure
        if not self.built:
            return self._first_call(x, args, kwargs)
        if self.threads() is _BLAS_THREADS:  # most models: no context to enter (per-call cost)
            return super().__call__(x, *args, **kwargs)
        with self._thread_policy:
            return super().__call__(x, *args, **kwargs)

    def _first_call(self, x, args, kwargs):
        """The call that builds the model: its layers build as the data reaches them, so
        `build` has nothing to run (see `build`)."""
        outer = not self.__dict__.get("_calling", False)
        self.__dict__["_calling"] = True
        try:
            with self.threads():
                return super().__call__(x, *args, **kwargs)
        finally:
            if outer:
                self.__dict__["_calling"] = False

    @property
    def layers(self):
        """The direct sub-layers, in order (Keras's `model.layers`): Sequential's list, a
        functional model's layers (its InputLayers first), a subclass's layer attributes."""
        own = self.__dict__.get("_layer_list")
        return own if own is not None else [child for _, child in self.sublayers()]

    @layers.setter
    def layers(self, value):
        self.__dict__["_layer_list"] = value

    def build(self, input_shape):
        """Build every layer for inputs of `input_shape`, Keras's batch-first shape with None
        for the batch (`model.build((None, 64))`; a list of shapes for several inputs), by
        running the model once on zeros of that shape (inference mode, no gradient).

        A model also builds itself on its first call, so this is only needed to count or set
        weights before any data. Subclasses that override it create their weights themselves."""
        if self.__dict__.get("_calling") or self._graph is not None:
            return  # the first call builds the layers as it runs
        sample = graph.sample(input_shape, self.dtype)
        was = self.training
        self.eval()
        try:
            with no_grad():
                self(sample)
        finally:
            self.train(was)
        self.reset_states()  # the probe must not leave a carried state (Keras resets on build)
        self.input_shape = _keras_shape(input_shape)

    def call(self, inputs):
        if self._graph is None:
            raise NotImplementedError(
                f"{type(self).__name__} must implement call(inputs), or be made from a graph "
                "of layers: Model(inputs=Input(...), outputs=...)"
            )
        return self._graph.run(inputs)

    @property
    def input_names(self):
        return self._graph.input_names if self._graph is not None else ["input"]

    @property
    def output_names(self):
        return self._graph.output_names if self._graph is not None else ["output"]

    def _targets(self, y):
        """y checked like `_data`, keeping per-sample weights already attached to it."""
        if isinstance(y, weights_mod.WeightedTargets):
            return y
        return self._data(y, "y")

    def _data(self, data, what):
        """x or y checked: one array, or an ArrayTree for a model with several inputs
        (outputs) given a list or dict of arrays."""
        count = len(self.input_names if what == "x" else self.output_names)
        return fm.arrays_of(data, what, count)

    def get_config(self):
        if self._graph is None:
            return super().get_config()
        return {"name": self.name, "dtype": self.dtype.name, "graph": self._graph.get_config()}

    @classmethod
    def from_config(cls, config):
        if "graph" not in config:
            return super().from_config(config)
        inputs, outputs = fm.rebuild(config["graph"])
        return cls(inputs, outputs, name=config.get("name"), dtype=config.get("dtype", "float32"))

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
    def compile(self, optimizer="adam", loss=None, metrics=None, loss_weights=None):
        """Choose the optimizer, the loss and the metrics reported during training.

        A model with several outputs takes `loss`, `loss_weights` and `metrics` as lists in
        output order or dicts by output name (one loss alone applies to every output; a flat
        list of metrics too); its metrics report as "<output>_<metric>"."""
        from . import losses as losses_mod
        from . import optim as optim_mod

        if loss is None:
            raise ValueError(
                "compile: a loss is required, e.g. loss='mse' or "
                "loss='sparse_categorical_crossentropy'"
            )
        self.optimizer = optim_mod.get(optimizer)
        names = self.output_names
        if len(names) > 1 or isinstance(loss, dict) or loss_weights is not None:
            self.loss = fm.MultiOutputLoss(loss, loss_weights, names, losses_mod.get)
        else:
            self.loss = losses_mod.get(loss[0] if isinstance(loss, (list, tuple)) else loss)
        self.metric_specs = dict(metrics) if isinstance(metrics, dict) else list(metrics or [])
        if isinstance(self.loss, fm.MultiOutputLoss):
            self.metrics = fm.output_metrics(self.metric_specs, self.loss, metrics_mod.get_list)
        else:
            self.metrics = metrics_mod.get_list(self.metric_specs, self.loss)
        self._optimized = None
        if self.built:
            self._optimized = self.parameters()
            self.optimizer.build(self._optimized)

    def _require_compiled(self, what):
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(f"call model.compile(optimizer, loss) before model.{what}()")

    def build_from_sample(self, x):
        """Build all layers from one sample batch (inference mode, so no RNG is consumed)."""
        if not self.built:
            was = self.training
            self.eval()
            first = graph.map_structure(lambda a: a[:1], x) if isinstance(x, list) else x[:1]
            with no_grad():
                self(first)
            self.train(was)
            self.reset_states()  # the one-row probe must not fix a stateful layer's batch
        if self.optimizer is not None:
            self._check_optimizer()

    def optimizer_parameters(self) -> list:
        """The parameters the optimizer was built for: those trainable at compile (or at the
        first build after it); a layer frozen since stays among them, and is skipped."""
        return list(self._optimized) if self._optimized is not None else self.parameters()

    def _check_optimizer(self):
        """Build the optimizer for the parameters, or check they are still those it has.
        Fewer is fine (a layer frozen since: its weights get no gradient, and the optimizer
        skips them); others are an error saying why. Also catches layers added after
        compile, which would otherwise never train."""
        params = self.parameters()
        if self._optimized is not None:
            had = {id(p) for p in self._optimized}
            if all(id(p) in had for p in params):
                return
        try:
            self.optimizer.build(params)
        except ValueError as exc:
            had = {id(p) for p in self._optimized or ()}
            new = [k for k, p in self.named_parameters().items() if id(p) not in had]
            raise ValueError(
                f"model {self.name!r}: its trainable weights changed after compile ({new[:4]} "
                "are new: a layer was added or unfrozen); call compile again with a new "
                f"optimizer. ({exc})"
            ) from None
        self._optimized = params

    # ----- one step ---------------------------------------------------------------------
    def compute_loss(self, x, y) -> Tensor:
        """Forward in the current mode, the compiled loss, plus regularization penalties.
        `y` may carry per-sample weights (sample_weights.WeightedTargets, from fit's
        class_weight / sample_weight): they go to the loss as its `sample_weight`."""
        y_pred = self(x)
        y, w = weights_mod.split(y)
        try:
            loss = self.loss(y, y_pred) if w is None else self._weighted_loss(y, y_pred, w)
        except ValueError as exc:  # a Dense fed images is the usual cause: say where
            hint = _missing_flatten(self, y_pred, y)
            if hint is None:
                raise
            raise ValueError(f"{exc}\n{hint}") from None
        penalties = self.regularization_losses()
        for p in penalties:
            loss = loss + p
        self._last_pred = y_pred
        return loss

    def _weighted_loss(self, y, y_pred, w):
        try:
            return self.loss(y, y_pred, sample_weight=w)
        except TypeError:
            raise TypeError(
                f"model {self.name!r}: its loss {self.loss!r} takes no sample_weight, which "
                "class_weight / sample_weight need; compile with a splitgrad loss (a name such "
                "as 'sparse_categorical_crossentropy' or a splitgrad.losses class)"
            ) from None

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
        y = weights_mod.split(y)[0]
        for m in self.metrics:
            m.update(y, fm.values_of(self._last_pred))
            logs[m.name] = m.result()
        return logs

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None) -> dict:
        """One `train_step` on (x, y); the metrics cover this batch only."""
        self._require_compiled("train_on_batch")
        x, y = self._data(x, "x"), self._data(y, "y")
        _check_pair(x, y)
        y = weights_mod.weigh(y, class_weight, sample_weight, "train_on_batch")
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
        class_weight=None,
        sample_weight=None,
        steps_per_epoch=None,
    ):
        """Train for `epochs` epochs; returns a History (`.history` dict, `.epoch` list).

        `x, y` are arrays, or `x` is a batch source (a `DataLoader`, `datasets.RandomWindows`,
        anything with `batches(epoch)`) or an iterable of (x, y) or (x, y, sample_weight)
        batches, and y is None. validation_split takes the LAST fraction of the data before
        shuffling (Keras); validation_data is (x, y) or (x, y, sample_weight). `seed` fixes
        the shuffling; `way` splits training across places (splitgrad.split).

        `class_weight` {class: weight} and `sample_weight` (one per sample) weight each
        sample's loss (Keras 3's Σ w·ℓ / B; sample_weights.py). `steps_per_epoch` ends each
        epoch after that many batches (a generator goes on where the last epoch stopped).
        """
        self._require_compiled("fit")
        epochs = check.non_negative_int(epochs, "fit: epochs")
        initial_epoch = check.non_negative_int(initial_epoch, "fit: initial_epoch")
        verbose = 1 if verbose == "auto" else check.non_negative_int(verbose, "fit: verbose")
        weighted = class_weight is not None or sample_weight is not None
        if way is not None and (weighted or steps_per_epoch is not None):
            raise ValueError(
                "fit: class_weight, sample_weight and steps_per_epoch are not supported with "
                "way= yet (each way ships plain arrays to its places); train without way=, or "
                "repeat the rows you want weighted"
            )
        if weighted and y is None:
            raise ValueError(
                "fit: class_weight and sample_weight need arrays x and y; a batch source "
                "can yield (x, y, sample_weight) batches instead"
            )
        if weighted:
            y = weights_mod.weigh(self._data(y, "y"), class_weight, sample_weight, "fit")
        source, held_out = self._batch_source(x, y, batch_size, shuffle, seed, validation_split)
        if steps_per_epoch is not None:
            steps = check.positive_int(steps_per_epoch, "fit: steps_per_epoch")
            source = weights_mod.LimitedSteps(source, steps)
        if validation_data is None:
            validation_data = held_out
        if validation_data is not None:
            validation_data = tuple(validation_data)
            if len(validation_data) == 3 and validation_data[2] is not None:
                vx, vy, vw = validation_data
                vy = weights_mod.weigh(self._data(vy, "y"), None, vw, "fit: validation_data")
                validation_data = (vx, vy)
            validation_data = validation_data[:2]
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
            elif self.optimizer is not None:  # built by a call after compile: build the optimizer
                self._check_optimizer()
            source = x if hasattr(x, "batches") else _Iterated(x)
            return source, None
        batch_size = check.positive_int(batch_size, "fit: batch_size")
        x, y = self._data(x, "x"), self._targets(y)
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

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False, sample_weight=None):
        """Loss and metrics in inference mode: [loss, *metrics] (or a dict). With
        `sample_weight` the loss is Keras's weighted one (the metrics are not weighted)."""
        self._require_compiled("evaluate")
        batch_size = check.positive_int(batch_size, "evaluate: batch_size")
        x, y = self._data(x, "x"), self._targets(y)
        if sample_weight is not None:
            y = weights_mod.weigh(y, None, sample_weight, "evaluate")
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
                        m.update(weights_mod.split(yb)[0], fm.values_of(self._last_pred))
        finally:
            self.train(was)
        out = {"loss": total / max(count, 1), **{m.name: m.result() for m in self.metrics}}
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in out.items()))
        return out if return_dict else list(out.values())

    def predict(self, x, batch_size=32, verbose=0):
        """Outputs in inference mode, batched, as one NumPy array."""
        batch_size = check.positive_int(batch_size, "predict: batch_size")
        x = self._data(x, "x")
        was = self.training
        self.eval()
        try:
            with no_grad():
                outs = [
                    fm.values_of(self(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
                ]
        finally:
            self.train(was)
        return fm.concatenate(outs)

    def predict_on_batch(self, x):
        """The outputs for one batch, in inference mode (Keras)."""
        return self.predict(x, batch_size=max(len(self._data(x, "x")), 1))

    def test_on_batch(self, x, y, return_dict=False):
        """Loss and metrics on one batch, in inference mode (Keras)."""
        return self.evaluate(
            x, y, batch_size=max(len(self._data(x, "x")), 1), return_dict=return_dict
        )

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

    def load_weights(self, path, strict=True):
        """Load weights into this built model, picking the reader from the name: a
        `*.safetensors` file is a PyTorch state_dict (interop/torch_weights.py), a
        `*.weights.h5`, `*.h5` or `*.keras` file is Keras 3's (interop/keras_weights.py), and
        anything else a splitgrad checkpoint folder (`save_weights` or `save`). `strict=False`
        (other frameworks' files only) loads the layers that fit and warns about the rest;
        returns their report (None for a splitgrad checkpoint, which must fit exactly)."""
        name = str(path).lower()
        if name.endswith(".safetensors"):
            from .interop.torch_weights import load_torch_state_dict

            return load_torch_state_dict(self, path, strict=strict)
        if name.endswith((".h5", ".keras")):
            from .interop.keras_weights import load_keras_weights

            return load_keras_weights(self, path, strict=strict)
        from .checkpoint import load_weights

        load_weights(self, path)
        return None

    def export(self, filepath, format="onnx", sample=None, opset=None):
        """Write the model for other tools (Keras 3's `model.export`); only format="onnx" so
        far (needs splitgrad[onnx]; interop/onnx_export.py). `sample`: a batch of inputs, if the
        model is not built yet or should be exported for another input size. Returns the
        path."""
        if format != "onnx":
            raise ValueError(
                f"model {self.name!r}: export format {format!r} is not supported; splitgrad "
                "exports format='onnx' (model files of its own: model.save)"
            )
        from .interop.onnx_export import DEFAULT_OPSET, export_onnx

        return export_onnx(self, filepath, sample, DEFAULT_OPSET if opset is None else opset)

    def reset_states(self):
        """Zero the carried state of every stateful layer inside (the recurrent layers made
        with stateful=True), e.g. between songs; the next batch, of any size, starts fresh."""
        for _, layer in self.named_modules():
            if layer is not self and getattr(layer, "stateful", False):
                layer.reset_states()

    reset_state = reset_states  # Keras 3's name

    def summary(self, print_fn=print, line_length=None):
        """Print Keras's table: each layer's name and class, output shape (None for the
        batch) and parameter count, then the total, trainable and non-trainable counts."""
        from .summary import summary_lines

        for line in summary_lines(self, line_length):
            print_fn(line)


@register
class Sequential(Model):
    """y = layer_n(... layer_2(layer_1(x))). `Sequential([...])` or `.add(layer)`.

    Built at once when the input shape is known: `Sequential([Input((64,)), Dense(32)])`
    or `Dense(32, input_shape=(64,))` as the first layer (Keras); else at the first call."""

    def __init__(self, layers=None, name=None, dtype=None):
        layers = list(layers or [])
        start = None
        if layers and _input_shape_of(layers[0]) is not None:
            start = _input_shape_of(layers[0])
            if not isinstance(layers[0], Layer) or isinstance(layers[0], InputLayer):
                layers = layers[1:]
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
        if start is not None and self.layers:
            self.build(start)
        elif start is not None:
            self._start = start

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
        if isinstance(layer, graph.SymbolicTensor):
            raise TypeError("Sequential takes an Input(...) only as its first entry")
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential expects Layer objects, got {type(layer).__name__}")

    def add(self, layer):
        start = None if self.layers else _input_shape_of(layer)
        if start is not None and (not isinstance(layer, Layer) or isinstance(layer, InputLayer)):
            self._start = start  # model.add(Input((64,))): the shape, for the layers to come
            return
        self._check_layer(layer)
        self._append(layer)
        self.built = False
        self._thread_policy = None
        start = start or self.__dict__.get("_start")
        if start is not None:
            self.build(start)

    def build(self, input_shape):
        if not self.layers:
            raise ValueError("Sequential model has no layers; add some before calling it")
        if self.dtype_explicit:
            for layer in self.layers:
                layer.dtype = self.dtype
        super().build(input_shape)

    def call(self, x):
        layers, i = self.layers, 0
        while i < len(layers):
            # Some runs of layers are one op (fusion.py: a first conv and its pool, an
            # Embedding feeding a recurrent layer, a stack of Dense layers).
            fused = fusion.run_fused(layers, i, x)
            if fused is not None:
                x, n = fused
                i += n
                continue
            x = layers[i](x)
            i += 1
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
        trainable = config.pop("trainable", True)
        layers = [layer_class(c["class"]).from_config(c["config"]) for c in config.pop("layers")]
        model = cls(layers=layers, **config)
        if not trainable:
            model.trainable = False
        return model


def clone_model(model, sample=None):
    """A new model with the same architecture and a copy of the weights (for replicas)."""
    twin = type(model).from_config(model.get_config())
    if model.built:
        if not twin.built:  # a functional model is built by from_config already
            shape = model.input_shape
            if sample is None:
                sample = np.zeros((1,) + tuple(shape[1:]), dtype=model.dtype)
            twin.build_from_sample(sample)
        twin.set_weights(model.get_weights())
    return twin


def _input_shape_of(entry):
    """The batch-first input shape an entry of Sequential([...]) declares: an Input(...), an
    InputLayer, or a layer made with input_shape=/input_dim= (Keras); else None."""
    if isinstance(entry, graph.SymbolicTensor):
        return entry.shape
    if isinstance(entry, InputLayer):
        return entry.input_shape
    return getattr(entry, "declared_input_shape", None)


def _keras_shape(shape):
    """A shape (or list of shapes) as tuples, None kept for the batch and free axes."""
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [_keras_shape(s) for s in shape]
    return tuple(None if s is None else int(s) for s in shape)


def _missing_flatten(model, y_pred, y):
    """The fix when a loss refused predictions of rank 3 or more for lower-rank targets and
    a Dense layer inside got image-like input (a Flatten forgotten), else None."""
    from .layers.core import Dense

    if not hasattr(y_pred, "ndim") or y_pred.ndim < 3 or np.ndim(y) >= y_pred.ndim:
        return None
    if np.shape(y) == tuple(y_pred.shape[:-1]):
        return None  # one label per step of a sequence: the shapes fit, the error is another
    for _, layer in model.named_modules():
        shape = layer.input_shape
        if isinstance(layer, Dense) and isinstance(shape, tuple) and len(shape) >= 3:
            out = ", ".join(map(str, y_pred.shape[1:]))
            got = ", ".join(map(str, shape[1:]))
            return (
                f"model {model.name!r} outputs shape (None, {out}) because layer "
                f"{layer.name!r} (Dense) gets {len(shape)}-D input of shape (None, {got}) and "
                f"works on its last axis: add nn.Flatten() before layer {layer.name!r} to "
                "classify the whole sample"
            )
    return None
