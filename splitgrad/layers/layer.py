"""The `Layer` base class: lazy building, parameter tracking, train/eval mode and configs.

A layer creates its weights in `build(input_shape)` the first time it is called, so users never
type input sizes (the Keras habit). Parameters and sub-layers assigned as attributes are found
automatically; their dotted paths ("layers.0.kernel") name them in checkpoints.
"""

from __future__ import annotations

import contextvars
import math

import numpy as np

from ..tensor import Tensor
from . import init as initializers

_LAYER_REGISTRY: dict = {}


def register(cls):
    """Class decorator: make a layer class loadable by name from a saved config."""
    _LAYER_REGISTRY[cls.__name__] = cls
    return cls


def layer_class(name: str):
    try:
        return _LAYER_REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown layer class {name!r} in the saved config; known layers: "
            f"{sorted(_LAYER_REGISTRY)}. Import the module that defines it before loading."
        ) from None


class Parameter(Tensor):
    """A tensor owned by a layer. Trainable ones require grad; others are state (e.g. BN stats)."""

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

    def __init__(self, name=None, dtype="float32", trainable=True):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_children", {})
        self.name = name or _snake(type(self).__name__)
        self.dtype = np.dtype(dtype)
        self.trainable = trainable
        self.training = True
        self.built = False
        self.input_shape = None

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
            params[key] = value
        elif isinstance(value, Layer):
            children[key] = value
        elif (
            isinstance(value, (list, tuple)) and value and all(isinstance(v, Layer) for v in value)
        ):
            children[key] = list(value)
        object.__setattr__(self, key, value)

    def add_weight(
        self, name, shape, initializer="torch_uniform", fan_in=None, fan_out=None, trainable=True
    ) -> Parameter:
        """Create, register and return a parameter of the layer's dtype (within the
        `WeightBudget` in force, if any)."""
        shape = tuple(int(s) for s in shape)
        WeightBudget.charge(self, name, shape)
        fan_in = fan_in if fan_in is not None else (shape[0] if shape else 1)
        fan_out = fan_out if fan_out is not None else (shape[-1] if shape else 1)
        data = initializers.initialize(initializer, shape, fan_in, fan_out, self.dtype)
        param = Parameter(data, trainable=trainable and self.trainable, name=name)
        setattr(self, name, param)
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
        return list(self.named_weights().values())

    def parameters(self):
        """Trainable parameters, in a fixed order (the optimizer's order)."""
        return [p for p in self.named_weights().values() if p.requires_grad]

    def named_parameters(self):
        return {k: p for k, p in self.named_weights().items() if p.requires_grad}

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

    def zero_grad(self):
        for p in self.weights:
            p.grad = None

    def count_params(self) -> int:
        return int(sum(p.size for p in self.weights))

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
        for key, reg in getattr(self, "_regularizers", {}).items():
            if reg is not None and key in self._params:
                out.append(reg(self._params[key]))
        for _, child in self.sublayers():
            out.extend(child.regularization_losses())
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
        x = self.to_tensor(x) if not isinstance(x, (list, tuple)) else x
        if not self.built:
            self.input_shape = _shape_of(x)
            self.build(self.input_shape)
            self.built = True
        return self.call(x, *args, **kwargs)

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
        """Arguments that rebuild this layer (JSON-serialisable)."""
        return {"name": self.name, "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

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


def _shape_of(x):
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
