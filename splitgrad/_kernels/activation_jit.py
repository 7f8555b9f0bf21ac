"""ReLU's and the sigmoid's array passes compiled for the CPU at hand (numba), one pass each.

NumPy makes a pass over memory per operation, and a new array for most: the sigmoid of the
`Sigmoid` op is seven passes, its gradient g·z·(1 − z) three, a Dense layer's bias + ReLU two
(and np.maximum's NaN-propagating loop does not vectorise here). Inside a training step these
arrays have just been written by a GEMM on both cores, so each pass also fetches them from the
other core's cache: on the W4 autoencoder (128 × 784 outputs) the sigmoid took 0.11 ms alone
and 0.23 ms inside the step. Users: a convolution's GEMM output (ops/conv.py), a stack of Dense
layers (ops/linalg.py, DenseChain), and ReLU's and the sigmoid's array math
(ops/activations.py).

Every kernel makes the same float operations, in the same order and in the arrays' own dtype,
as the NumPy lines it replaces (`one` is passed in as 1 of that dtype: a Python 1.0 would turn
float32 arithmetic into float64), with no fused multiply-adds, so the bits are the same; the
NumPy lines stay as the fallback. Imported lazily through compiled.py.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)
_u = np.uintp  # unsigned indices: no negative-index wraparound to check


@_jit
def bias_relu(out, b, add_bias, relu):
    """In place on a (rows, C) GEMM output: out = max(out + b, 0) in one pass, the same bits as
    `out += b` then `np.maximum(out, 0, out=out)` (a NaN stays NaN, −0 becomes +0), and 5x
    faster than that np.maximum alone."""
    rows, c = out.shape
    of = out.reshape(-1)
    for r in range(rows):
        o = _u(r * c)
        for ch in range(c):
            v = of[o + _u(ch)] + b[ch] if add_bias else of[o + _u(ch)]
            if relu:
                v = v if (v > 0 or np.isnan(v)) else 0.0
            of[o + _u(ch)] = v


@_jit
def relu_mask(g, out, dst):
    """dst = g · (out > 0) elementwise over flat arrays: ReLU's backward, the same bits as
    multiplying by the boolean mask (g·0 keeps g's sign and NaN). dst may be g."""
    for k in range(g.size):
        dst[_u(k)] = g[_u(k)] * (1.0 if out[_u(k)] > 0 else 0.0)


@_jit
def sigmoid_from_exp(a, e, one):
    """The end of activations.sigmoid_array over flat arrays, in place on e = e^−|a|:
    σ(a) = 1 / (1 + e) where a ≥ 0 and e / (1 + e) where a < 0 (a NaN stays NaN)."""
    for k in range(a.size):
        ek = e[_u(k)]
        e[_u(k)] = (one if a[_u(k)] >= 0 else ek) / (ek + one)


@_jit
def sigmoid_output_grad(g, z, one, dst):
    """dst = g · z · (1 − z) over flat arrays: the sigmoid's input gradient from its output."""
    for k in range(g.size):
        zk = z[_u(k)]
        dst[_u(k)] = g[_u(k)] * zk * (one - zk)
