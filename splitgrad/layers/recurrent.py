"""Recurrent layers: SimpleRNN, LSTM, GRU (one fused primitive per call) and Bidirectional.

Inputs are (batch, time, features). Equations, gate orders and initialisation match PyTorch
(docs/semantics.md); weights are stored as W_ih (features, G·units), W_hh (units, G·units), b_ih
and b_hh. `torch_state_dict()` / `load_torch_state_dict()` convert to and from PyTorch's layout
(weight_ih_l0 is (G·units, features)).

States: `return_state=True` returns (output, h) or, for LSTM, (output, h, c); `initial_state=`
takes them back (Tensors or arrays), so a long sequence can be fed in chunks, detaching the
carried state for truncated backpropagation through time.

`stateful=True` does that carrying itself (Keras 3): the final state of row i of one batch is
the initial state of row i of the next, as a constant (no gradient flows into the previous
batch: truncated BPTT), so every batch must have the same size until `reset_states()` (alias
`reset_state()`), which zeroes the state; the next batch, of any size, then starts from zeros.
The first batch after the layer is made starts from zeros too. The carried state is not a
weight: it is not in `get_weights()`, `state_dict()` or checkpoints (nor in Keras 3's weight
files), so a loaded model starts every sequence fresh; `layer.states` shows it (None while
fresh). An explicit `initial_state=` wins over the carried state for that batch.

Per-example gradients (DP-SGD, layers/per_example.py): the weights enter every step as
x_t·W_ih + b_ih and h_{t−1}·W_hh + b_hh, two linear sites whose positions are the time steps;
while recording, the fused op hands their inputs and δ to the recorder from its backward.

Keras's constructor spellings `kernel_initializer=`, `recurrent_initializer=` and
`bias_initializer=` are taken (the default stays PyTorch's U(±1/sqrt(units)) for all four
tensors); LSTM and GRU take `activation="tanh"` and `recurrent_activation="sigmoid"`, the only
values PyTorch's equations have.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .._kernels.workspace import Workspace
from ..ops import recurrent as rnn_ops
from ..tensor import Tensor
from . import init as initializers
from . import per_example
from .layer import Layer, layer_class, register

_TORCH = "torch_uniform"  # PyTorch's default for every recurrent weight and bias


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
        stateful=False,
        kernel_initializer=_TORCH,
        recurrent_initializer=_TORCH,
        bias_initializer=_TORCH,
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
        self.stateful = bool(stateful)
        given = (kernel_initializer, recurrent_initializer, bias_initializer, bias_initializer)
        for init in given:
            initializers.get(init)  # an unknown name fails here, not at the first call
        self.initializers = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), given))
        self._states = None  # the carried state when stateful: [h] or [h, c] arrays, or None
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
            init = self.initializers[key]
            # PyTorch draws every recurrent weight and bias from U(±1/sqrt(units)); Keras's
            # initialisers see the kernel's own fans, (features or units, G·units).
            fan_in = self.units if init == _TORCH or len(shape) == 1 else shape[0]
            self.add_weight(key, shape, init, fan_in=fan_in, fan_out=width)

    def op_options(self):
        return {}

    def call(self, x, initial_state=None):
        self.expect_ndim(x, 3, "(batch, time, features)")
        self.expect_last_dim(x, self.w_ih.shape[0])
        return self._run(x, self.w_ih, x.shape[0], x.shape[1], initial_state)

    def call_projected(self, table, ids):
        """The layer's output for input rows e[ids] of an embedding table e, given
        table = e·W_ih (layers/fusion.py): each step looks its projection up by id."""
        return self._run(table, None, ids.shape[0], ids.shape[1], None, ids=ids)

    def _run(self, x, w_ih, batch, steps, initial_state, **projected):
        if steps == 0:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) got a sequence of "
                f"length 0 (input shape {tuple(x.shape)}); give at least 1 step."
            )
        if self.stateful:
            self._check_batch(batch)
        if initial_state is None and self._states is not None:
            states = self._states  # arrays, so no gradient flows into the previous batch
        else:
            states = self._initial_states(batch, initial_state)
        record = per_example.fused_sites(((self.w_ih, self.b_ih), (self.w_hh, self.b_hh)))
        out = self.op.apply(
            x,
            w_ih,
            self.w_hh,
            self.b_ih,
            self.b_hh,
            *states,
            reverse=self.go_backwards,
            workspace=self._workspace,
            cell_out=self.return_state or self.stateful,
            record=record,
            **projected,
            **self.op_options(),
        )
        if self.stateful:
            # Copies: the op's output buffer is reused by the next call (its workspace).
            self._states = [np.array(out.data[:, steps - 1])]
            if self.num_states == 2:
                self._states.append(np.array(out.data[:, steps]))
        if self.return_sequences:
            y = out if out.shape[1] == steps else out[:, :steps]
        else:
            y = out[:, steps - 1]
        if not self.return_state:
            return y
        final = [out[:, steps - 1]] + ([out[:, steps]] if self.num_states == 2 else [])
        return (y, *final)

    # ----- stateful=True ----------------------------------------------------------------
    def _check_batch(self, batch):
        if self._states is None or self._states[0].shape[0] == batch:
            return
        expected = self._states[0].shape[0]
        raise ValueError(
            f"layer {self.name!r} ({type(self).__name__}) is stateful and carries the state "
            f"of {expected} sequences from the previous batch, but got a batch of {batch}. "
            f"Row i of each batch continues row i of the one before, so the batch size must "
            f"stay {expected}: give batches of {expected} (with fit, a batch_size that "
            "divides the data and shuffle=False), call reset_states() on the layer or the "
            "model before a batch of another size, or make the layer with stateful=False."
        )

    @property
    def states(self):
        """Copies of the carried state ([h] or, for LSTM, [h, c], each (batch, units)), or
        None while it is fresh (zeros) or the layer is not stateful."""
        return None if self._states is None else [s.copy() for s in self._states]

    def reset_state(self):
        """Zero the carried state (Keras 3): the next batch, of any size, starts from zeros.
        A no-op on a layer that is not stateful."""
        self._states = None

    def reset_states(self):
        """Keras 2's name for `reset_state()`."""
        self.reset_state()

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
            "stateful": self.stateful,
            "kernel_initializer": self.initializers["w_ih"],
            "recurrent_initializer": self.initializers["w_hh"],
            "bias_initializer": self.initializers["b_ih"],
        }


def _fixed(layer, argument, value, only):
    """Refuse a Keras activation argument whose value PyTorch's equations do not have."""
    if value != only:
        raise ValueError(
            f"{type(layer).__name__}: {argument} must be {only!r} (the one PyTorch's "
            f"equations use, which splitgrad follows), got {value!r}"
        )


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
        stateful=False,
        kernel_initializer=_TORCH,
        recurrent_initializer=_TORCH,
        bias_initializer=_TORCH,
        name=None,
        dtype="float32",
    ):
        super().__init__(
            units,
            return_sequences,
            return_state,
            go_backwards,
            stateful,
            kernel_initializer,
            recurrent_initializer,
            bias_initializer,
            name,
            dtype,
        )
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

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", **options):
        super().__init__(units, **options)
        _fixed(self, "activation", activation, "tanh")
        _fixed(self, "recurrent_activation", recurrent_activation, "sigmoid")


@register
class GRU(_Recurrent):
    """Gates r|z|n: n = tanh(x·W_in + b_in + r·(h·W_hn + b_hn)); h_t = (1 − z)·n + z·h_{t−1}."""

    gates = 3
    op = rnn_ops.GRUSeq

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", **options):
        super().__init__(units, **options)
        _fixed(self, "activation", activation, "tanh")
        _fixed(self, "recurrent_activation", recurrent_activation, "sigmoid")


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

    @property
    def stateful(self):
        """True when the wrapped layer was made with stateful=True: both directions then
        carry their state from batch to batch (Keras 3)."""
        return self.forward_layer.stateful

    @property
    def states(self):
        """The forward then the backward carried states, or None while fresh."""
        fw, bw = self.forward_layer.states, self.backward_layer.states
        return None if fw is None or bw is None else fw + bw

    def reset_state(self):
        """Zero both directions' carried states. Like Keras 3, refused on a wrapper whose
        layer is not stateful."""
        if not self.stateful:
            raise AttributeError(
                f"layer {self.name!r} (Bidirectional): reset_state() needs a stateful layer "
                "inside; make the wrapped layer with stateful=True"
            )
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self):
        """Keras 2's name for `reset_state()`."""
        self.reset_state()

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
