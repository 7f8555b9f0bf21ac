"""PyTorch's state dicts for splitgrad layers: `state_dict()` gives {dotted name: array} of
every weight (BatchNorm's moving statistics included) and `load_state_dict(d, strict=True)`
copies them back, checking every name and shape before it assigns anything.

The names are the checkpoint's ("layers.0.kernel", "hidden.bias"), not torch's ("0.weight"),
and a Dense kernel is (in, out), the transpose of torch's Linear weight; splitgrad.interop
converts whole PyTorch state dicts.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..tensor import Tensor


class NamedParameters(dict):
    """{name: Parameter} that iterates over (name, Parameter) pairs, so both the PyTorch loop
    `for name, p in model.named_parameters()` and dict use (`.items()`, `[name]`) work."""

    def __iter__(self):
        return iter(self.items())


def state_dict(layer) -> OrderedDict:
    return OrderedDict((k, p.data.copy()) for k, p in layer.named_weights().items())


def load_state_dict(layer, arrays, strict=True):
    """Copy `arrays` ({name: array or tensor}) into `layer`'s weights of the same names; a
    shape mismatch names the weight and its layer, and with `strict` missing and unexpected
    names are an error too. Returns (missing names, unexpected names)."""
    weights = layer.named_weights()
    missing = [k for k in weights if k not in arrays]
    unexpected = [k for k in arrays if k not in weights]
    who = f"{type(layer).__name__} {layer.name!r}"
    if strict and (missing or unexpected):
        raise KeyError(
            f"{who}: load_state_dict found missing keys {missing} and unexpected keys "
            f"{unexpected}; the model has {list(weights)}. Pass strict=False to load only the "
            "names that match."
        )
    owners = dict(_owners(layer))
    checked = {}
    for key, p in weights.items():
        if key not in arrays:
            continue
        a = arrays[key]
        if hasattr(a, "detach"):  # a torch tensor
            a = a.detach().cpu().numpy()
        a = np.asarray(a.data if isinstance(a, Tensor) else a)
        if a.shape != p.shape:
            owner = owners.get(key.rsplit(".", 1)[0] if "." in key else "", layer)
            raise ValueError(
                f"{who}: weight {key!r} of layer {owner.name!r} ({type(owner).__name__}) has "
                f"shape {p.shape}, the state_dict gives {a.shape}"
            )
        checked[key] = a
    for key, a in checked.items():
        weights[key].data[...] = a
    return missing, unexpected


def _owners(layer, prefix=""):
    """(dotted path, layer) of every layer inside `layer`."""
    for key, child in layer.sublayers():
        yield prefix + key, child
        yield from _owners(child, prefix + key + ".")
