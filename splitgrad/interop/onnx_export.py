"""ONNX export: a model built from splitgrad's layers, as an ONNX file any runtime can run.

    from splitgrad.interop.onnx_export import export_onnx
    export_onnx(model, "model.onnx")                  # a built (trained, or called) model
    export_onnx(model, "model.onnx", sample=x[:1])    # built first from a sample batch

The graph computes what `model.predict` computes (inference mode: Dropout off, BatchNorm's
moving statistics), in float32, on the arrays `predict` takes: the input "input" is in
splitgrad's layout (NHWC images; int64 ids of shape (batch, time) for a model that starts with
an Embedding), the output is "output". The batch axis is free, and so is the time axis when
the input goes straight into an Embedding or a recurrent layer. A functional model's inputs
and outputs keep its names (`model.input_names`, `model.output_names`), and an axis its Input
leaves None stays free.

Needs the optional extra `pip install splitgrad[onnx]` (onnx; onnxruntime for
`compare_with_runtime`), imported only when called. The converters, one per layer class, are
in onnx_layers.py, onnx_recurrent.py and onnx_models.py; the graph builder and the converter
table in onnx_graph.py. `converter(cls)` adds one for a class of your own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tensor import no_grad
from . import onnx_layers, onnx_models, onnx_recurrent  # noqa: F401 - they register converters
from .onnx_graph import Graph, UnsupportedLayer, Value, converter, elem_type, supported

__all__ = [
    "DEFAULT_OPSET",
    "UnsupportedLayer",
    "Value",
    "compare_with_runtime",
    "converter",
    "export_onnx",
    "supported",
    "to_onnx",
]

DEFAULT_OPSET = 17  # ONNX Runtime 1.13 (2022) and later run it
MIN_OPSET = 13  # Squeeze/Unsqueeze/Slice with axes as inputs, Softmax over one axis
FREE_SIZE = 16  # the sample's size along an axis an Input leaves free (None)


def export_onnx(model, path, sample=None, opset=DEFAULT_OPSET) -> Path:
    """Write `model` as an ONNX file at `path` (checked by onnx.checker); returns the path.

    `sample`: a batch of inputs, needed only when the model is not built yet (it is built
    from it) or to export for another input size than the model was built with. `opset`: the
    ONNX operator set version (13 or later; 17 by default).
    """
    onnx = _onnx()
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(
            f"export_onnx: the folder {path.parent} does not exist; create it first or choose "
            "another path"
        )
    onnx.save_model(to_onnx(model, sample, opset), str(path))
    return path


def to_onnx(model, sample=None, opset=DEFAULT_OPSET):
    """The ONNX ModelProto of `model` (see `export_onnx`)."""
    onnx = _onnx()
    opset = _checked_opset(opset, onnx)
    specs = _input_specs(model, sample)
    g = Graph(opset)
    names = _names(model, "input_names", len(specs), "input")
    # Inputs start as float32; one that only Embeddings read becomes int64 (_int_ids_inputs).
    xs = [g.add_input(name, shape, "float32", free) for name, (shape, free) in zip(names, specs)]
    was = model.training
    model.eval()
    try:
        with no_grad():
            y = g.convert(model, xs[0] if len(xs) == 1 else xs)
    finally:
        model.train(was)
    return _model_proto(onnx, g, model, y if isinstance(y, list) else [y])


def compare_with_runtime(model, path, x, batch_size=256) -> float:
    """Run the ONNX file at `path` in ONNX Runtime (CPU) on inputs `x` (an array; a list or a
    dict by name for several inputs) and return the largest absolute difference from
    `model.predict(x)` over all outputs."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise ImportError(
            "checking an export needs ONNX Runtime: pip install 'splitgrad[onnx]'"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    specs = session.get_inputs()
    arrays = _in_order(x, [s.name for s in specs])
    feeds = [
        np.asarray(a).astype(np.int64 if s.type == "tensor(int64)" else np.float32)
        for a, s in zip(arrays, specs)
    ]
    rows = len(feeds[0])
    batches = [
        session.run(None, {s.name: f[i : i + batch_size] for s, f in zip(specs, feeds)})
        for i in range(0, rows, batch_size)
    ]
    got = [np.concatenate([b[k] for b in batches]) for k in range(len(session.get_outputs()))]
    want = model.predict(x, batch_size=batch_size)
    if isinstance(want, dict):  # a functional model's outputs, in their order
        want = list(want.values())
    want = want if isinstance(want, (list, tuple)) else [want]
    return max(
        (float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(got, want) if b.size),
        default=0.0,
    )


# ----- helpers -----------------------------------------------------------------------------
def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "ONNX export needs the onnx package: pip install 'splitgrad[onnx]'"
        ) from None
    return onnx


def _checked_opset(opset, onnx) -> int:
    newest = onnx.defs.onnx_opset_version()
    if (
        isinstance(opset, bool)
        or not isinstance(opset, (int, np.integer))
        or not (MIN_OPSET <= opset <= newest)
    ):
        raise ValueError(
            f"export_onnx: opset must be an int from {MIN_OPSET} to {newest} (this onnx "
            f"package's newest), got {opset!r}"
        )
    return int(opset)


def _names(model, attribute, count, default) -> list:
    """The model's input (output) names when it has `count` of them (a functional model's
    Input and output layer names), else "input"/"output" (numbered when several)."""
    names = list(getattr(model, attribute, None) or [])
    if len(names) == count and len(set(names)) == count:
        return names
    return [default] if count == 1 else [f"{default}_{i}" for i in range(count)]


def _in_order(data, names) -> list:
    """Inputs as a list in the order of `names`: one array, a list, or a dict by name."""
    if isinstance(data, dict):
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"the model's inputs are named {names}; the dict lacks {missing}")
        return [data[n] for n in names]
    if len(names) > 1:
        if not isinstance(data, (list, tuple)) or len(data) != len(names):
            raise ValueError(
                f"the model has {len(names)} inputs ({', '.join(names)}): give a list of "
                f"{len(names)} arrays or a dict by name"
            )
        return list(data)
    return [data]


def _input_specs(model, sample) -> list:
    """[(shape for a one-example batch, free axes)] for each input; the model is built
    from `sample` if it is not built yet. Free axes: the ones a functional model's Input
    leaves None (sized 16 in the sample batch)."""
    if sample is not None:
        names = list(getattr(model, "input_names", None) or ["input"])
        arrays = [np.asarray(a) for a in _in_order(sample, names)]
        if any(a.ndim < 1 or len(a) == 0 for a in arrays):
            raise ValueError(
                "export_onnx: sample must be a batch of at least one input, got arrays of "
                f"shapes {[a.shape for a in arrays]}"
            )
        if not model.built:
            was = model.training
            model.eval()
            try:
                with no_grad():
                    model(arrays[0][:1] if len(arrays) == 1 else [a[:1] for a in arrays])
            finally:
                model.train(was)
        return [((1, *a.shape[1:]), set()) for a in arrays]
    if not model.built or model.input_shape is None:
        raise ValueError(
            f"export_onnx: model {model.name!r} is not built yet, so its input shape is "
            "unknown; train it or call it on a batch first, or pass sample=a batch of inputs"
        )
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    return [
        (
            (1, *(FREE_SIZE if s is None else s for s in shape[1:])),
            {i for i, s in enumerate(shape) if i and s is None},
        )
        for shape in shapes
    ]


def _int_ids_inputs(g):
    """A float input read only by casts to int64 (Embedding's ids) becomes an int64 input, so
    the exported model takes the int64 ids that `predict` takes."""
    for k, x in enumerate(g.inputs):
        readers = [n for n in g.nodes if x.name in n.input]
        casts = [n for n in readers if n.op_type == "Cast"]
        if x.dtype == "int64" or not readers or len(casts) != len(readers):
            continue
        renamed = {n.output[0]: x.name for n in casts}
        for n in casts:
            g.nodes.remove(n)
        for n in g.nodes:
            for i, name in enumerate(n.input):
                if name in renamed:
                    n.input[i] = renamed[name]
        g.inputs[k] = type(x)(x.name, x.shape, "int64")


def _dims(g, x) -> list:
    """An input's declared shape: "batch" first, then its sizes, free axes named."""
    dims = ["batch", *x.shape[1:]]
    for axis in g.free_axes.get(x.name, ()):
        one = len(g.inputs) == 1 and axis == 1
        dims[axis] = "time" if one else f"{x.name}_axis{axis}"
    return dims


def _model_proto(onnx, g, model, ys):
    from onnx import helper

    from .. import __version__

    out_names = _names(model, "output_names", len(ys), "output")
    for y, name in zip(ys, out_names):
        g.nodes.append(helper.make_node("Identity", [y.name], [name]))
    _int_ids_inputs(g)
    inputs = [
        helper.make_tensor_value_info(x.name, elem_type(x.dtype), _dims(g, x)) for x in g.inputs
    ]
    graph = helper.make_graph(
        g.nodes,
        model.name,
        inputs,
        [helper.make_tensor_value_info(name, elem_type("float32"), None) for name in out_names],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", g.opset)]
    described = ", ".join(f"{x.name} {tuple(_dims(g, x))}" for x in g.inputs)
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True),
        producer_name="splitgrad",
        producer_version=__version__,
        doc_string=(
            f"{type(model).__name__} {model.name!r} exported by splitgrad: what predict gives "
            f"for inputs {described}, in splitgrad's layout (NHWC images)"
        ),
    )
    # Each output's shape as ONNX's shape inference tells it (a free batch or time axis stays
    # free), else the sample's with a free batch axis.
    inferred = onnx.shape_inference.infer_shapes(proto).graph.output
    for k, (y, name) in enumerate(zip(ys, out_names)):
        if inferred[k].type.tensor_type.HasField("shape"):
            proto.graph.output[k].CopyFrom(inferred[k])
        else:
            info = helper.make_tensor_value_info(name, 1, ["batch", *y.shape[1:]])
            proto.graph.output[k].CopyFrom(info)
    onnx.checker.check_model(proto, full_check=True)
    return proto
