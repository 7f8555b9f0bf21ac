"""Weight initialisers, by name. The defaults match PyTorch's layers (see docs/semantics.md).

Each initialiser is `f(shape, fan_in, fan_out, dtype, rng) -> ndarray`.
"""

from __future__ import annotations

import numpy as np

from ..random import get_rng


def torch_uniform(shape, fan_in, fan_out, dtype, rng):
    """U(±1/sqrt(fan_in)): PyTorch's default for Linear, Conv and recurrent weights and biases."""
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def glorot_uniform(shape, fan_in, fan_out, dtype, rng):
    """U(±sqrt(6/(fan_in+fan_out))): Keras's default (Xavier)."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def glorot_normal(shape, fan_in, fan_out, dtype, rng):
    """N(0, 2/(fan_in+fan_out))."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def he_normal(shape, fan_in, fan_out, dtype, rng):
    """N(0, 2/fan_in), for ReLU networks (Kaiming)."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(shape, fan_in, fan_out, dtype, rng):
    """U(±sqrt(6/fan_in))."""
    bound = np.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def normal(shape, fan_in, fan_out, dtype, rng):
    """N(0, 1): PyTorch's Embedding rows."""
    return rng.standard_normal(shape).astype(dtype)


def zeros(shape, fan_in, fan_out, dtype, rng):
    return np.zeros(shape, dtype=dtype)


def ones(shape, fan_in, fan_out, dtype, rng):
    return np.ones(shape, dtype=dtype)


INITIALIZERS = {
    "torch_uniform": torch_uniform,
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "normal": normal,
    "zeros": zeros,
    "ones": ones,
}


def get(name_or_fn):
    """Look up an initialiser by name (or pass a callable through)."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return INITIALIZERS[name_or_fn]
    except KeyError:
        raise ValueError(
            f"unknown initializer {name_or_fn!r}; choose one of {sorted(INITIALIZERS)}"
        ) from None


def initialize(name_or_fn, shape, fan_in, fan_out, dtype, rng=None):
    return get(name_or_fn)(tuple(shape), fan_in, fan_out, np.dtype(dtype), rng or get_rng())
