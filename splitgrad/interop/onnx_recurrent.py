"""ONNX converters of SimpleRNN, LSTM, GRU and Bidirectional, on ONNX's RNN, LSTM and GRU ops.

The equations are the same (PyTorch's, docs/semantics.md); what differs is the layout:

    splitgrad (= PyTorch)                 ONNX
    W_ih (features, G·units)              W (1, G·units, features)    rows in ONNX's gate order
    W_hh (units, G·units)                 R (1, G·units, units)
    b_ih, b_hh (G·units each)             B (1, 2·G·units) = [b_ih, b_hh]
    LSTM gates i|f|g|o                    i|o|f|c
    GRU gates r|z|n                       z|r|h, linear_before_reset=1 (r multiplies
                                          h·W_hn + b_hn, as in PyTorch)
    input (batch, time, features)         X (time, batch, features)

go_backwards reads the sequence from its end and, like splitgrad, returns the outputs in the
order it made them (last input first): the input is reversed in time and run forwards.
"""

from __future__ import annotations

import numpy as np

from ..layers import recurrent
from .onnx_graph import UnsupportedLayer, Value, converter, sample_shape, unsupported_message

# For each layer class: ONNX op, and where ONNX's k-th gate block is in splitgrad's weights.
_OPS = {
    recurrent.SimpleRNN: ("RNN", [0]),
    recurrent.LSTM: ("LSTM", [0, 3, 1, 2]),  # i, o, f, c from i, f, g, o
    recurrent.GRU: ("GRU", [1, 0, 2]),  # z, r, h from r, z, n
}


def _gates(array, order, axis):
    """`array` with its gate blocks (equal parts along `axis`) put in ONNX's order."""
    blocks = np.split(array, len(order), axis=axis)
    return np.concatenate([blocks[i] for i in order], axis=axis)


def _check_options(g, layer):
    problem = None
    if layer.return_state:
        problem = "return_state=True (its extra outputs) is not exported; use return_state=False"
    elif getattr(layer, "stateful", False):
        problem = (
            "stateful=True carries state between calls, which an ONNX graph does not; export a "
            "copy built with stateful=False (same weights), which starts from zero states"
        )
    if problem:
        raise UnsupportedLayer(unsupported_message(layer, g.where(), problem))


@converter(recurrent.SimpleRNN, recurrent.LSTM, recurrent.GRU)
def recurrent_layer(g, layer, x: Value) -> Value:
    """(batch, time, features) → (batch, time, units) with return_sequences, else the last
    step's (batch, units)."""
    _check_options(g, layer)
    g.reads_sequence(x)
    out_shape = sample_shape(layer, x)
    op_type, order = next(v for cls, v in _OPS.items() if isinstance(layer, cls))
    u = layer.units
    w = _gates(layer.w_ih.data.T, order, 0)[None]
    r = _gates(layer.w_hh.data.T, order, 0)[None]
    b = np.concatenate([_gates(layer.b_ih.data, order, 0), _gates(layer.b_hh.data, order, 0)])
    seq = g.op("Transpose", [x.name], "time_major", perm=[1, 0, 2])
    if layer.go_backwards:
        seq = g.reverse(seq, 0)
    attrs = {"hidden_size": u}
    if op_type == "RNN":
        attrs["activations"] = [layer.activation.capitalize()]  # "Tanh" or "Relu"
    if op_type == "GRU":
        attrs["linear_before_reset"] = 1
    inputs = [seq, g.const(w, "W"), g.const(r, "R"), g.const(b[None], "B")]
    if layer.return_sequences:  # Y (time, 1, batch, units) → (batch, time, units)
        y = g.op(op_type, inputs, op_type.lower(), outputs=[True], **attrs)
        y = g.op("Transpose", [g.squeeze(y, [1])], "batch_major", perm=[1, 0, 2])
    else:  # Y_h (1, batch, units): the last step's state
        _, y_h = g.op(op_type, inputs, op_type.lower(), outputs=[False, True], **attrs)
        y = g.squeeze(y_h, [0])
    return Value(y, out_shape)


@converter(recurrent.Bidirectional)
def bidirectional(g, layer, x: Value) -> Value:
    """merge(forward(x), backward(x) put back in input time order)."""
    if layer.merge_mode is None:
        raise UnsupportedLayer(
            unsupported_message(
                layer, g.where(), "merge_mode=None gives two outputs; pick concat, sum, mul or ave"
            )
        )
    out_shape = sample_shape(layer, x)
    fw = g.convert(layer.forward_layer, x, "forward_layer")
    bw = g.convert(layer.backward_layer, x, "backward_layer")
    bw_name = g.reverse(bw.name, 1) if layer.forward_layer.return_sequences else bw.name
    if layer.merge_mode == "concat":
        y = g.op("Concat", [fw.name, bw_name], "concat", axis=-1)
    elif layer.merge_mode == "ave":
        y = g.op("Mul", [g.op("Add", [fw.name, bw_name]), g.const(0.5, "half")], "ave")
    else:
        y = g.op({"sum": "Add", "mul": "Mul"}[layer.merge_mode], [fw.name, bw_name])
    return Value(y, out_shape)
