"""Symbolic tensors and the layer calls they record: the ground floor of functional models.

    x = splitgrad.Input(shape=(64,))      # a SymbolicTensor of shape (None, 64)
    h = nn.Dense(32, activation="relu")(x)  # records a Node; h is (None, 32)

A layer called on a `SymbolicTensor` (anywhere in its arguments) does not compute: `connect`
builds it and runs it once on zeros of the symbolic shapes (batch 1, inference mode, no
gradient), which gives the output shapes, and records the call as a `Node`. The symbolic
outputs point back at their node, so `functional_model.FunctionalGraph` can collect the nodes
between some inputs and some outputs and replay them on real data. Knows nothing of layers
(they call in here), so every floor of splitgrad can use it.
"""

from __future__ import annotations

import itertools

import numpy as np

from .tensor import Tensor, no_grad

PROBES = (16, 17)  # sizes tried for a None axis other than the batch (two: to see which vary)
_order = itertools.count()  # creation order of nodes: a topological order of any graph


class SymbolicTensor:
    """A batch that has not arrived: its `shape` (None for the batch and any free axis), its
    `dtype`, and the `node` (layer call) and output `index` that make it."""

    __slots__ = ("dtype", "index", "name", "node", "shape")

    def __init__(self, shape, dtype="float32", node=None, index=0, name=None):
        self.shape = tuple(None if s is None else int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.node, self.index, self.name = node, index, name

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        made_by = f", made by {self.node.layer.name!r}" if self.node is not None else ""
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype.name}{made_by}>"

    def __len__(self):
        raise TypeError(
            "a SymbolicTensor (from splitgrad.Input) has no data yet: use it to write a "
            "functional model, Model(inputs, outputs), then call the model on arrays"
        )

    def __array__(self, *args, **kwargs):
        self.__len__()


class Node:
    """One recorded call `layer(x, *args, **kwargs)`; `outputs` are its symbolic results, in
    the order `flatten` gives them. An input node has no layer call (`layer` is the
    InputLayer, `x` None)."""

    def __init__(self, layer, x, args, kwargs):
        self.layer, self.x, self.args, self.kwargs = layer, x, tuple(args), dict(kwargs)
        self.outputs, self.out_structure = [], None
        self.order = next(_order)

    def inputs(self) -> list:
        """The symbolic tensors this call reads (in x, then args, then kwargs)."""
        return [t for t in flatten((self.x, self.args, self.kwargs)) if type(t) is SymbolicTensor]


# ----- nested structures (a tensor, or lists / tuples / dicts of them) ---------------------
def flatten(structure) -> list:
    """The leaves of a nested list/tuple/dict structure, in order (dicts by insertion)."""
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in flatten(item)]
    if isinstance(structure, dict):
        return [leaf for item in structure.values() for leaf in flatten(item)]
    return [structure]


def map_structure(fn, structure):
    """The same structure with every leaf replaced by fn(leaf)."""
    if isinstance(structure, (list, tuple)):
        return type(structure)(map_structure(fn, item) for item in structure)
    if isinstance(structure, dict):
        return {k: map_structure(fn, v) for k, v in structure.items()}
    return fn(structure)


def any_symbolic(structure) -> bool:
    if type(structure) is SymbolicTensor:
        return True
    if isinstance(structure, (list, tuple)):
        return any(any_symbolic(item) for item in structure)
    if isinstance(structure, dict):
        return any(any_symbolic(item) for item in structure.values())
    return False


def shape_of(out):
    """The Keras shape(s) of a layer's output, None for the batch: a tuple, or a list/dict of
    them."""
    if isinstance(out, (list, tuple)):
        return [shape_of(o) for o in out]
    if isinstance(out, dict):
        return {k: shape_of(v) for k, v in out.items()}
    shape = getattr(out, "shape", None)
    return (None, *tuple(shape)[1:]) if shape else None


# ----- recording a call --------------------------------------------------------------------
def connect(layer, x, args, kwargs):
    """Record `layer(x, *args, **kwargs)` where some arguments are symbolic; returns the
    symbolic output(s), in the structure the layer returns."""
    node = Node(layer, x, args, kwargs)
    free = any(None in t.shape[1:] for t in flatten((x, args, kwargs)) if type(t) is SymbolicTensor)
    first = _probe(layer, node, PROBES[0])
    shapes = [tuple(o.shape) for o in flatten(first)]
    if free:  # an axis that follows a free input axis is free too
        again = [tuple(o.shape) for o in flatten(_probe(layer, node, PROBES[1]))]
        shapes = [tuple(a if a == b else None for a, b in zip(s, t)) for s, t in zip(shapes, again)]
    batch = _batch_size(node)
    leaves = flatten(first)
    node.outputs = [
        SymbolicTensor((batch, *shape[1:]) if shape else shape, _dtype(leaf), node, i)
        for i, (shape, leaf) in enumerate(zip(shapes, leaves))
    ]
    it = iter(node.outputs)
    node.out_structure = map_structure(lambda _: next(it), first)
    return node.out_structure


def _probe(layer, node, size):
    """Run the layer once on zeros shaped like its symbolic arguments (batch 1, free axes of
    `size`), in inference mode and without a graph; its weights are built by this call."""
    batch = _batch_size(node) or 1

    def zeros(leaf):
        if type(leaf) is not SymbolicTensor:
            return leaf
        shape = [batch] + [size if s is None else s for s in leaf.shape[1:]]
        return np.zeros(shape, leaf.dtype)

    x, args, kwargs = map_structure(zeros, (node.x, node.args, node.kwargs))
    was = layer.training
    layer.train(False)
    try:
        with no_grad():
            return layer(x, *args, **kwargs)
    finally:
        layer.train(was)


def _batch_size(node):
    """The batch size all symbolic arguments agree on, or None (the usual: any batch)."""
    sizes = {t.shape[0] for t in node.inputs()}
    return sizes.pop() if len(sizes) == 1 else None


def _dtype(leaf):
    return leaf.dtype if isinstance(leaf, (Tensor, np.ndarray)) else np.dtype("float32")


def sample(shape, dtype="float32"):
    """Zeros for a Keras shape with None for the batch (one row) and free axes (PROBES[0]):
    what `model.build((None, 64))` runs the model on. A list/dict of shapes gives a list/dict."""
    if isinstance(shape, dict):
        return {k: sample(v, dtype) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [sample(s, dtype) for s in shape]
    shape = tuple(shape)
    if not shape:
        raise ValueError(
            "build: the input shape is empty; give (batch, features...), e.g. (None, 64)"
        )
    dims = [1 if shape[0] is None else int(shape[0])]
    dims += [PROBES[0] if s is None else int(s) for s in shape[1:]]
    return np.zeros(dims, dtype)
