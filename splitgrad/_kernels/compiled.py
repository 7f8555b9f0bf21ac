"""Access to the numba-compiled kernels, imported on first use.

Importing numba takes about 0.4 s, so nothing imports it with `import splitgrad`: an op asks
`image_kernels()` (an optimizer `optimizer_kernels()`) when it first runs. Where numba cannot be
imported (a platform without its wheels), that returns None and the op keeps its NumPy path,
which gives the same results.
`ENABLED = False` forces the NumPy path (the tests run both paths against PyTorch).
"""

from __future__ import annotations

import importlib

import numpy as np

ENABLED = True
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_loaded = {}


def image_kernels(dtype):
    """The `image_jit` module (max pooling, im2col, col2im) for float32/float64 arrays, else
    None."""
    return _kernels("image_jit", dtype)


def activation_kernels(dtype):
    """The `activation_jit` module (bias + ReLU, ReLU's mask, the sigmoid and its gradient)
    for float32/float64 arrays, else None."""
    return _kernels("activation_jit", dtype)


def conv_pool_kernels(dtype):
    """The `conv_pool_jit` module (a first conv + ReLU + 2×2 max pool in one pass), else None."""
    return _kernels("conv_pool_jit", dtype)


def optimizer_kernels(dtype):
    """The `optim_jit` module (Adam's update) for float32/float64 arrays, else None."""
    return _kernels("optim_jit", dtype)


def recurrent_kernels(dtype):
    """The `recurrent_jit` module (the LSTM's backward step) for float32/float64, else None."""
    return _kernels("recurrent_jit", dtype)


def embedding_kernels(dtype):
    """The `embedding_jit` module (the embedding's weight gradient), else None."""
    return _kernels("embedding_jit", dtype)


def _kernels(name, dtype):
    if not ENABLED or np.dtype(dtype) not in _DTYPES:
        return None
    if name not in _loaded:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ImportError:  # numba missing or broken here: the NumPy path stays correct
            module = None
        _loaded[name] = module
    return _loaded[name]
