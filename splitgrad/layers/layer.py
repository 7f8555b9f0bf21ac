"""The `Layer` base class: lazy building, parameter tracking, train/eval mode and configs.

A layer creates its weights in `build(input_shape)` the first time it is called, so users never
type input sizes (the Keras habit). Parameters and sub-layers assigned as attributes are found
automatically; their dotted paths ("layers.0.kernel") name them in checkpoints. A weight made
by `add_weight(name, ...)` is registered once, under `name`, however many attributes point at
it (`self.W = self.add_weight("weight", ...)`).

Every subclass also accepts Keras's constructor keywords `input_shape=`, `input_dim=`,
`batch_input_shape=` and `trainable=` (construction.py), and remembers the arguments it was
made with, so a custom layer or model without a `get_config` of its own still saves and loads.
Called on the symbolic tensors of `splitgrad.Input`, a layer records the call (graph.py) instead
of computing it: that is how functional models are written.
"""

from __future__ import annotations

import contextvars
import math

import numpy as np

from .. import graph
from ..tensor import Tensor
from . import construction, state_dicts
from . import init as initializers

_LAYER_REGISTRY: dict = {}


def register(cls):
    """Class decorator: make a layer or model class loadable by name from a saved config
    (`@splitgrad.register` above `class MyModel(splitgrad.Model)`)."""
    _LAYER_REGISTRY[cls.__name__] = cls
    return cls


class UnknownClassError(ValueError):
    """A saved config names a layer or model class that no `@register` has made known."""


def layer_class(name: str):
    try:
        return _LAYER_REGISTRY[name]
    except KeyError:
        raise UnknownClassError(
            f"unknown layer class {name!r}: no layer or model class of that name is "
            "registered. If it is your own class, decorate it with @splitgrad.register and "
            "import the module that defines it before loading (known: "
            f"{', '.join(sorted(_LAYER_REGISTRY))})"
        ) from None


class Parameter(Tensor):
    """A tensor owned by a layer. Trainable ones require grad; others are state (e.g. BN stats).

    `trainable` is the weight's kind; `requires_grad` is whether training moves it now, which
    is also False while its layer is frozen (`layer.trainable = False`)."""

    __slots__ = ("trainable",)

    def __init__(self, data, trainable=True, name=None):
        super().__init__(data, requires_grad=trainable, name=name)
        self.trainable = trainable


class Layer:
    """Base of every layer and model.

    Subclasses override `build(input_shape)` to create weights with `add_weight` and
    `call(x)` to compute the output from Tensors. `layer(x)` builds on first use, converts
    arrays to Tensors of the layer's dtype, and runs `call`.
    """

    # Layer's (and Model's) get_config describes any subclass from the arguments it was made
    # with; a class that writes its own get_config says exactly what to save instead.
    _generic_config = True

    def __init__(self, name=None, dtype="float32", trainable=True):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_children", {})
        self.default_name = name is None  # may be renamed (dense_1) to be unique in a model
        self.name = name or _snake(type(self).__name__)
        self.dtype = np.dtype(dtype)
        self.trainable = trainable
        self.training = True
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.declared_input_shape = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = construction.keras_init(cls.__dict__["__init__"])
        if "build" in cls.__dict__:
            cls.build = construction.marks_built(cls.__dict__["build"])

    # ----- attribute tracking -----------------------------------------------------------
    def __setattr__(self, key, value):
        params, children = self.__dict__.get("_params"), self.__dict__.get("_children")
        if params is None:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() before setting "
                "attributes"
            )
        params.pop(key, None)
        children.pop(key, None)
        if isinstance(value, Parameter):
            # A second attribute for a weight this layer already has (the Keras habit
            # `self.W = self.add_weight("weight", ...)`) is an alias: the weight stays
            # registered once, under its first name, so it is saved and trained once.
            if not any(p is value for p in params.values()):
                params[key] = value
        elif isinstance(value, Layer):
            children[key] = value
        elif (
            isinstance(value, (list, tuple)) and value and all(isinstance(v, Layer) for v in value)
        ):
            children[key] = list(value)
        object.__setattr__(self, key, value)

    @property
    def trainable(self):
        """False freezes the layer: its weights and those of every sub-layer stop training
        (no gradient, the optimizer skips them), and BatchNormalization runs in inference
        mode (Keras 3). Setting it sets it on every sub-layer too, as in Keras."""
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value):
        value = bool(value)
        self.__dict__["_trainable"] = value
        for p in self._params.values():
            p.requires_grad = bool(p.trainable and value)
        for _, child in self.sublayers():
            child.trainable = value

    def add_weight(
        self,
        name=None,
        shape=None,
        initializer="torch_uniform",
        fan_in=None,
        fan_out=None,
        trainable=True,
        regularizer=None,
        dtype=None,
    ) -> Parameter:
        """Create, register and return a parameter (within the `WeightBudget` in force, if
        any). Keras's spellings work: `add_weight("w", shape=[d, n])`,
        `add_weight(shape=(d, n), initializer="zeros", trainable=False, name="w")`, and
        Keras 3's positional `add_weight((d, n), "zeros")`.

        The weight is registered under `name` (which names it in checkpoints) and, unless the
        layer already has another attribute of that name, is also `self.<name>`; assigning it
        to a second attribute does not register it again. `initializer` None is the default
        U(±1/sqrt(fan_in)) (PyTorch's); fan_in defaults to shape[0]."""
        if isinstance(name, (tuple, list)):  # Keras 3 order: add_weight(shape, initializer)
            if shape is not None:
                initializer = shape
            name, shape = None, name
        if shape is None:
            raise TypeError(f"layer {self.name!r}: add_weight needs a shape, e.g. shape=(4, 3)")
        if name is None:
            name, n = "weight", 1
            while name in self._params:
                name, n = f"weight_{n}", n + 1
        name = str(name)
        shape = tuple(int(s) for s in shape)
        WeightBudget.charge(self, name, shape)
        fan_in = fan_in if fan_in is not None else (shape[0] if shape else 1)
        fan_out = fan_out if fan_out is not None else (shape[-1] if shape else 1)
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        data = initializers.initialize(
            initializer or "torch_uniform", shape, fan_in, fan_out, dtype
        )
        param = Parameter(data, trainable=trainable, name=name)
        param.requires_grad = bool(trainable and self.trainable)
        current = self.__dict__.get(name)
        if current is None or isinstance(current, Parameter):
            setattr(self, name, param)
        else:  # `name` is already something else of the layer's (e.g. add_weight(name="name"))
            self._params[name] = param
        if regularizer is not None:
            from . import regularizers

            if "_regularizers" not in self.__dict__:
                self._regularizers = {}
            self._regularizers[name] = regularizers.get(regularizer)
        return param

    def sublayers(self):
        """Direct child layers in registration order, with their attribute paths."""
        for key, child in self._children.items():
            if isinstance(child, list):
                for i, c in enumerate(child):
                    yield f"{key}.{i}", c
            else:
                yield key, child

    def named_weights(self, prefix=""):
        """All parameters (trainable and state), depth first, as {dotted path: Parameter}."""
        out = {}
        for key, p in self._params.items():
            out[prefix + key] = p
        for key, child in self.sublayers():
            out.update(child.named_weights(prefix + key + "."))
        return out

    @property
    def weights(self):
        """Every weight, trainable and not (BatchNorm's moving statistics), in registration
        order: the order of `get_weights`, `set_weights` and checkpoints."""
        return list(self.named_weights().values())

    variables = weights

    @property
    def trainable_weights(self):
        """The weights that training moves now (a frozen layer's are not among them)."""
        return _unique(p for p in self.named_weights().values() if p.requires_grad)

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self):
        """State (BatchNorm's moving statistics) and the weights of frozen layers."""
        return _unique(p for p in self.named_weights().values() if not p.requires_grad)

    non_trainable_variables = non_trainable_weights

    def parameters(self):
        """Trainable parameters, in a fixed order (the optimizer's order). A weight shared by
        two layers (tied weights) is listed once, as in PyTorch."""
        return self.trainable_weights

    def named_parameters(self, prefix=""):
        """{dotted name: Parameter} of the trainable parameters (each shared one once); iterating
        it yields (name, Parameter) pairs, as PyTorch's `named_parameters()` does."""
        seen, out = set(), state_dicts.NamedParameters()
        for key, p in self.named_weights(prefix).items():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out[key] = p
        return out

    def children(self):
        """The direct sub-layers, in order (PyTorch's `children()`)."""
        return [child for _, child in self.sublayers()]

    def named_modules(self, prefix=""):
        """(dotted path, layer) for this layer ("") and every layer inside it, depth first."""
        yield prefix, self
        for key, child in self.sublayers():
            yield from child.named_modules(f"{prefix}.{key}" if prefix else key)

    def modules(self):
        return [layer for _, layer in self.named_modules()]

    def get_weights(self):
        """Copies of all weights as NumPy arrays (Keras `get_weights`)."""
        return [p.data.copy() for p in self.weights]

    def set_weights(self, arrays):
        """Overwrite all weights in place; shapes must match `get_weights()`."""
        weights = self.named_weights()
        if len(arrays) != len(weights):
            raise ValueError(
                f"{self.name}: set_weights got {len(arrays)} arrays, the layer has "
                f"{len(weights)} weights ({list(weights)})"
            )
        for (key, p), a in zip(weights.items(), arrays):
            a = np.asarray(a)
            if a.shape != p.shape:
                raise ValueError(f"{self.name}: weight {key!r} has shape {p.shape}, got {a.shape}")
            p.data[...] = a

    def state_dict(self):
        """{dotted name: copy of the array} of every weight, BatchNorm statistics included
        (PyTorch's `state_dict()`; see state_dicts.py for the names and layouts)."""
        return state_dicts.state_dict(self)

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the weights of the same names (PyTorch's); nothing is assigned
        unless all fit. Returns (missing names, unexpected names)."""
        return state_dicts.load_state_dict(self, state_dict, strict)

    def zero_grad(self):
        for p in self.weights:
            p.grad = None

    def count_params(self) -> int:
        """The number of weight values (each shared weight once), trainable or not."""
        return int(sum(p.size for p in _unique(self.weights)))

    # ----- mode -------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Switch this layer and all sub-layers to training (or inference) mode."""
        object.__setattr__(self, "training", mode)
        for _, child in self.sublayers():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ----- losses added by regularizers -------------------------------------------------
    def regularization_losses(self):
        """Penalty tensors from this layer's and its sub-layers' regularizers."""
        out = []
        for key, reg in self.__dict__.get("_regularizers", {}).items():
            if reg is not None and key in self._params:
                out.append(reg(self._params[key]))
        for _, child in self.sublayers():
            out += child.regularization_losses()
        return out

    # ----- building and calling ---------------------------------------------------------
    def build(self, input_shape):
        """Create weights for inputs of `input_shape` (batch axis included)."""

    def call(self, x):
        raise NotImplementedError(f"{type(self).__name__} must implement call(x)")

    def to_tensor(self, x) -> Tensor:
        """Convert an input to a Tensor of the layer's dtype (float inputs are cast)."""
        if isinstance(x, Tensor):
            if x.dtype != self.dtype and x.dtype.kind == "f":
                return x.astype(self.dtype)
            return x
        arr = np.asarray(x)
        if arr.dtype.kind in "fiub" and arr.dtype != self.dtype:
            arr = arr.astype(self.dtype)
        elif arr.dtype.kind not in "fiub":
            raise TypeError(
                f"{self.name}: expected numeric input, got an array of dtype {arr.dtype}"
            )
        return Tensor(arr)

    def __call__(self, x, *args, **kwargs):
        if (
            graph.any_symbolic(x)
            or (args and graph.any_symbolic(args))
            or (kwargs and graph.any_symbolic(kwargs))
        ):
            return graph.connect(self, x, args, kwargs)  # a functional model is being written
        if not isinstance(x, (list, tuple, dict)):
            x = self.to_tensor(x)
        if self.built:
            return self.call(x, *args, **kwargs)
        self.input_shape = _shape_of(x)
        self.build(self.input_shape)
        self.built = True
        out = self.call(x, *args, **kwargs)
        self.output_shape = graph.shape_of(out)  # for summary(): the first call's shapes
        return out

    def stochastic(self) -> bool:
        """True when this layer's training output depends on random draws (Dropout)."""
        return False

    # A layer whose time loops run best on splitgrad's own threads (the recurrent layers) says
    # so here; a Model holding one runs its passes on them (model.py, _kernels/thread_team.py).
    wants_own_threads = False

    def expect_last_dim(self, x, size, what="features"):
        """Raise a clear error if the input's last axis is not `size` (shared shape check)."""
        if x.ndim < 1 or x.shape[-1] != size:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) expects {size} {what} on the last "
                f"axis (it was built for input shape {self.input_shape}), but got input shape "
                f"{tuple(x.shape)}. Reshape the input or rebuild the model for the new size."
            )

    def expect_ndim(self, x, ndim, layout):
        if x.ndim != ndim:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) expects {ndim}-D input {layout}, "
                f"got shape {tuple(x.shape)}."
            )

    # ----- configuration ----------------------------------------------------------------
    def get_config(self) -> dict:
        """Arguments that rebuild this layer (JSON-serialisable).

        A class without a get_config of its own is described by the arguments it was made
        with (Keras 3's habit), so `@register class MyModel(Model)` saves and loads as is."""
        config = {"name": self.name, "dtype": self.dtype.name}
        if not self.trainable:
            config["trainable"] = False
        if construction.generic_config(type(self)):
            config = {**construction.init_arguments(self), **config}
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        trainable = config.pop("trainable", True)
        # A custom class whose __init__ takes no name or dtype gets them after construction.
        later = {
            k: config.pop(k)
            for k in ("name", "dtype")
            if k in config and not construction.takes(cls, k)
        }
        layer = cls(**config)
        if "name" in later:
            layer.name, layer.default_name = later["name"], False
        if "dtype" in later:
            layer.dtype = np.dtype(later["dtype"])
        if not trainable:
            layer.trainable = False
        return layer

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "dtype")
        return f"{type(self).__name__}({args})"


class WeightBudget:
    """`with WeightBudget(n):` every `add_weight` in this context (thread, task) spends the
    element count of its shape from `n`; one that would overspend, or whose dtype is not a
    number, raises ValueError before anything is allocated.

    Checkpoint loading sets `n` to the elements its verified weights file holds, so a config
    that claims huge or negative shapes is refused instead of allocating gigabytes first.
    """

    _left = contextvars.ContextVar("splitgrad_weight_budget", default=None)

    def __init__(self, elements: int):
        self.elements = int(elements)

    def __enter__(self):
        self._token = self._left.set([self.elements])
        return self

    def __exit__(self, *exc):
        self._left.reset(self._token)
        return False

    @classmethod
    def charge(cls, layer, name, shape):
        """Spend the elements of weight `name` of `shape`; a no-op outside a budget."""
        left = cls._left.get()
        if left is None:
            return
        dtype = np.dtype(layer.dtype)
        if dtype.kind not in "biufc" or dtype.itemsize > 16:
            raise ValueError(f"layer {layer.name!r}: weights of dtype {dtype} are not numbers")
        if any(s < 0 for s in shape):
            raise ValueError(
                f"layer {layer.name!r}: weight {name!r} would have shape {shape}, "
                "with a negative size"
            )
        need = math.prod(shape)
        if need > left[0]:
            raise ValueError(
                f"layer {layer.name!r}: weight {name!r} of shape {shape} needs "
                f"{need} values, more than the {left[0]} the saved weights have "
                "left; the config does not match its weights"
            )
        left[0] -= need


def generators(layer, prefix="") -> dict:
    """{dotted path: generator} of the layers inside `layer` (itself included, as ".") that draw
    from a generator of their own (`layer.rng`, e.g. a seeded Dropout). Its state is part of a
    run's state: checkpoints and split training carry it."""
    out = {}
    rng = getattr(layer, "rng", None)
    if isinstance(rng, np.random.Generator):
        out[prefix or "."] = rng
    for key, child in layer.sublayers():
        out.update(generators(child, prefix + key + "."))
    return out


def _unique(params) -> list:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _shape_of(x):
    if isinstance(x, dict):
        return {k: tuple(t.shape) for k, t in x.items()}
    if isinstance(x, (list, tuple)):
        return [tuple(t.shape) for t in x]
    return tuple(x.shape)


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and name[i - 1].islower():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
