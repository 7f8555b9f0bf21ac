"""`model.summary()`: Keras's table of a model's layers.

    Model: "sequential"
    ______________________________________________________________________
     Layer (type)                  Output Shape               Param #
    ======================================================================
     dense (Dense)                 (None, 32)                   2,080
     dense_1 (Dense)               (None, 10)                     330
    ======================================================================
     Total params: 2,410 (9.41 KB)
     Trainable params: 2,410 (9.41 KB)
     Non-trainable params: 0 (0.00 B)

One row per direct sub-layer (`model.layers`), named as in the model (unique: dense,
dense_1, ...), with its output shape (None for the batch) and its parameter count. Frozen
layers' weights and BatchNorm's moving statistics count as non-trainable. A functional model
whose graph branches adds Keras's "Connected to" column.
"""

from __future__ import annotations

NOT_BUILT = (
    "This model has not yet been built. Build the model first by calling `build()` or by "
    "calling the model on a batch of data: model.build((None, 64)) for inputs of 64 "
    "features, or model(x) / model.fit(x, y) on data."
)


def summary_lines(model, line_length=None) -> list:
    """The lines `summary()` prints."""
    if not model.built:
        raise ValueError(f"model {model.name!r}: {NOT_BUILT}")
    functional = getattr(model, "_graph", None)
    connected = functional is not None and _branches(functional)
    rows = [_row(model, layer, functional, connected) for layer in model.layers]
    widths = [max(30, *(len(r[0]) + 2 for r in rows)), max(26, *(len(r[1]) + 2 for r in rows))]
    widths.append(12)
    if connected:
        widths.append(max(20, *(len(r[3]) + 2 for r in rows)))
    total = sum(widths) + 1 if line_length is None else int(line_length)
    heads = ["Layer (type)", "Output Shape", "Param #", "Connected to"][: len(widths)]
    lines = [f'Model: "{model.name}"', "_" * total, _join(heads, widths), "=" * total]
    for i, row in enumerate(rows):
        lines.append(_join(row, widths))
        lines.append("_" * total if i < len(rows) - 1 else "=" * total)
    if not rows:
        lines.append("=" * total)
    trainable, frozen = _counts(model.trainable_weights), _counts(model.non_trainable_weights)
    every = (trainable[0] + frozen[0], trainable[1] + frozen[1])
    lines += [
        f" Total params: {every[0]:,} ({_size(every[1])})",
        f" Trainable params: {trainable[0]:,} ({_size(trainable[1])})",
        f" Non-trainable params: {frozen[0]:,} ({_size(frozen[1])})",
    ]
    return lines


def _row(model, layer, functional, connected):
    name = f"{layer.name} ({type(layer).__name__})"
    shape = _shape_text(layer.output_shape if layer.built else None)
    params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
    row = [name, shape, params]
    if connected:
        row.append(_sources(functional, layer))
    return row


def _join(cells, widths) -> str:
    out = ""
    for i, (cell, width) in enumerate(zip(cells, widths)):
        out += (" " + cell).ljust(width) if i != 2 else cell.rjust(width - 2) + "  "
    return out.rstrip()


def _shape_text(shape) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {_shape_text(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, list) or (shape and isinstance(shape[0], (tuple, list))):
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    dims = ("None",) + tuple("None" if s is None else str(s) for s in shape[1:])
    return "(" + ", ".join(dims) + (",)" if len(dims) == 1 else ")")


def _branches(functional) -> bool:
    """True unless the graph is one chain (one input, each call reading one tensor)."""
    return len(functional.inputs) > 1 or any(len(n.inputs()) > 1 for n in functional.nodes)


def _sources(functional, layer) -> str:
    """The tensors `layer`'s calls read, as Keras writes them: name[call][output]."""
    calls = {}
    for node in functional.nodes:
        calls.setdefault(id(node.layer), []).append(node)
    out = []
    for node in calls.get(id(layer), []):
        for t in node.inputs():
            made = [n for n in calls.get(id(t.node.layer), []) if n is t.node]
            index = calls.get(id(t.node.layer), [t.node]).index(made[0]) if made else 0
            out.append(f"{t.node.layer.name}[{index}][{t.index}]")
    return ", ".join(out) if out else "-"


def _counts(weights) -> tuple:
    return sum(p.size for p in weights), sum(p.data.nbytes for p in weights)


def _size(nbytes) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return ""  # unreachable
