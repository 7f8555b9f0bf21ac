"""What `Model(inputs, outputs)` is made of: the graph between symbolic inputs and outputs,
its replay on data, its JSON config, and the data and losses of several inputs and outputs.

    inputs = Input((64,), name="x"); h = Dense(32, activation="relu")(inputs)
    model = Model(inputs, [Dense(1, name="price")(h), Dense(3, name="kind")(h)])
    model.compile("adam", loss={"price": "mse", "kind": "sparse_categorical_crossentropy"},
                  loss_weights={"price": 0.5, "kind": 1.0})

A `FunctionalGraph` collects the recorded layer calls (graph.py) that lead from the inputs to
the outputs and runs them in recording order (a topological order) on real tensors. A layer
called twice appears once in `layers` and shares its weights between its calls; a model can be
called like a layer. Data for several inputs (outputs) is a list in their order or a dict keyed
by their names (the Input's name; the name of the layer that makes the output); `ArrayTree`
carries it through fit/evaluate/predict, which slice it like one array.
"""

from __future__ import annotations

import numpy as np

from . import validate as check
from .graph import SymbolicTensor, flatten, map_structure
from .layers.input_layer import InputLayer
from .layers.layer import layer_class
from .tensor import Tensor


class FunctionalGraph:
    """The layer calls between `inputs` and `outputs` (each a symbolic tensor, or a list or
    dict of them), and the unique `layers` they use: the InputLayers first, then in order of
    first use."""

    def __init__(self, inputs, outputs, model_name="model"):
        self.input_structure, self.output_structure = inputs, outputs
        self.inputs, self.outputs = flatten(inputs), flatten(outputs)
        who = f"Model {model_name!r}"
        for t in self.inputs:
            if type(t) is not SymbolicTensor or not isinstance(t.node.layer, InputLayer):
                raise TypeError(
                    f"{who}: inputs must come from splitgrad.Input(...), got {t!r}; write "
                    "x = Input(shape=(64,)) and pass it as Model(inputs=x, outputs=...)"
                )
        for t in self.outputs:
            if type(t) is not SymbolicTensor:
                raise TypeError(
                    f"{who}: outputs must be what layers return when called on Input(...) "
                    f"tensors, got {type(t).__name__}"
                )
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise ValueError(f"{who}: an Input appears twice among the inputs")
        self.nodes = self._collect(who)
        seen, layers = set(), []
        for layer in [t.node.layer for t in self.inputs] + [n.layer for n in self.nodes]:
            if id(layer) not in seen:
                seen.add(id(layer))
                layers.append(layer)
        self.layers = layers
        # Given as dicts, inputs and outputs are named by their keys (Keras).
        self.input_names = (
            list(inputs) if isinstance(inputs, dict) else [t.node.layer.name for t in self.inputs]
        )
        self.output_names = (
            list(outputs) if isinstance(outputs, dict) else _output_names(self.outputs)
        )

    def _collect(self, who):
        """The nodes the outputs depend on, in recording order; every Input they reach must
        be one of the model's inputs."""
        given = {id(t.node) for t in self.inputs}
        nodes, stack = {}, [t.node for t in self.outputs]
        while stack:
            node = stack.pop()
            if id(node) in nodes or id(node) in given:
                continue
            if isinstance(node.layer, InputLayer) and node.x is None:
                raise ValueError(
                    f"{who}: the outputs depend on Input {node.layer.name!r}, which is not "
                    "among the model's inputs; add it to inputs=[...]"
                )
            nodes[id(node)] = node
            stack.extend(t.node for t in node.inputs())
        return sorted(nodes.values(), key=lambda n: n.order)

    # ----- running ----------------------------------------------------------------------
    def run(self, data):
        """The outputs for real inputs `data` (a tensor/array, a list in input order, or a
        dict by input name), in the structure the model was given its outputs."""
        values = {id(t): v for t, v in zip(self.inputs, self.arrange(data, "inputs"))}

        def value(leaf):
            return values[id(leaf)] if type(leaf) is SymbolicTensor else leaf

        for node in self.nodes:
            x, args, kwargs = map_structure(value, (node.x, node.args, node.kwargs))
            out = node.layer(x, *args, **kwargs)
            for t, o in zip(node.outputs, flatten(out)):
                values[id(t)] = o
        return map_structure(lambda t: values[id(t)], self.output_structure)

    def arrange(self, data, what) -> list:
        """`data` as a list in the order of the model's inputs (or outputs), checked."""
        names = self.input_names if what == "inputs" else self.output_names
        if isinstance(data, ArrayTree):
            data = data.structure
        if isinstance(data, dict):
            keys = names
            missing = [k for k in keys if k not in data]
            unexpected = [k for k in data if k not in keys]
            if missing or unexpected:
                raise ValueError(
                    f"the model's {what} are named {keys}; the dict given has "
                    f"{list(data)} (missing {missing}, unexpected {unexpected})"
                )
            return [data[k] for k in keys]
        if len(names) == 1:
            if isinstance(data, (list, tuple)) and len(data) == 1 and not _is_rows(data):
                return list(data)
            return [data]
        if not isinstance(data, (list, tuple)) or len(data) != len(names):
            raise ValueError(
                f"the model has {len(names)} {what} ({', '.join(names)}): give a list of "
                f"{len(names)} arrays in that order or a dict keyed by those names; got "
                f"{_describe(data)}"
            )
        return list(data)

    # ----- configuration ----------------------------------------------------------------
    def get_config(self) -> dict:
        """The layers' configs and, for every call, which layer and which tensors (as
        {"tensor": [node, output index]}; nodes 0..k-1 are the k inputs)."""
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        numbered = {id(t.node): i for i, t in enumerate(self.inputs)}
        for node in self.nodes:
            numbered[id(node)] = len(numbered)

        def ref(leaf):
            if type(leaf) is SymbolicTensor:
                return {"tensor": [numbered[id(leaf.node)], leaf.index]}
            if isinstance(leaf, (np.ndarray, Tensor)):
                raise TypeError(
                    "a functional model whose layer calls take arrays as arguments cannot be "
                    "saved; pass them through an Input instead"
                )
            return leaf

        return {
            "layers": [
                {"class": type(la).__name__, "config": la.get_config()} for la in self.layers
            ],
            "inputs": map_structure(ref, self.input_structure),
            "calls": [
                {
                    "layer": index[id(n.layer)],
                    "x": map_structure(ref, n.x),
                    "args": map_structure(ref, list(n.args)),
                    "kwargs": map_structure(ref, n.kwargs),
                }
                for n in self.nodes
            ],
            "outputs": map_structure(ref, self.output_structure),
        }


def rebuild(config: dict):
    """(inputs, outputs) recorded anew from `get_config()`'s graph: the layers are made from
    their configs and called again in the saved order (which builds them)."""
    layers = [layer_class(c["class"]).from_config(c["config"]) for c in config["layers"]]
    made = [la.output for la in layers if isinstance(la, InputLayer)]

    def tensor(leaf):
        if isinstance(leaf, dict) and set(leaf) == {"tensor"}:
            n, i = leaf["tensor"]
            return flatten(made[n])[i]
        return leaf

    def decode(structure):
        if isinstance(structure, dict) and set(structure) == {"tensor"}:
            return tensor(structure)
        if isinstance(structure, list):
            return [decode(s) for s in structure]
        if isinstance(structure, dict):
            return {k: decode(v) for k, v in structure.items()}
        return structure

    inputs = decode(config["inputs"])
    for call in config["calls"]:
        out = layers[call["layer"]](
            decode(call["x"]), *decode(call["args"]), **decode(call["kwargs"])
        )
        made.append(out)
    return inputs, decode(config["outputs"])


def unique_names(layers, who):
    """Rename default-named layers that repeat (dense, dense_1, ...); two layers the user
    named alike are an error, as in Keras."""
    taken = set()
    for layer in layers:
        if layer.name in taken:
            if not layer.default_name:
                raise ValueError(
                    f"{who}: two layers are named {layer.name!r}; names in a model must be "
                    "unique (pass name= to tell them apart)"
                )
            base, n = layer.name, 1
            while f"{base}_{n}" in taken:
                n += 1
            layer.name = f"{base}_{n}"
        taken.add(layer.name)


def _output_names(outputs) -> list:
    """Each output's name: the layer that makes it (with _1, _2 ... for a layer's second and
    later outputs, or a layer that makes several)."""
    names = []
    for t in outputs:
        name = t.node.layer.name if t.index == 0 else f"{t.node.layer.name}_{t.index}"
        while name in names:
            name += "_1"
        names.append(name)
    return names


def _is_rows(data) -> bool:
    """True for a list of numbers/rows (one array written as a list), not a list of arrays."""
    return not isinstance(data[0], (np.ndarray, Tensor, list, tuple))


def _describe(data) -> str:
    if isinstance(data, (list, tuple)):
        return f"a {type(data).__name__} of {len(data)}"
    return f"one {type(data).__name__} of shape {np.shape(data)}"


# ----- data of several inputs or outputs ---------------------------------------------------
class ArrayTree:
    """A list or dict of arrays with one sample axis, sliced together: `len(tree)`,
    `tree[index]` (a slice or index array, applied to every array) — what fit, evaluate and
    predict need from their x or y."""

    def __init__(self, structure):
        self.structure = structure
        sizes = {len(a) for a in flatten(structure)}
        if len(sizes) > 1:
            lengths = map_structure(len, structure)
            raise ValueError(
                f"every input and output needs the same number of samples, got {lengths}"
            )

    def __len__(self):
        return len(flatten(self.structure)[0])

    def __getitem__(self, index):
        return ArrayTree(map_structure(lambda a: a[index], self.structure))


def arrays_of(data, what: str, count: int):
    """One checked array, or an ArrayTree when a model with `count` inputs (outputs) is given
    a list or dict of arrays."""
    if isinstance(data, ArrayTree):
        return data
    several = isinstance(data, dict) or (
        count > 1 and isinstance(data, (list, tuple)) and len(data) == count and not _is_rows(data)
    )
    if not several:
        return check.numeric_array(data, what)
    if isinstance(data, dict):
        return ArrayTree({k: check.numeric_array(v, f"{what}[{k!r}]") for k, v in data.items()})
    return ArrayTree([check.numeric_array(v, f"{what}[{i}]") for i, v in enumerate(data)])


def values_of(out):
    """The arrays of a model's output(s): an array, or a list/dict of them."""
    return map_structure(lambda t: t.data if isinstance(t, Tensor) else np.asarray(t), out)


def concatenate(batches):
    """The per-batch outputs of predict joined along the sample axis, output by output."""
    if not batches:
        return np.zeros((0,))
    first = batches[0]
    if isinstance(first, dict):
        return {k: np.concatenate([b[k] for b in batches]) for k in first}
    if isinstance(first, (list, tuple)):
        return [np.concatenate([b[i] for b in batches]) for i in range(len(first))]
    return np.concatenate(batches)


# ----- losses and metrics of several outputs -----------------------------------------------
class MultiOutputLoss:
    """loss = Σ_k w_k · loss_k(output_k, target_k) over the outputs that have a loss; `loss`
    and `loss_weights` are lists in output order or dicts by output name (Keras)."""

    def __init__(self, losses, weights, names, get_loss):
        self.names = list(names)
        self.losses = self._per_output(losses, "loss", None)
        self.losses = [None if spec is None else get_loss(spec) for spec in self.losses]
        if all(loss is None for loss in self.losses):
            raise ValueError(f"compile: no output has a loss; the outputs are {self.names}")
        self.weights = [float(w) for w in self._per_output(weights, "loss_weights", 1.0)]

    def _per_output(self, spec, what, default):
        if isinstance(spec, dict):
            unknown = [k for k in spec if k not in self.names]
            if unknown:
                raise ValueError(
                    f"compile: {what} names {unknown}, which are not outputs; the outputs are "
                    f"{self.names}"
                )
            return [spec.get(name, default) for name in self.names]
        if isinstance(spec, (list, tuple)):
            if len(spec) != len(self.names):
                raise ValueError(
                    f"compile: {what} has {len(spec)} entries for {len(self.names)} outputs "
                    f"({', '.join(self.names)})"
                )
            return list(spec)
        if spec is None:
            return [default] * len(self.names)
        return [spec] * len(self.names)  # one loss (or weight) for every output

    def __call__(self, y_true, y_pred, sample_weight=None):
        """Keras's order, like every loss: (targets, the model's outputs)."""
        if _holds_tensors(y_true) and not _holds_tensors(y_pred):
            y_true, y_pred = y_pred, y_true  # a caller still on the old (y_pred, y_true) order
        preds = flatten(y_pred)
        targets = _arranged(y_true, self.names)
        total = None
        for loss, w, pred, target in zip(self.losses, self.weights, preds, targets):
            if loss is None:
                continue
            term = (
                loss(target, pred) if sample_weight is None else loss(target, pred, sample_weight)
            )
            term = term * w if w != 1.0 else term
            total = term if total is None else total + term
        return total

    def get_config(self) -> dict:
        return {
            "outputs": [
                None
                if loss is None
                else {"class": type(loss).__name__, "config": loss.get_config()}
                for loss in self.losses
            ],
            "weights": self.weights,
            "names": self.names,
        }


def output_metrics(specs, loss: MultiOutputLoss, get_list) -> list:
    """One OutputMetric per (output, metric): `specs` is a dict by output name, a list of
    lists in output order, or one list for every output."""
    names = loss.names
    if isinstance(specs, dict):
        per = loss._per_output(specs, "metrics", [])
    elif len(specs) == len(names) and all(isinstance(s, (list, tuple)) for s in specs):
        per = specs
    else:
        per = [specs] * len(names)
    out = []
    for i, (spec, out_loss) in enumerate(zip(per, loss.losses)):
        spec = [spec] if isinstance(spec, str) or not isinstance(spec, (list, tuple)) else spec
        out += [OutputMetric(m, i, names) for m in get_list(list(spec), out_loss)]
    return out


class OutputMetric:
    """A metric of one output of a model with several: reads that output and its target, and
    reports as "<output name>_<metric name>" (Keras)."""

    def __init__(self, metric, position, names):
        self.metric, self.position, self.names = metric, position, names
        self.name = f"{names[position]}_{metric.name}"

    def update(self, y_true, y_pred):
        self.metric.update(
            _arranged(y_true, self.names)[self.position], flatten(y_pred)[self.position]
        )

    def result(self):
        return self.metric.result()

    def reset(self):
        self.metric.reset()


def _holds_tensors(structure) -> bool:
    if isinstance(structure, ArrayTree):
        return False
    return any(isinstance(leaf, Tensor) for leaf in flatten(structure))


def _arranged(y, names) -> list:
    if isinstance(y, ArrayTree):
        y = y.structure
    if isinstance(y, dict):
        return [y[name] for name in names]
    return list(y)
