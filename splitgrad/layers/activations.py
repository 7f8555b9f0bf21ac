"""Activation functions by name, as `Dense(..., activation="relu")` takes them."""

from __future__ import annotations

from .. import functional as F
from .. import ops

ACTIVATIONS = {
    None: F.linear_activation,
    "linear": F.linear_activation,
    "relu": ops.relu,
    "leaky_relu": ops.leaky_relu,
    "elu": ops.elu,
    "gelu": ops.gelu,
    "sigmoid": ops.sigmoid,
    "tanh": ops.tanh,
    "softplus": ops.softplus,
    "softmax": ops.softmax,
    "log_softmax": ops.log_softmax,
    "silu": F.silu,
    "swish": F.silu,
}


def get(name):
    """The activation function for `name` (None means identity); callables pass through."""
    if callable(name):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        names = sorted(k for k in ACTIVATIONS if k)
        raise ValueError(f"unknown activation {name!r}; choose one of {names}") from None


def name_of(fn_or_name):
    """The registry name of an activation, for configs."""
    if fn_or_name is None or isinstance(fn_or_name, str):
        return fn_or_name
    for key, fn in ACTIVATIONS.items():
        if fn is fn_or_name and key is not None:
            return key
    raise ValueError(f"activation {fn_or_name!r} is not a named one; it cannot be saved")
