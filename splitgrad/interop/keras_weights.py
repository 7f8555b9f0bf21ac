"""Load a Keras 3 weights file (`model.save_weights("m.weights.h5")`, or the weights inside a
`model.save("m.keras")` archive) into a splitgrad model of the same architecture. Needs h5py
(`pip install splitgrad[keras]`), not Keras.

The file. Keras 3 writes one HDF5 group per layer, `<address>/vars/0, 1, ...`, holding the
layer's variables in the order it created them (trainable first). The address is not the layer's
name: Keras walks the model, putting the layers of a Sequential or functional model under
`layers/<class>` numbered per class (`layers/dense`, `layers/dense_1`, ...), a subclassed
model's layers under their attribute names, nested models under their own address, and a
recurrent layer's variables under `<address>/cell`. splitgrad walks its own model the same way
(Sequential ↔ Sequential, the attributes of a subclassed Model ↔ those of a keras.Model) and
reads each built layer from its address, checking every shape.

Layouts (Keras → splitgrad): Dense kernel (in, out), Conv2D kernel (kh, kw, in, out) and
Conv2DTranspose kernel (kh, kw, out, in) are splitgrad's already, and Flatten is (H, W, C) in
both. BatchNormalization: gamma, beta, moving_mean, moving_variance. Embedding: embeddings.
Recurrent: kernel → W_ih, recurrent_kernel → W_hh, bias → b_ih (b_hh = 0). LSTM gates i|f|c|o
are PyTorch's i|f|g|o. GRU gates z|r|h are reordered to r|z|n, and reset_after=True's bias
(2, 3·units) gives b_ih (row 0, input) and b_hh (row 1, recurrent); a reset_after=False GRU
computes another function and is refused.

What the file cannot tell: BatchNormalization's epsilon and momentum (splitgrad's defaults are
Keras's, 1e-3 and 0.99: set them to the Keras model's), activations, strides and padding. Keras
updates moving_variance with the biased batch variance, splitgrad with the unbiased one
(PyTorch's), so the two drift apart slightly if training goes on.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from ..layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from ._matching import (
    SUPPORTED,
    ForeignWeightsError,
    LoadReport,
    Mismatch,
    expect,
    finish,
    mismatch_error,
    skip,
    units_of,
    unsupported_error,
)

_FRAMEWORK = "Keras"
_ADVICE = (
    "The Keras model differs from the splitgrad one here: build the splitgrad model with the "
    "same layers, sizes and order, or pass strict=False to load only the layers that match."
)
_KERAS_CLASS = {"MaxPool2D": "max_pooling2d", "AvgPool2D": "average_pooling2d"}


def load_keras_weights(model, path, strict=True) -> LoadReport:
    """Copy the weights of a Keras 3 `.weights.h5` (or `.keras`) file into the built `model`;
    returns a LoadReport. strict=False loads the layers that fit, leaves the others, and warns
    about what was left (missing_keys, unexpected_keys)."""
    stored = _read(path)
    units = units_of(model)
    addresses = _addresses(model, units)
    report, todo, used, skipped = LoadReport(), [], set(), []
    for unit in units:
        if not isinstance(unit.layer, SUPPORTED):
            if strict:
                raise unsupported_error(unit, _FRAMEWORK)
            skip(report, skipped, unit)
            continue
        address = addresses[id(unit.layer)]
        try:
            pairs, keys, owners = _convert(unit, address, stored)
        except Mismatch as m:
            if strict:
                raise _error(unit, m, address, stored) from None
            skip(report, skipped, unit)
            continue
        used.update(owners)
        todo.append((unit, pairs, keys))
    for owner, arrays in stored.items():
        if owner not in used:
            report.unexpected_keys.extend(f"{owner}/vars/{i}" for i in range(len(arrays)))
    return finish(report, strict, str(path), _FRAMEWORK, todo, skipped)


# ----- reading ---------------------------------------------------------------------------
def _read(path):
    """{layer address: [arrays in vars order]} of every group that holds variables (the
    optimizer's are left out)."""
    path = Path(path)
    if path.name.endswith(".weights.json"):
        raise ForeignWeightsError(
            f"{path}: a sharded Keras weights file; save it again without max_shard_size "
            "(model.save_weights('m.weights.h5')) and load that."
        )
    if not path.is_file():
        raise ForeignWeightsError(
            f"{path}: no such file. Save the Keras weights with model.save_weights(path) "
            "(a name ending in .weights.h5) or the model with model.save('m.keras')."
        )
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "reading Keras weights needs h5py: pip install 'splitgrad[keras]'"
        ) from None
    source = path
    if zipfile.is_zipfile(path):  # a .keras archive: config, metadata and the weights file
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise ForeignWeightsError(
                    f"{path}: a zip archive without model.weights.h5, so not a Keras 3 "
                    f".keras file (it holds {archive.namelist()[:5]})."
                )
            source = io.BytesIO(archive.read("model.weights.h5"))
    try:
        h5 = h5py.File(source, "r")
    except OSError as exc:
        torch = (
            " (a PyTorch file? use load_torch_state_dict)" if path.suffix == ".safetensors" else ""
        )
        raise ForeignWeightsError(
            f"{path}: not an HDF5 file{torch} ({exc}). Save the Keras weights with "
            "model.save_weights('m.weights.h5')."
        ) from None
    with h5:
        if "layer_names" in h5.attrs or "model_weights" in h5:
            raise ForeignWeightsError(
                f"{path}: a Keras 2 (tf.keras) HDF5 file, whose layout differs. Load it in "
                "Keras 3 and save it again with model.save_weights('m.weights.h5')."
            )
        return _var_groups(h5, path)


def _var_groups(h5, path):
    import h5py

    found = {}

    def visit(name, obj):
        if not isinstance(obj, h5py.Group) or name.rpartition("/")[2] != "vars":
            return
        owner = name[: -len("vars")].rstrip("/")
        if owner == "optimizer" or owner.startswith("optimizer/"):
            return
        names = [k for k, v in obj.items() if isinstance(v, h5py.Dataset)]
        if not names:
            return
        if sorted(names, key=_as_int) != [str(i) for i in range(len(names))]:
            raise ForeignWeightsError(
                f"{path}: group {name!r} holds {sorted(names)}; a Keras 3 weights file "
                "numbers each layer's variables 0, 1, 2, ..."
            )
        arrays = []
        for i in range(len(names)):
            ds = obj[str(i)]
            if ds.attrs.get("dtype") == "bfloat16":
                raise ForeignWeightsError(
                    f"{path}: {name}/{i} is bfloat16, which NumPy cannot hold. Save the Keras "
                    "model in float32 (keras.config.set_dtype_policy('float32')) and load that."
                )
            arrays.append(np.asarray(ds[()]))
        found[owner] = arrays

    h5.visititems(visit)
    return found


def _as_int(text):
    return (0, int(text)) if text.isdigit() else (1, 0)


# ----- Keras's addresses -------------------------------------------------------------------
def _addresses(model, units):
    """{id(layer): Keras's address} for every unit, walking the model as Keras's saver does
    (keras/src/saving/saving_lib.py: _save_state, _walk_saveable, _save_container_state)."""
    wanted = {id(u.layer) for u in units}
    out, seen = {}, set()

    def visit(layer, address):
        if id(layer) in seen:  # Keras saves a layer reached twice only the first time
            return
        seen.add(id(layer))
        if id(layer) in wanted:
            out[id(layer)] = address
            return
        for attr, child in _children(layer):
            where = f"{address}/{attr}" if address else attr
            if isinstance(child, list):
                counts = {}
                for item in child:  # numbered per class; items already saved still count
                    base = _keras_snake(item)
                    n = counts[base] = counts.get(base, -1) + 1
                    visit(item, f"{where}/{base}" if n == 0 else f"{where}/{base}_{n}")
            else:
                visit(child, where)

    visit(model, "")
    return out


def _children(layer):
    """(attribute, layer or list) in the order Keras visits them: a model's `layers` list first
    for Sequential and functional models; else sorted by name, `_private` ones last, with a
    subclassed model's `layers` (all its direct layers, in tracking order) among them."""
    attrs, every = {}, []
    for key, child in layer.sublayers():
        attr, _, index = key.partition(".")
        if index:
            attrs.setdefault(attr, []).append(child)
        else:
            attrs[attr] = child
        every.append(child)
    first = []
    if isinstance(attrs.get("layers"), list):
        first = [("layers", attrs.pop("layers"))]
    elif _is_a(layer, "Model"):
        attrs["layers"] = every
    rest = sorted(attrs.items(), key=lambda kv: ("~" + kv[0]) if kv[0][0] == "_" else kv[0])
    return first + rest


def _is_a(obj, class_name):
    return any(c.__name__ == class_name for c in type(obj).__mro__)


def _keras_snake(layer):
    """Keras's name for the class of a layer: keras.src.utils.naming.to_snake_case."""
    name = type(layer).__name__
    if name in _KERAS_CLASS:
        return _KERAS_CLASS[name]
    if name == "Model":  # a splitgrad functional model is a keras Functional
        return "functional"
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ----- layouts -----------------------------------------------------------------------------
class _Vars:
    """The variables of one Keras layer, taken by index with their shapes checked."""

    def __init__(self, owner, stored):
        self.owner, self.arrays, self.used = owner, stored.get(owner), set()
        if self.arrays is None:
            raise Mismatch(f"{owner}/vars", None, None, "absent")

    def key(self, i):
        return f"{self.owner}/vars/{i}"

    def count(self):
        return len(self.arrays)

    def take(self, i, shape, what):
        self.used.add(i)
        array = self.arrays[i] if i < len(self.arrays) else None
        return expect(self.key(i), array, shape, what)

    def rest(self):
        for i, array in enumerate(self.arrays):
            if i not in self.used:
                raise Mismatch(self.key(i), None, tuple(array.shape), "not used by this layer")


def _convert(unit, address, stored):
    """([(weight name, array)], [file keys], [addresses read]) for one layer, or Mismatch."""
    layer, out, owners = unit.layer, [], []
    if isinstance(layer, Bidirectional):
        parts = [
            (layer.forward_layer, f"{address}/forward_layer/cell", "forward_layer."),
            (layer.backward_layer, f"{address}/backward_layer/cell", "backward_layer."),
        ]
    elif isinstance(layer, (SimpleRNN, LSTM, GRU)):
        parts = [(layer, f"{address}/cell", "")]
    else:
        parts = [(layer, address, "")]
    for sub, owner, prefix in parts:
        v = _Vars(owner, stored)
        if isinstance(sub, (SimpleRNN, LSTM, GRU)):
            taken = _recurrent(sub, v)
        else:
            taken = _plain(sub, v)
        v.rest()
        out += [(prefix + name, value, key) for name, value, key in taken]
        owners.append(owner)
    return [(n, a) for n, a, _ in out], [k for _, _, k in out], owners


def _plain(layer, v):
    """Dense, Conv2D(Transpose), Embedding, BatchNormalization: Keras creates the variables in
    splitgrad's order (kernel, bias; gamma, beta, moving_mean, moving_variance)."""
    names = [n for n in layer.named_weights() if "." not in n]
    order = ["kernel", "bias", "embeddings", "gamma", "beta", "moving_mean", "moving_variance"]
    names.sort(key=order.index)
    return [(n, v.take(i, getattr(layer, n).shape, n), v.key(i)) for i, n in enumerate(names)]


def _recurrent(layer, v):
    g, u = layer.gates, layer.units
    fin = layer.w_ih.shape[0]
    kernel = v.take(0, (fin, g * u), "kernel (input, gates·units)")
    recurrent = v.take(1, (u, g * u), "recurrent_kernel (units, gates·units)")
    b_ih = b_hh = np.zeros(g * u)  # use_bias=False
    bias_key = b_hh_key = "(use_bias=False: zeros)"
    if v.count() > 2 and isinstance(layer, GRU):
        note = "reset_after=True's (2, 3·units); a reset_after=False GRU computes another "
        note += "function: build the Keras GRU with reset_after=True (the default)"
        bias = v.take(2, (2, g * u), note)
        b_ih, b_hh = bias[0], bias[1]
        bias_key = b_hh_key = v.key(2)
    elif v.count() > 2:
        b_ih = v.take(2, (g * u,), "bias (gates·units)")
        bias_key = v.key(2)
        b_hh_key = "(Keras has one bias: zeros)"  # b_ih + b_hh is what the cell adds
    if isinstance(layer, GRU):
        kernel, recurrent, b_ih, b_hh = _rzn(kernel), _rzn(recurrent), _rzn(b_ih), _rzn(b_hh)
    return [
        ("w_ih", kernel, v.key(0)),
        ("w_hh", recurrent, v.key(1)),
        ("b_ih", b_ih, bias_key),
        ("b_hh", b_hh, b_hh_key),
    ]


def _rzn(a):
    """Keras's GRU gate blocks z|r|h on the last axis → PyTorch's (splitgrad's) r|z|n."""
    z, r, h = np.split(a, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


# ----- errors ------------------------------------------------------------------------------
def _error(unit, m, address, stored):
    if m.note == "absent":
        entries = [
            f"{owner} {[tuple(a.shape) for a in arrays]}" for owner, arrays in stored.items()
        ]
        listing = ", ".join(entries[:20]) + (
            f", ... {len(entries) - 20} more" if len(entries) > 20 else ""
        )
        return ForeignWeightsError(
            f"{unit.describe()} is at Keras address {address!r}, but the file has no "
            f"{m.key!r}. The file's layers with weights: {listing or 'none'}. Keras numbers "
            "the layers of a Sequential per class (layers/dense, layers/dense_1, ...) and "
            "puts a subclassed model's layers under their attribute names: build the "
            "splitgrad model the same way (a Sequential for a Sequential, the same attribute "
            "names for a subclassed model)."
        )
    return mismatch_error(unit, m, _FRAMEWORK, _ADVICE)
