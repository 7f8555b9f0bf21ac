"""The LSTM's time steps compiled (numba): backward, the elementwise work between two products
with W_hhᵀ in one pass instead of about twenty small NumPy calls; forward, the work around the
two tanh calls in two passes instead of nine calls.

On the W3b workload (LSTM 256, 16 sequences per thread) each time step's arrays are only
16 × 1024 floats, so the NumPy version paid its per-call cost (a few µs) more than it
computed: the backward time loop took about 9 ms of an 85 ms training step. Every element goes
through the same float operations in the same order as the NumPy path in ops/recurrent.py (the
tanh calls stay NumPy's, no fused multiply-adds), so both give the same bits; the NumPy path
stays as the fallback. Imported lazily through compiled.py.
"""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lstm_step_backward(z, c_prev, tanh_c, dy, drec, dc, dh, dz, one, zero):
    """One step back through c_t = f·c_{t−1} + i·g, h_t = o·tanh(c_t), gates i|f|g|o.

    z: the step's activated gates (rows, 4U); c_prev = c_{t−1}; tanh_c = tanh(c_t); dy: the
    output gradient at t; drec: the gradient from step t+1 through W_hh. In place: dc (carried
    back, becomes dc_{t−1}); writes dh = dy + drec and dz, the gradient of the pre-activation
    gates: with the activation's derivative from its value y (σ: y − y², tanh: 1 − y²),
    di = σ'·g·dc, df = σ'·c_{t−1}·dc, dg = tanh'·i·dc, do = σ'·tanh c·dh, where
    dc = dc + dh·(1 − tanh²c)·o. `one` and `zero` are 1 and 0 in the arrays' dtype (a
    Python 1 would turn float32 arithmetic into float64).
    """
    rows, width = z.shape
    u = width // 4
    for r in range(rows):
        for k in range(u):
            zi, zf, zg, zo = z[r, k], z[r, u + k], z[r, 2 * u + k], z[r, 3 * u + k]
            tc = tanh_c[r, k]
            d = dy[r, k] + drec[r, k]
            dh[r, k] = d
            dt = (one - tc * tc) * zo
            dcv = dc[r, k] + d * dt
            dz[r, k] = (((one - zi) * zi + zero) * zg) * dcv
            dz[r, u + k] = (((one - zf) * zf + zero) * c_prev[r, k]) * dcv
            dz[r, 2 * u + k] = (((zero - zg) * zg + one) * zi) * dcv
            dz[r, 3 * u + k] = (((one - zo) * zo + zero) * tc) * d
            dc[r, k] = dcv * zf


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lstm_gates_in(z, rec, scale):
    """Forward, before the gates' tanh: z = (z + rec)·scale (rec = h_{t−1}·W_hh)."""
    rows, width = z.shape
    for r in range(rows):
        for k in range(width):
            z[r, k] = (z[r, k] + rec[r, k]) * scale[k]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lstm_cell(z, scale, shift, c_prev, c):
    """Forward, after the gates' tanh: z = z·scale + shift (σ from tanh for i, f, o), then
    c_t = f·c_{t−1} + i·g. (tanh(c_t) and h_t = o·tanh(c_t) stay NumPy calls: NumPy's tanh is
    vectorised, numba's calls the C library once per element.)"""
    rows, width = z.shape
    u = width // 4
    for r in range(rows):
        for k in range(width):
            z[r, k] = z[r, k] * scale[k] + shift[k]
        for k in range(u):
            c[r, k] = z[r, u + k] * c_prev[r, k] + z[r, k] * z[r, 2 * u + k]
