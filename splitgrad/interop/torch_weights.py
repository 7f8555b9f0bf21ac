"""Load a PyTorch `state_dict` into a splitgrad model of the same architecture.

On the PyTorch side:  safetensors.torch.save_file(torch_model.state_dict(), "model.safetensors")
In splitgrad:         load_torch_state_dict(model, "model.safetensors")   # torch not needed

Layouts (PyTorch → splitgrad):
    nn.Linear        weight (out, in) → Dense kernel (in, out) = weightᵀ; bias as is. A Dense
                     right after a Flatten of images also has its rows reordered: PyTorch
                     flattens (C, H, W), splitgrad (H, W, C), read from the Flatten's input.
    nn.Conv2d        weight (out, in, kh, kw) → Conv2D kernel (kh, kw, in, out)
    nn.ConvTranspose2d  weight (in, out, kh, kw) → Conv2DTranspose kernel (kh, kw, out, in)
    nn.BatchNorm1d/2d  weight, bias, running_mean, running_var → gamma, beta, moving_mean,
                     moving_variance (num_batches_tracked is not needed)
    nn.Embedding     weight → embeddings
    nn.RNN/LSTM/GRU  weight_ih_l0 (G·hidden, in) → W_ih = weight_ih_l0ᵀ, weight_hh_l0 → W_hh,
                     bias_ih_l0 → b_ih, bias_hh_l0 → b_hh. splitgrad's gate orders ARE
                     PyTorch's (LSTM i|f|g|o, GRU r|z|n), so no gate is moved. num_layers=k is
                     k stacked splitgrad layers; bidirectional=True is a Bidirectional layer.

Matching. The model must be built (called once on a sample batch). Its weighted layers, in
registration order, take the PyTorch modules (keys grouped by module path): first any module
whose path equals a layer's name (nn.Dense(..., name="fc")) or its attribute path in a subclassed
model ("encoder.fc"); then, in order, each layer takes the first remaining module whose keys and
shapes fit it. A dict keeps its order (pass `torch_model.state_dict()` itself: registration
order). A safetensors file stores its keys sorted by name, so modules are ordered by path with
numbers compared as numbers ("features.2" before "features.10"): exactly registration order for
nn.Sequential and ModuleList, and for names numbered like fc1, fc2. When two modules with
other names fit the same layer the file cannot say which came first, and loading stops and says
how to name them.

What the weights cannot tell: BatchNorm's epsilon (PyTorch 1e-5; splitgrad's default is Keras's
1e-3, so build BatchNormalization(epsilon=1e-5) — and momentum=0.9 for PyTorch's momentum=0.1),
SimpleRNN's nonlinearity, strides and padding. Build those like the PyTorch model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..layers.conv import Conv2D, Conv2DTranspose
from ..layers.core import Dense
from ..layers.embedding import Embedding
from ..layers.normalization import BatchNormalization
from ..layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from ._matching import (
    SUPPORTED,
    ForeignWeightsError,
    LoadReport,
    Mismatch,
    expect,
    finish,
    mismatch_error,
    natural_key,
    numbered_apart,
    skip,
    units_of,
    unsupported_error,
)

_FRAMEWORK = "PyTorch"
_ADVICE = (
    "The PyTorch model differs from the splitgrad one here: build the splitgrad model with the "
    "same weighted layers, sizes and order (a Dense for each nn.Linear, channels-last Conv2D "
    "for each nn.Conv2d, ...), or pass strict=False to load only the layers that match."
)
_IGNORED = {"num_batches_tracked"}  # BatchNorm's step counter: splitgrad's momentum needs none
_RNN_KEY = re.compile(r"^(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$")
_TORCH_RNN = {SimpleRNN: "nn.RNN", LSTM: "nn.LSTM", GRU: "nn.GRU"}
_SPLITGRAD_NAMES = {"kernel", "gamma", "moving_mean", "embeddings", "w_ih"}


def load_torch_state_dict(model, path_or_dict, strict=True) -> LoadReport:
    """Copy a PyTorch state_dict (a .safetensors file or a dict of arrays/tensors) into the
    built `model`; returns a LoadReport. strict=False loads the layers that fit, leaves the
    others, and warns about what was left (missing_keys, unexpected_keys)."""
    arrays, source, ordered = _read(path_or_dict)
    groups = _groups(arrays, ordered)
    units = units_of(model)
    report, todo, skipped = LoadReport(), [], []
    free = list(groups)
    named = _by_name(units, free)
    for unit in units:
        if not isinstance(unit.layer, SUPPORTED):
            if strict:
                raise unsupported_error(unit, _FRAMEWORK)
            skip(report, skipped, unit)
            continue
        group = named.get(id(unit))
        if group is not None:
            try:
                todo.append((unit, *_convert(unit, group)))
            except Mismatch as m:
                if strict:
                    raise mismatch_error(unit, m, _FRAMEWORK, _ADVICE) from None
                free.append(group)
                skip(report, skipped, unit)
            continue
        fits, first_miss = [], None
        for candidate in free:
            try:
                fits.append((candidate, _convert(unit, candidate)))
            except Mismatch as m:
                first_miss = first_miss or m
            if fits and ordered:  # a dict's order is PyTorch's: the first fit is the one
                break
        if not fits:
            if strict and first_miss is not None:
                raise mismatch_error(unit, first_miss, _FRAMEWORK, _ADVICE)
            skip(report, skipped, unit)
            continue
        if not ordered:
            _refuse_a_guess(unit, [g for g, _ in fits], source)
        group, converted = fits[0]
        free.remove(group)
        todo.append((unit, *converted))
    for group in free:
        report.unexpected_keys.extend(group.keys.values())
    return finish(report, strict, source, _FRAMEWORK, todo, skipped)


# ----- reading ---------------------------------------------------------------------------
def _read(path_or_dict):
    """({key: ndarray}, a description of the source, whether its order is PyTorch's)."""
    if isinstance(path_or_dict, Mapping):
        return {str(k): _numpy(k, v) for k, v in path_or_dict.items()}, "the state dict", True
    path = Path(path_or_dict)
    if not path.is_file():
        raise ForeignWeightsError(
            f"{path}: no such file. Save the PyTorch weights with safetensors: "
            "safetensors.torch.save_file(torch_model.state_dict(), path)."
        )
    from safetensors import safe_open

    arrays = {}
    try:
        with safe_open(str(path), framework="np") as f:
            names = f.keys()  # a safe_open handle is not iterable itself
            for key in names:
                if f.get_slice(key).get_dtype() == "BF16":
                    raise ForeignWeightsError(
                        f"{path}: tensor {key!r} is bfloat16, which NumPy cannot hold. Save "
                        "float32 copies: save_file({k: v.float() for k, v in "
                        "torch_model.state_dict().items()}, path)."
                    )
                arrays[key] = f.get_tensor(key)
    except ForeignWeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - the Rust reader raises its own error types
        keras = (
            " (a Keras file? use load_keras_weights)" if path.suffix in (".h5", ".keras") else ""
        )
        raise ForeignWeightsError(
            f"{path}: cannot be read as safetensors{keras} ({exc}). Save the PyTorch weights with "
            "safetensors.torch.save_file(torch_model.state_dict(), path); torch.save's "
            "pickle files are not read, because loading a pickle can run code."
        ) from None
    leaves = {k.rpartition(".")[2] for k in arrays}
    if leaves & _SPLITGRAD_NAMES and not leaves & {"weight", "running_mean", "weight_ih_l0"}:
        raise ForeignWeightsError(
            f"{path}: holds splitgrad's own weight names ({sorted(leaves & _SPLITGRAD_NAMES)}), "
            "not a PyTorch state_dict. Load a splitgrad checkpoint with "
            "model.load_weights(folder), giving the folder that holds this file."
        )
    return arrays, str(path), False


def _numpy(key, value):
    if hasattr(value, "detach"):  # a torch tensor; torch itself is never imported here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    value = np.asarray(value)
    if value.dtype.kind not in "fiub":
        raise ForeignWeightsError(
            f"the state dict's {key!r} holds {value.dtype} values, not numbers"
        )
    return value


@dataclass
class _Group:
    """The keys of one PyTorch module (one layer of a multi-layer RNN): {leaf: array}."""

    prefix: str
    index: int | None = None  # the l<k> of an RNN layer
    arrays: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)  # leaf → the full state_dict key

    def label(self):
        return self.prefix if self.index is None else f"{self.prefix} (layer {self.index})"


def _groups(arrays, ordered):
    groups = {}
    for key, array in arrays.items():
        prefix, _, leaf = key.rpartition(".")
        m = _RNN_KEY.match(leaf)
        index = int(m[3]) if m else None
        if m:
            leaf = f"{m[1]}_{m[2]}{m[4] or ''}"
        group = groups.setdefault((prefix, index), _Group(prefix, index))
        group.arrays[leaf], group.keys[leaf] = array, key
    out = list(groups.values())
    if not ordered:
        out.sort(key=lambda g: (natural_key(g.prefix), -1 if g.index is None else g.index))
    return out


# ----- matching ----------------------------------------------------------------------------
def _by_name(units, groups):
    """{id(unit): group} for layers named like a PyTorch module (explicit name= or an attribute
    path without list indices, which could coincide by accident)."""
    rnn_layers = {}
    for g in groups:
        rnn_layers[g.prefix] = rnn_layers.get(g.prefix, 0) + 1
    by_prefix = {g.prefix: g for g in groups if g.prefix and rnn_layers[g.prefix] == 1}
    out, taken = {}, set()
    for unit in units:
        names = [unit.layer.name]
        if not any(part.isdigit() for part in unit.path.split(".")):
            names.append(unit.path)
        for name in names:
            group = by_prefix.get(name)
            if group is not None and id(group) not in taken:
                out[id(unit)] = group
                taken.add(id(group))
                break
    for group in out.values():
        groups.remove(group)
    return out


def _refuse_a_guess(unit, fitting, source):
    """A sorted file cannot tell which of two equally fitting modules PyTorch registered first,
    unless their names differ only by a number."""
    first = fitting[0]
    for other in fitting[1:]:
        same_module = other.prefix == first.prefix
        if not same_module and not numbered_apart(first.prefix, other.prefix):
            raise ForeignWeightsError(
                f"{unit.describe()} fits both PyTorch modules {first.label()!r} and "
                f"{other.label()!r}, and {source} cannot say which comes first: a safetensors "
                "file stores its keys sorted by name, not in PyTorch's order. Name the "
                f"splitgrad layer like its PyTorch module (e.g. name={first.prefix!r}), or pass "
                "the state dict itself: load_torch_state_dict(model, torch_model.state_dict())."
            )


# ----- layouts -----------------------------------------------------------------------------
class _Reader:
    """Takes a module's arrays by leaf name, checking shapes; what is never taken is refused."""

    def __init__(self, group):
        self.group, self.used = group, []

    def key(self, leaf):
        g = self.group
        if leaf in g.keys:
            return g.keys[leaf]
        m = re.match(r"^(weight|bias)_(ih|hh)(_reverse)?$", leaf)
        if m and g.index is not None:
            leaf = f"{m[1]}_{m[2]}_l{g.index}{m[3] or ''}"
        return f"{g.prefix}.{leaf}" if g.prefix else leaf

    def has(self, leaf):
        return leaf in self.group.arrays

    def take(self, leaf, shape, note=""):
        self.used.append(leaf)
        return expect(self.key(leaf), self.group.arrays.get(leaf), shape, note)

    def rest(self):
        for leaf, array in self.group.arrays.items():
            if leaf not in self.used and leaf not in _IGNORED:
                raise Mismatch(self.key(leaf), None, tuple(array.shape), "not used by this layer")


def _convert(unit, group):
    """([(weight name, array)], [source key]) for one layer, or Mismatch."""
    r, layer = _Reader(group), unit.layer
    if isinstance(layer, Bidirectional):
        out = _recurrent(layer.forward_layer, r, "", "forward_layer.")
        out += _recurrent(layer.backward_layer, r, "_reverse", "backward_layer.")
    elif isinstance(layer, (SimpleRNN, LSTM, GRU)):
        out = _recurrent(layer, r, "", "")
    else:
        out = _LAYOUTS[next(c for c in _LAYOUTS if isinstance(layer, c))](unit, r)
    r.rest()
    return [(name, value) for name, value, _ in out], [key for _, _, key in out]


def _dense(unit, r):
    layer = unit.layer
    cin, units = layer.kernel.shape
    w = r.take("weight", (units, cin), f"nn.Linear({cin}, {units}) stores (out, in)")
    if unit.flat_hwc:  # rows are PyTorch's (C, H, W) flattening; splitgrad's is (H, W, C)
        h, wd, c = unit.flat_hwc
        w = w.reshape(units, c, h, wd).transpose(0, 2, 3, 1).reshape(units, cin)
    out = [("kernel", w.T, r.key("weight"))]
    if layer.use_bias:
        out.append(("bias", r.take("bias", (units,)), r.key("bias")))
    return out


def _conv(unit, r):
    layer = unit.layer
    kh, kw, a, b = layer.kernel.shape
    # Conv2d (out, in, kh, kw) and ConvTranspose2d (in, out, kh, kw) both map by (2, 3, 1, 0).
    note = (
        "nn.ConvTranspose2d stores (in, out, kh, kw)"
        if isinstance(layer, Conv2DTranspose)
        else "nn.Conv2d stores (out, in, kh, kw)"
    )
    w = r.take("weight", (b, a, kh, kw), note)
    out = [("kernel", w.transpose(2, 3, 1, 0), r.key("weight"))]
    if layer.use_bias:
        out.append(("bias", r.take("bias", (layer.filters,)), r.key("bias")))
    return out


def _batch_norm(unit, r):
    layer = unit.layer
    c = layer.moving_mean.shape[0]
    affine = "nn.BatchNorm(affine=False) has none: build BatchNormalization(scale=False)"
    out = []
    if layer.scale:
        out.append(("gamma", r.take("weight", (c,), affine), r.key("weight")))
    if layer.center:
        out.append(("beta", r.take("bias", (c,), affine), r.key("bias")))
    out.append(("moving_mean", r.take("running_mean", (c,)), r.key("running_mean")))
    out.append(("moving_variance", r.take("running_var", (c,)), r.key("running_var")))
    return out


def _embedding(unit, r):
    shape = unit.layer.embeddings.shape
    return [("embeddings", r.take("weight", shape, "(num_embeddings, dim)"), r.key("weight"))]


def _recurrent(layer, r, rev, prefix):
    g, u = layer.gates, layer.units
    fin = layer.w_ih.shape[0]
    kind = next(name for cls, name in _TORCH_RNN.items() if isinstance(layer, cls))
    note = f"{kind}({fin}, {u}) stores ({g}·hidden, input)"
    w_ih = r.take(f"weight_ih{rev}", (g * u, fin), note)
    w_hh = r.take(f"weight_hh{rev}", (g * u, u), f"{kind} stores ({g}·hidden, hidden)")
    out = [
        (prefix + "w_ih", w_ih.T, r.key(f"weight_ih{rev}")),
        (prefix + "w_hh", w_hh.T, r.key(f"weight_hh{rev}")),
    ]
    for leaf, name in ((f"bias_ih{rev}", "b_ih"), (f"bias_hh{rev}", "b_hh")):
        if r.has(f"bias_ih{rev}") or r.has(f"bias_hh{rev}"):
            out.append((prefix + name, r.take(leaf, (g * u,)), r.key(leaf)))
        else:  # bias=False in PyTorch: splitgrad's biases stay at zero
            out.append((prefix + name, np.zeros(g * u), "(bias=False: zeros)"))
    return out


_LAYOUTS = {
    Conv2DTranspose: _conv,
    Conv2D: _conv,
    Dense: _dense,
    BatchNormalization: _batch_norm,
    Embedding: _embedding,
}
