"""`splitgrad export RUN_DIR [--out FILE] [--opset N]`: a saved model as an ONNX file.

Loads the run folder's model with splitgrad.checkpoint (a missing or damaged folder is the
checkpoint's own clear error), writes RUN_DIR/model.onnx (or --out), prints where and the
input and output shapes, and, when ONNX Runtime is installed, runs the file on random inputs
and prints the largest difference from the model's own `predict`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHECK_ROWS = 32  # random inputs the exported file is checked on


def load_run_model(run):
    """The model saved in the folder `run`, with the classes it may need registered first
    (the generative models and agents, and the recipe that made it)."""
    from .. import generative, recipes, rl  # noqa: F401 - importing registers their models
    from ..checkpoint import load_model, saved_extra

    name = saved_extra(run).get("recipe")
    if isinstance(name, str) and name in recipes.RECIPES:
        recipes.get(name)  # a recipe may define model classes of its own
    return load_model(run, compile=False)


def export_run(run, out=None, opset=None, check=True) -> dict:
    """Export the model saved in `run` to `out` (RUN/model.onnx); returns {"path", "inputs",
    "outputs" (described), "max_difference" (None unless checked), "checked_rows"}."""
    from .onnx_export import DEFAULT_OPSET, compare_with_runtime, export_onnx

    model = load_run_model(run)
    path = Path(out) if out else Path(run) / "model.onnx"
    export_onnx(model, path, opset=DEFAULT_OPSET if opset is None else opset)
    import onnx  # present: export_onnx needed it

    graph = onnx.load(str(path), load_external_data=False).graph
    result = {
        "path": str(path),
        "inputs": [_describe(info) for info in graph.input],
        "outputs": [_describe(info) for info in graph.output],
        "max_difference": None,
        "checked_rows": 0,
    }
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return result
        x = {info.name: _random_inputs(model, info) for info in graph.input}
        result["max_difference"] = compare_with_runtime(
            model, path, x if len(x) > 1 else next(iter(x.values()))
        )
        result["checked_rows"] = CHECK_ROWS
    return result


def _describe(info) -> str:
    """'input (batch, 28, 28, 1) float32' for a graph input or output."""
    dims = [d.dim_param or str(d.dim_value) for d in info.type.tensor_type.shape.dim]
    kind = "int64" if info.type.tensor_type.elem_type == 7 else "float32"
    return f"{info.name} ({', '.join(dims)}) {kind}"


def _random_inputs(model, info):
    """CHECK_ROWS random inputs of the graph's input shape (a free time axis: 16 steps):
    N(0, 1) values, or ids below the smallest Embedding table's size."""
    rng = np.random.default_rng(0)
    dims = [d.dim_value or 16 for d in info.type.tensor_type.shape.dim[1:]]
    shape = (CHECK_ROWS, *dims)
    if info.type.tensor_type.elem_type == 7:  # int64 ids
        rows = [p.shape[0] for k, p in model.named_weights().items() if k.endswith("embeddings")]
        return rng.integers(0, min(rows, default=1), size=shape)
    return rng.standard_normal(shape).astype(np.float32)


def _cmd_export(args):
    try:
        result = export_run(args.run, args.out, args.opset, check=not args.no_check)
    except ImportError as exc:  # the onnx extra is missing: a message, not a traceback
        raise ValueError(str(exc)) from None
    print(f"wrote {result['path']}")
    for line in result["inputs"]:
        print(f"  input  {line}")
    for line in result["outputs"]:
        print(f"  output {line}")
    if result["max_difference"] is not None:
        print(
            f"  ONNX Runtime on {result['checked_rows']} random inputs: largest difference "
            f"from predict {result['max_difference']:.2g}"
        )
    elif not args.no_check:
        print("  (install onnxruntime to check the file: pip install 'splitgrad[onnx]')")


def add_cli(subparsers):
    """Add `splitgrad export RUN_DIR [--out FILE] [--opset N] [--no-check]`."""
    p = subparsers.add_parser("export", help="write a saved model as an ONNX file")
    p.add_argument("run", help="a folder saved by `splitgrad train` or model.save")
    p.add_argument("--out", help="the ONNX file to write (RUN_DIR/model.onnx)")
    p.add_argument("--opset", type=int, help="ONNX operator set version (17)")
    p.add_argument("--no-check", action="store_true", help="skip running the file in ONNX Runtime")
    p.set_defaults(func=_cmd_export)
