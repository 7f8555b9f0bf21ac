"""The model as a TensorBoard graph: one node per layer, for the Graphs tab.

`layer_nodes(model)` walks the model and returns plain `LayerNode`s; `graph_def(model)` turns
them into a `GraphDef` protobuf. The walk:

* every layer without sub-layers is one node: its name, op = its class name, inputs = the
  node(s) before it, and attributes `_output_shapes` (what TensorBoard prints on the edges;
  -1 for the batch axis), `params` (its weight count) and `config` (its get_config, as JSON);
* a layer with sub-layers (a Sequential, a subclassed model, a block) is a name scope, shown
  by TensorBoard as one box that opens: its children, chained in the order they were assigned,
  which for a Sequential is exactly the order it calls them. A subclassed model's `call` is
  Python code, so for one that branches the chain is an approximation;
* the model's inputs are `Placeholder` nodes named "input" (then "input_1", ...);
* a functional model (`Model(inputs, outputs)`) needs no guessing: its nodes and edges are
  its recorded layer calls, branches and merges included; its inputs keep their Input names.

A node's output shape is the layer's recorded `output_shape` when it has one; otherwise the
layer is called once on zeros of its recorded input shape (batch of 1, inference mode, no
gradient), which leaves its weights and any random generator untouched. A stateful layer is not
probed (the call would move its state), and its shape is left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..functional_model import FunctionalGraph
from ..layers.input_layer import InputLayer
from ..tensor import Tensor, no_grad
from . import require


@dataclass
class LayerNode:
    """One node of the graph: `name` is its scope path ("block/dense"), `op` its class name
    ("Dense", or "Placeholder" for an input), `inputs` the names of the nodes it reads."""

    name: str
    op: str
    inputs: list = field(default_factory=list)
    output_shapes: list = field(default_factory=list)  # tuples, None for an unknown axis
    params: int = 0
    config: dict = field(default_factory=dict)
    layer: object = None


def _unique(name, taken):
    """`name`, or name_1, name_2, ... : two layers with one name must not merge into one node."""
    out, n = name, 1
    while out in taken:
        out, n = f"{name}_{n}", n + 1
    taken.add(out)
    return out


def _shapes(shape):
    """A recorded shape (a tuple, or a list of tuples for several tensors) as a list of
    tuples, the batch axis unknown."""
    if shape is None:
        return []
    if isinstance(shape, dict):  # named inputs: in their order
        shape = list(shape.values())
    many = isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list))
    return [(None, *tuple(s)[1:]) for s in (shape if many else [shape])]


def _probe(layer):
    """The output shapes of `layer` on zeros of its input shape (see the module docstring)."""
    recorded = getattr(layer, "output_shape", None)
    if recorded is not None:
        return _shapes(recorded)
    if layer.input_shape is None or getattr(layer, "stateful", False):
        return []
    zeros = [
        Tensor(np.zeros([1 if d is None else d for d in (1, *s[1:])], dtype=layer.dtype))
        for s in _shapes(layer.input_shape)
    ]
    was = layer.training
    try:
        layer.eval()
        with no_grad():
            out = layer(zeros if len(zeros) > 1 else zeros[0])
    except Exception:  # noqa: BLE001 - a layer that cannot run alone is shown without a shape
        return []
    finally:
        layer.train(was)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [(None, *o.shape[1:]) for o in outs if hasattr(o, "shape")]


def _config(layer):
    try:
        return json.loads(json.dumps(layer.get_config(), default=str))
    except (TypeError, ValueError, NotImplementedError):
        return {}


def weight_tags(model) -> dict:
    """{tag: Parameter} for every weight, named by layer scope: "dense/kernel",
    "block/dense_1/bias" (the names the graph's nodes carry); the model's own weights, if it
    has any, under its name."""
    out = {}
    for path, layer in _scopes(model, _input_names(model)):
        for key, param in layer.named_weights().items():
            if "." not in key:  # the layer's own weights; its children's come with them
                out[f"{path or model.name}/{key}"] = param
    return out


def _input_names(model):
    return ["input" if i == 0 else f"input_{i}" for i in range(len(_shapes(model.input_shape)))]


def _scopes(model, reserved=()):
    """[(scope path, layer)] depth first, the model itself first with the path ''. Sibling
    names are made unique, and top-level ones avoid the `reserved` input names."""
    found, stack = [], [("", model)]
    while stack:
        path, layer = stack.pop(0)
        found.append((path, layer))
        taken, children = set(reserved) if not path else set(), []
        for _, child in layer.sublayers():
            name = _unique(child.name, taken)
            children.append((f"{path}/{name}" if path else name, child))
        stack[:0] = children
    return found


def layer_nodes(model) -> list:
    """The graph's nodes: the inputs, then one per layer without sub-layers, in call order."""
    functional = _functional_graph(model)
    if functional is not None:
        return _functional_nodes(functional)
    names = _input_names(model)
    nodes = [
        LayerNode(name, "Placeholder", [], [shape])
        for name, shape in zip(names, _shapes(model.input_shape))
    ]
    scopes = _scopes(model, names)
    layers, children = dict(scopes), {}
    for path, _ in scopes[1:]:
        children.setdefault(path.rpartition("/")[0], []).append(path)

    def chain(path, incoming):
        """Nodes for the layer at `path` fed by `incoming`; returns the names it outputs."""
        if path in children:
            for child in children[path]:
                incoming = chain(child, incoming)
            return incoming
        layer, name = layers[path], path or model.name
        if isinstance(layer, InputLayer):  # Sequential([Input(...), ...]): the Placeholder
            return incoming
        node = LayerNode(name, type(layer).__name__, list(incoming), _probe(layer))
        node.params, node.config, node.layer = layer.count_params(), _config(layer), layer
        nodes.append(node)
        return [name]

    chain("", names)
    return nodes


def _functional_graph(model):
    """The FunctionalGraph of a model made as Model(inputs, outputs), or None."""
    return next((v for v in vars(model).values() if isinstance(v, FunctionalGraph)), None)


def _functional_nodes(functional):
    """A functional model's nodes come from its recorded calls: the real edges, branches and
    merges included. A layer called twice (shared weights) is one node fed by both calls."""
    names, nodes, taken = {}, [], set()
    for t in functional.inputs:
        names[id(t.node.layer)] = _unique(t.node.layer.name, taken)
        nodes.append(LayerNode(names[id(t.node.layer)], "Placeholder", [], [t.shape]))
    for call in functional.nodes:
        layer = call.layer
        sources = list(dict.fromkeys(names[id(t.node.layer)] for t in call.inputs()))
        if id(layer) in names:
            node = next(n for n in nodes if n.layer is layer)
            node.inputs += [s for s in sources if s not in node.inputs]
            continue
        names[id(layer)] = _unique(layer.name, taken)
        node = LayerNode(names[id(layer)], type(layer).__name__, sources)
        node.output_shapes = [tuple(t.shape) for t in call.outputs]
        node.params, node.config, node.layer = layer.count_params(), _config(layer), layer
        nodes.append(node)
    return nodes


def graph_def(model):
    """The GraphDef protobuf of `layer_nodes(model)`."""
    pb = require()
    nodes = []
    for node in layer_nodes(model):
        shapes = [
            pb.tensor_shape_pb2.TensorShapeProto(
                dim=[
                    pb.tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d is None else int(d))
                    for d in shape
                ]
            )
            for shape in node.output_shapes
        ]
        attr = {
            "_output_shapes": pb.attr_value_pb2.AttrValue(
                list=pb.attr_value_pb2.AttrValue.ListValue(shape=shapes)
            )
        }
        if node.op != "Placeholder":
            attr["params"] = pb.attr_value_pb2.AttrValue(i=node.params)
            attr["config"] = pb.attr_value_pb2.AttrValue(s=json.dumps(node.config).encode())
        nodes.append(
            pb.node_def_pb2.NodeDef(name=node.name, op=node.op, input=node.inputs, attr=attr)
        )
    return pb.graph_pb2.GraphDef(node=nodes)
