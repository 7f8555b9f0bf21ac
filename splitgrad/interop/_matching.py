"""What the PyTorch and Keras weight loaders share: the model's weighted layers, the checks on
each foreign array, the assignment, the report and the wording of every error.

A *unit* is one layer that owns weights (Dense, Conv2D, BatchNormalization, Embedding, a
recurrent layer), or a Bidirectional wrapper taken whole; layers without weights (activations,
pools, Dropout, Flatten) and containers (Sequential, a subclassed Model) only lead to units.
Loading never changes a model's shapes: every array is checked against the built layer first,
and nothing is written until the whole file has been matched.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..layers.conv import Conv2D, Conv2DTranspose
from ..layers.core import Dense, Flatten, Reshape
from ..layers.embedding import Embedding
from ..layers.normalization import BatchNormalization
from ..layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN

# The classes the loaders know how to fill, most specific first (isinstance picks the first).
SUPPORTED = (
    Conv2DTranspose,
    Conv2D,
    Dense,
    BatchNormalization,
    Embedding,
    SimpleRNN,
    LSTM,
    GRU,
    Bidirectional,
)


class ForeignWeightsError(ValueError):
    """A weights file from another framework does not fit the model (or cannot be read)."""


class Mismatch(Exception):
    """One foreign array that does not fit; the loaders turn it into a ForeignWeightsError once
    they know which layer it was meant for (or keep it while trying other candidates)."""

    def __init__(self, key, expected, found, note=""):
        super().__init__(key)
        self.key, self.expected, self.found, self.note = key, expected, found, note


@dataclass
class Unit:
    """One weighted layer: its dotted path in the model, the layer, and (for a Dense that reads
    a Flatten of images) the (height, width, channels) that were flattened before it."""

    path: str
    layer: object
    flat_hwc: tuple | None = None

    def describe(self) -> str:
        where = f", at {self.path!r}" if self.path and self.path != self.layer.name else ""
        return f"layer {self.layer.name!r} ({type(self.layer).__name__}{where})"


def units_of(model) -> list:
    """The weighted layers of a built model, in registration order (depth first)."""
    if not getattr(model, "built", False):
        raise ForeignWeightsError(
            f"model {model.name!r} is not built yet, so its layers do not know their input "
            "sizes. Call it on one sample batch first (model(x[:1]) or model.predict(x[:1])), "
            "then load the weights."
        )
    out, flat = [], [None]

    def visit(layer, path):
        if isinstance(layer, Flatten):
            shape = layer.input_shape
            flat[0] = tuple(shape[1:]) if layer.built and shape and len(shape) == 4 else None
            return
        if isinstance(layer, Reshape):
            flat[0] = None
            return
        own = [k for k in layer.named_weights() if "." not in k]
        plain = isinstance(layer, SUPPORTED) and not isinstance(layer, Bidirectional)
        if plain and (not layer.built or not own):
            raise ForeignWeightsError(
                f"{Unit(path, layer).describe()} has not been built (it was never called), "
                "so it has no weights to fill. Call the model on a sample batch that passes "
                "through every layer, then load the weights."
            )
        if own or isinstance(layer, Bidirectional):
            hwc = flat[0]
            fits = isinstance(layer, Dense) and hwc and layer.kernel.shape[0] == math.prod(hwc)
            out.append(Unit(path, layer, hwc if fits else None))
            flat[0] = None
            return
        for key, child in layer.sublayers():
            visit(child, f"{path}.{key}" if path else key)

    visit(model, "")
    return out


def unsupported_error(unit, framework) -> ForeignWeightsError:
    """The error for a layer with weights that neither loader knows how to fill."""
    names = ", ".join(c.__name__ for c in SUPPORTED)
    return ForeignWeightsError(
        f"{unit.describe()} has weights, but splitgrad does not know how {framework} "
        f"stores them; the loaders fill {names}. Load the others with strict=False, then set "
        "this layer's weights yourself with layer.set_weights([...])."
    )


def expect(key, array, shape, note=""):
    """`array` (from the file, under `key`) if it exists and has `shape`; else a Mismatch."""
    shape = tuple(int(s) for s in shape)
    if array is None:
        raise Mismatch(key, shape, None, note)
    if tuple(array.shape) != shape:
        raise Mismatch(key, shape, tuple(array.shape), note)
    return array


def mismatch_error(unit, m: Mismatch, framework, advice) -> ForeignWeightsError:
    """The one message for an array that does not fit: layer, key, expected, found, fix."""
    note = f" ({m.note})" if m.note else ""
    if m.found is None:
        what = f"needs {framework} weight {m.key!r} of shape {m.expected}{note}, which is absent"
    elif m.expected is None:
        what = f"has no place for {framework} weight {m.key!r} of shape {m.found}{note}"
    else:
        what = (
            f"cannot take {framework} weight {m.key!r}: expected shape {m.expected}{note}, "
            f"found {m.found}"
        )
    return ForeignWeightsError(f"{unit.describe()} {what}. {advice}")


def assign(unit, pairs):
    """Write [(weight name inside the layer, array)] into the layer, cast to its dtype."""
    weights = unit.layer.named_weights()
    for name, value in pairs:
        param = weights[name]
        value = np.asarray(value)
        if value.shape != param.shape:  # a converter bug, not a user mistake
            raise AssertionError(f"{unit.path}.{name}: {value.shape} vs {param.shape}")
        param.data[...] = value.astype(param.dtype, copy=False)


@dataclass
class LoadReport:
    """What a load did: `loaded` [(splitgrad weight path, source key)], `missing_keys` (the
    splitgrad weights left as they were) and `unexpected_keys` (source keys not used), named
    like the result of PyTorch's `load_state_dict`."""

    loaded: list = field(default_factory=list)
    missing_keys: list = field(default_factory=list)
    unexpected_keys: list = field(default_factory=list)

    def __str__(self):
        lines = [f"loaded {len(self.loaded)} arrays"]
        if self.missing_keys:
            lines.append(f"not in the file (left unchanged): {', '.join(self.missing_keys)}")
        if self.unexpected_keys:
            lines.append(f"in the file but unused: {', '.join(self.unexpected_keys)}")
        return "; ".join(lines)


def finish(report, strict, source, framework, todo, skipped):
    """Apply `todo` [(unit, pairs, keys)] unless strict and something did not match (`skipped`
    units, report.unexpected_keys); warn about what was left when not strict."""
    if strict and (skipped or report.unexpected_keys):
        parts = []
        if skipped:
            names = ", ".join(unit.describe() for unit in skipped)
            parts.append(f"nothing in the file for {names}")
        if report.unexpected_keys:
            parts.append(f"{framework} weights with no layer to go to: {report.unexpected_keys}")
        raise ForeignWeightsError(
            f"{source}: {'; '.join(parts)}. Build the splitgrad model with the same weighted "
            f"layers as the {framework} one, or pass strict=False to load the layers that "
            "match and leave the rest."
        )
    for unit, pairs, keys in todo:
        assign(unit, pairs)
        report.loaded.extend(zip([f"{unit.path}.{n}" for n, _ in pairs], keys))
    if report.missing_keys or report.unexpected_keys:
        warnings.warn(f"{source}: {report}", stacklevel=3)
    return report


def skip(report, skipped, unit):
    """Record a unit left as it was: its weights go to report.missing_keys."""
    skipped.append(unit)
    report.missing_keys.extend(f"{unit.path}.{name}" for name in unit.layer.named_weights())


def natural_key(text: str):
    """Sort key that compares the numbers inside names as numbers ("2" < "10", "fc2" < "fc10")."""
    return [
        tuple((0, int(run), "") if run.isdigit() else (1, 0, run) for run in _runs(part))
        for part in text.split(".")
    ]


def numbered_apart(a: str, b: str) -> bool:
    """True when dotted names `a` and `b` first differ only in a number ("0" vs "2", "fc1" vs
    "fc2"): their sorted order is then the order the model numbered them in."""
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            skeleton = re.sub(r"\d+", "#", x)
            return "#" in skeleton and skeleton == re.sub(r"\d+", "#", y)
    return True


def _runs(part):
    return [r for r in re.split(r"(\d+)", part) if r] or [""]
