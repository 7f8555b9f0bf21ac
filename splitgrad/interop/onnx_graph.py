"""The ONNX graph under construction, and the table of converters that fill it, one per class.

A converter is `fn(graph, layer, x) -> y`: it adds the nodes that compute `layer(x)` in
inference mode and returns the new value. `x` and `y` are `Value`s (lists of them for a layer
of several inputs or a model of several outputs): an ONNX value name with
the shape and dtype the value has for the sample batch the export runs on (one example). The
shape is only read for what ONNX needs to know ahead (a convolution's padding, a tensor's
rank); the nodes themselves never bake in the batch size, so the exported model takes any
batch (and any sequence length, for sequence models).

Converters are found by class, through the MRO: a subclass of a known class is converted like
it, unless it overrides `call` (then it computes something else, and needs its own
converter). `converter(cls)` registers one, so a user can teach the exporter a layer of their
own. Keys are dotted class names, so this table needs no import of the classes it names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CONVERTERS: dict = {}


def converter(*classes):
    """Decorator: `fn(graph, layer, x) -> Value` converts layers of these classes (classes or
    dotted names such as "splitgrad.layers.core.Dense")."""

    def register(fn):
        for cls in classes:
            _CONVERTERS[cls if isinstance(cls, str) else _dotted(cls)] = fn
        return fn

    return register


def _dotted(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def find_converter(layer):
    """The converter for `layer`'s class, or None (a class that overrides `call` below the
    class a converter knows is not covered by it)."""
    for cls in type(layer).__mro__:
        fn = _CONVERTERS.get(_dotted(cls))
        if fn is not None:
            same_call = getattr(type(layer), "call", None) is getattr(cls, "call", None)
            return fn if same_call else None
    return None


def supported() -> list:
    """The class names the exporter converts, sorted."""
    return sorted({key.rsplit(".", 1)[-1] for key in _CONVERTERS})


class UnsupportedLayer(ValueError):
    """A layer (or an option of one) the ONNX exporter cannot express."""


@dataclass(frozen=True)
class Value:
    """An ONNX value: its name, and its shape and dtype for the one-example sample batch."""

    name: str
    shape: tuple
    dtype: str = "float32"  # "float32" or "int64"

    @property
    def rank(self) -> int:
        return len(self.shape)


class Graph:
    """Nodes, weights (initializers), inputs and outputs of the graph being built, and the
    path of the layer being converted (for error messages)."""

    def __init__(self, opset: int):
        self.opset = int(opset)
        self.nodes, self.initializers, self.inputs = [], [], []
        self.path = []
        self.free_axes = {}  # {input name: axes of any length} (batch aside)
        self._taken = {"input", "output"}  # and the inputs' names, as they are added

    # ----- names ------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A value name not used yet, readable in Netron: the layer path, then `hint`."""
        base = "/".join([*self.path, hint]) if self.path else hint
        name, n = base, 1
        while name in self._taken:
            name, n = f"{base}_{n}", n + 1
        self._taken.add(name)
        return name

    def where(self) -> str:
        return "/".join(self.path) or "the model"

    def reads_sequence(self, x: Value):
        """A converter reading x as (batch, time, ...) calls this: when x is the model's
        input, its time axis is left free in the exported graph."""
        if x.name in self.free_axes and x.rank >= 2:
            self.free_axes[x.name].add(1)

    # ----- building ---------------------------------------------------------------------
    def add_input(self, name: str, shape, dtype="float32", free=()) -> Value:
        """A model input; `free`: its axes (batch aside) that may have any length."""
        self._taken.add(name)
        value = Value(name, tuple(shape), dtype)
        self.inputs.append(value)
        self.free_axes[name] = set(free)
        return value

    def const(self, array, hint: str) -> str:
        """A weight or constant: float arrays are stored as float32, integer ones as int64."""
        from onnx import numpy_helper

        array = np.asarray(array)
        array = array.astype(np.int64 if array.dtype.kind in "iub" else np.float32)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values, hint="shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def op(self, op_type: str, inputs, hint=None, outputs=1, **attrs):
        """Add one node; returns its output name (or a list of `outputs` names; an entry of
        `outputs` given as a list of flags skips the optional outputs that are False)."""
        from onnx import helper

        flags = outputs if isinstance(outputs, (list, tuple)) else [True] * outputs
        base = hint or op_type.lower()
        names = [
            self.fresh(f"{base}_{i}" if i else base) if keep else "" for i, keep in enumerate(flags)
        ]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if len(names) == 1 else names

    # ----- nodes whose form depends on the opset ----------------------------------------
    def reduce_mean(self, x: str, axes, keepdims: bool) -> str:
        if self.opset >= 18:  # axes became an input in opset 18
            return self.op("ReduceMean", [x, self.ints(axes, "axes")], keepdims=int(keepdims))
        return self.op("ReduceMean", [x], axes=list(axes), keepdims=int(keepdims))

    def squeeze(self, x: str, axes) -> str:
        return self.op("Squeeze", [x, self.ints(axes, "axes")])

    def reverse(self, x: str, axis: int) -> str:
        """x read backwards along `axis`, for any length along it (a Slice with step −1)."""
        return self.op(
            "Slice",
            [
                x,
                self.ints([-1], "starts"),
                self.ints([np.iinfo(np.int64).min], "ends"),
                self.ints([axis], "axes"),
                self.ints([-1], "steps"),
            ],
            "reversed",
        )

    # ----- converting -------------------------------------------------------------------
    def convert(self, layer, x, key=None):
        """The value of `layer(x)` by the layer's converter (x, and what it returns: a Value
        or a list of them); `key` names the layer in the path (its name by default)."""
        self.path.append(str(key) if key is not None else layer.name)
        try:
            fn = find_converter(layer)
            if fn is None:
                raise UnsupportedLayer(unsupported_message(layer, self.where()))
            return fn(self, layer, x)
        finally:
            self.path.pop()


def unsupported_message(layer, where: str, what=None) -> str:
    """The error for `layer` at `where`: `what` it does that ONNX cannot express, or (None)
    why its class has no converter; and what is supported."""
    kind = type(layer).__name__
    known = [c for c in type(layer).__mro__[1:] if _dotted(c) in _CONVERTERS]
    if what is None and known and _dotted(known[0]) == "splitgrad.model.Model":
        what = (
            "it is a Model subclass with a call() of its own, which the exporter cannot "
            "follow; write it as Sequential or Model(inputs, outputs), or register a converter"
        )
    elif what is None and known:
        what = f"it overrides call() of {known[0].__name__}, so its output may differ"
    elif what is None:
        what = "the exporter has no converter for this class"
    return (
        f"ONNX export: cannot export layer {layer.name!r} of class {kind} (at {where}): "
        f"{what}. Supported: {', '.join(supported())}. Build the model from these "
        "layers, or register a converter for your class with "
        "@splitgrad.interop.onnx_export.converter(YourClass)."
    )


def elem_type(dtype: str) -> int:
    from onnx import TensorProto

    return TensorProto.INT64 if dtype == "int64" else TensorProto.FLOAT


def sample_shape(layer, x) -> tuple:
    """The shape of `layer`'s output for zeros shaped like `x` (a Value, or a list of them for
    a merge layer); the export runs in inference mode without a graph. splitgrad itself is
    the shape oracle, and checks the input."""

    def zeros(v):
        return np.zeros(v.shape, np.int64 if v.dtype == "int64" else layer.dtype)

    return tuple(layer([zeros(v) for v in x] if isinstance(x, list) else zeros(x)).shape)
