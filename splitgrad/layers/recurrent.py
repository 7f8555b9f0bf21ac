"""Recurrent layers: SimpleRNN, LSTM, GRU (one fused primitive per call) and Bidirectional.

Inputs are (batch, time, features). Equations, gate orders and initialisation match PyTorch
(docs/semantics.md); weights are stored as W_ih (features, G·units), W_hh (units, G·units), b_ih
and b_hh. `torch_state_dict()` / `load_torch_state_dict()` convert to and from PyTorch's layout
(weight_ih_l0 is (G·units, features)).

States: `return_state=True` returns (output, h) or, for LSTM, (output, h, c); `initial_state=`
takes them back (Tensors or arrays), so a long sequence can be fed in chunks, detaching the
carried state for truncated backpropagation through time.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .._kernels.workspace import Workspace
from ..ops import recurrent as rnn_ops
from ..tensor import Tensor
from .layer import Layer, layer_class, register


class _Recurrent(Layer):
    """Shared parts of SimpleRNN, LSTM and GRU: weights, state handling, output selection."""

    gates = 1
    num_states = 1
    wants_own_threads = True  # its time loops run on splitgrad's own threads
    op = None

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        name=None,
        dtype="float32",
    ):
        super().__init__(name=name, dtype=dtype)
        if int(units) != units or int(units) <= 0:
            raise ValueError(
                f"{type(self).__name__}: units must be a positive integer, got {units!r}"
            )
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self._workspace = Workspace()

    def build(self, input_shape):
        if len(input_shape) != 3:  # checked here too, so a bad first call builds nothing
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) expects 3-D input "
                f"(batch, time, features), got shape {tuple(input_shape)}."
            )
        features, width = input_shape[-1], self.gates * self.units
        shapes = {
            "w_ih": (features, width),
            "w_hh": (self.units, width),
            "b_ih": (width,),
            "b_hh": (width,),
        }
        for key, shape in shapes.items():
            # PyTorch draws every recurrent weight and bias from U(±1/sqrt(units)).
            self.add_weight(key, shape, "torch_uniform", fan_in=self.units, fan_out=width)

    def op_options(self):
        return {}

    def call(self, x, initial_state=None):
        self.expect_ndim(x, 3, "(batch, time, features)")
        self.expect_last_dim(x, self.w_ih.shape[0])
        batch, steps = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) got a sequence of "
                f"length 0 (input shape {tuple(x.shape)}); give at least 1 step."
            )
        states = self._initial_states(batch, initial_state)
        out = self.op.apply(
            x,
            self.w_ih,
            self.w_hh,
            self.b_ih,
            self.b_hh,
            *states,
            reverse=self.go_backwards,
            workspace=self._workspace,
            cell_out=self.return_state,
            **self.op_options(),
        )
        if self.return_sequences:
            y = out if out.shape[1] == steps else out[:, :steps]
        else:
            y = out[:, steps - 1]
        if not self.return_state:
            return y
        final = [out[:, steps - 1]] + ([out[:, steps]] if self.num_states == 2 else [])
        return (y, *final)

    def _initial_states(self, batch, initial_state):
        if initial_state is None:
            return [np.zeros((batch, self.units), self.dtype)] * self.num_states
        given = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(given) != self.num_states:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) expects {self.num_states} initial "
                f"state(s) ({', '.join(self._state_names())}), got {len(given)}. Pass them as "
                "a list, as returned with return_state=True (without the output)."
            )
        out = []
        for name, s in zip(self._state_names(), given):
            if isinstance(s, Tensor):
                s = s.astype(self.dtype) if s.dtype != self.dtype else s
            else:
                s = np.asarray(s, dtype=self.dtype)
            if tuple(s.shape) != (batch, self.units):
                raise ValueError(
                    f"layer {self.name!r} ({type(self).__name__}) expects initial state {name} "
                    f"of shape (batch, units) = {(batch, self.units)}, got {tuple(s.shape)}. "
                    "Use the state returned for a batch of the same size."
                )
            out.append(s)
        return out

    def _state_names(self):
        return ["h", "c"][: self.num_states]

    # ----- PyTorch layout ---------------------------------------------------------------
    def torch_state_dict(self, suffix=""):
        """Weights as NumPy arrays under PyTorch's names and layout (weight_ih_l0 is W_ih^T)."""
        return {
            f"weight_ih_l0{suffix}": self.w_ih.data.T.copy(),
            f"weight_hh_l0{suffix}": self.w_hh.data.T.copy(),
            f"bias_ih_l0{suffix}": self.b_ih.data.copy(),
            f"bias_hh_l0{suffix}": self.b_hh.data.copy(),
        }

    def load_torch_state_dict(self, state, suffix=""):
        """Copy weights from a PyTorch RNN/LSTM/GRU state dict (arrays or torch tensors)."""
        arrays = {
            k: _numpy(state[f"{k}_l0{suffix}"])
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
        if not self.built:
            self.input_shape = (None, None, arrays["weight_ih"].shape[1])
            self.build(self.input_shape)
            self.built = True
        pairs = (
            ("w_ih", arrays["weight_ih"].T),
            ("w_hh", arrays["weight_hh"].T),
            ("b_ih", arrays["bias_ih"]),
            ("b_hh", arrays["bias_hh"]),
        )
        for key, value in pairs:
            param = getattr(self, key)
            if value.shape != param.shape:
                raise ValueError(
                    f"layer {self.name!r} ({type(self).__name__}): the PyTorch weight for {key} "
                    f"has shape {value.T.shape}, expected {param.shape[::-1]} (PyTorch layout). "
                    "Check units, the input size and the layer type."
                )
            param.data[...] = value

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
        }


@register
class SimpleRNN(_Recurrent):
    """h_t = activation(x_t·W_ih + b_ih + h_{t−1}·W_hh + b_hh), activation "tanh" or "relu"."""

    op = rnn_ops.SimpleRNNSeq

    def __init__(
        self,
        units,
        activation="tanh",
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        name=None,
        dtype="float32",
    ):
        super().__init__(units, return_sequences, return_state, go_backwards, name, dtype)
        if activation not in ("tanh", "relu"):
            raise ValueError(
                f"SimpleRNN: activation must be 'tanh' or 'relu' (PyTorch's "
                f"choices), got {activation!r}"
            )
        self.activation = activation

    def op_options(self):
        return {"activation": self.activation}

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@register
class LSTM(_Recurrent):
    """Gates i|f|g|o (sigmoid, sigmoid, tanh, sigmoid): c_t = f·c_{t−1} + i·g, h_t = o·tanh(c_t)."""

    gates = 4
    num_states = 2
    op = rnn_ops.LSTMSeq


@register
class GRU(_Recurrent):
    """Gates r|z|n: n = tanh(x·W_in + b_in + r·(h·W_hn + b_hn)); h_t = (1 − z)·n + z·h_{t−1}."""

    gates = 3
    op = rnn_ops.GRUSeq


_MERGES = ("concat", "sum", "mul", "ave", None)


@register
class Bidirectional(Layer):
    """y = merge(forward(x), reverse_time(backward(x))): a copy of `layer` reads the sequence
    forwards, a go_backwards copy reads it backwards; merge_mode concat|sum|mul|ave|None."""

    def __init__(self, layer, merge_mode="concat", name=None, dtype=None):
        if isinstance(layer, dict):
            layer = layer_class(layer["class"]).from_config(layer["config"])
        if not isinstance(layer, _Recurrent):
            raise TypeError(
                f"Bidirectional wraps a SimpleRNN, LSTM or GRU layer, got {type(layer).__name__}"
            )
        if merge_mode not in _MERGES:
            raise ValueError(
                f"Bidirectional: merge_mode must be one of {_MERGES}, got {merge_mode!r}"
            )
        super().__init__(
            name=name or f"bidirectional_{layer.name}", dtype=dtype or layer.dtype.name
        )
        self.merge_mode = merge_mode
        config = {**layer.get_config(), "dtype": self.dtype.name}
        self.layer_class_name = type(layer).__name__
        self.layer_config = layer.get_config()
        self.forward_layer = type(layer).from_config({**config, "name": f"forward_{layer.name}"})
        self.backward_layer = type(layer).from_config(
            {**config, "name": f"backward_{layer.name}", "go_backwards": not config["go_backwards"]}
        )

    def build(self, input_shape):
        for sub in (self.forward_layer, self.backward_layer):
            sub.dtype = self.dtype

    def call(self, x, initial_state=None):
        fw_state = bw_state = None
        if initial_state is not None:
            states = list(initial_state)
            n = self.forward_layer.num_states
            if len(states) != 2 * n:
                raise ValueError(
                    f"layer {self.name!r} (Bidirectional) expects {2 * n} initial states "
                    f"(forward then backward), got {len(states)}."
                )
            fw_state, bw_state = states[:n], states[n:]
        fw = self.forward_layer(x, initial_state=fw_state)
        bw = self.backward_layer(x, initial_state=bw_state)
        fw_states = bw_states = ()
        if self.forward_layer.return_state:
            fw, fw_states = fw[0], tuple(fw[1:])
            bw, bw_states = bw[0], tuple(bw[1:])
        if self.forward_layer.return_sequences:
            bw = bw[:, ::-1]  # back into input time order
        y = self._merge(fw, bw)
        return (y, *fw_states, *bw_states) if fw_states else y

    def _merge(self, fw, bw):
        if self.merge_mode == "concat":
            return ops.concatenate([fw, bw], axis=-1)
        if self.merge_mode == "sum":
            return fw + bw
        if self.merge_mode == "mul":
            return fw * bw
        if self.merge_mode == "ave":
            return (fw + bw) * 0.5
        return [fw, bw]

    def torch_state_dict(self):
        """Both directions in PyTorch's bidirectional layout (backward keys end in _reverse)."""
        return {
            **self.forward_layer.torch_state_dict(),
            **self.backward_layer.torch_state_dict("_reverse"),
        }

    def load_torch_state_dict(self, state):
        self.forward_layer.load_torch_state_dict(state)
        self.backward_layer.load_torch_state_dict(state, "_reverse")
        self.built = True

    def get_config(self):
        return {
            **super().get_config(),
            "merge_mode": self.merge_mode,
            "layer": {"class": self.layer_class_name, "config": self.layer_config},
        }


def _numpy(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)
