"""A first convolution, its ReLU and a 2×2 max pool as one compiled pass each way (numba).

A network's first convolution sees few channels (1 for grayscale, 3 for RGB), so its GEMM is
thin (9 or 27 columns) and its output, four times the size of the pooled one, is written,
read back by the ReLU, read again by the pool, and in backward a gradient of that size is
written by the pool and read by the weight gradient's GEMM. Here the convolution is computed
two output rows at a time into a small buffer that stays in cache, and pooled from there:
only the pooled output (and which tap of each window won) reaches memory. Backward rebuilds
each window's gradient at its four taps and adds patch × gradient into the kernel's.

The kernel's sizes (kh, kw, c, co) are arguments, so one compiled version serves every shape.
For the backward pass `backward_for` compiles a version with them as constants instead, where
the batch slice is big enough to pay for it (a training batch): its loops over the taps and
channels then unroll, and it runs 3x faster (lab CNN, 32 images: 0.73 → 0.23 ms), adding in
the same order (the same bits on the project's machine). That costs ~2 s of compiling per
kernel shape, once per machine (numba caches it on disk). The forward pass gained nothing from
it (it got slower), so it has the one version.

Measured on the project's 2-core machine (lab CNN's first conv, 1 → 24 channels, 3×3, batch
64, float32, both threads, per training step): the conv, its ReLU and the pool went from
1.3 ms forward and 1.3 ms backward to 0.6 and 0.5 ms.

Window rules are max pooling's (pooling.py): the FIRST maximum in row-major order wins and a
NaN wins over numbers; relu(max(z)) = max(relu(z)), so pooling before the ReLU gives the same
output; a window whose output is not above 0 passes no gradient. Multiply-adds run in a fixed
order (fused into FMAs where the CPU has them, "contract"), so results are bitwise the same from
run to run; they round differently from the GEMM path, within float32's precision.
"""

from __future__ import annotations

import numba
import numpy as np

from .specialize import version

_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
SPECIALIZE_FROM = 1 << 16  # pooled outputs in one call; below, the one generic version runs


def backward_for(arrays, dims):
    """`backward` for these arrays (x, g, out, taps, gw, gb; all C-contiguous): the version
    with `dims` (kh, kw, c, co) as compile-time constants when the call is big, else the
    generic one. Either is called with the arrays and then the dims."""
    if arrays[2].size < SPECIALIZE_FROM:
        return backward
    return version(backward, (*arrays, *dims), set(range(len(arrays), len(arrays) + len(dims))))


@_jit
def forward(x, w, b, out, taps, kh, kw, c, co):
    """out[n, i, j, o] = relu(max over the 2×2 window at (2i, 2j) of z), z = x ⋆ w + b (valid,
    stride 1); taps[n, i, j, o] = the window's winning tap (row-major, 0-3)."""
    n = x.shape[0]
    ph, pw = out.shape[1], out.shape[2]
    wo = 2 * pw
    z = np.empty((2, wo, co), out.dtype)  # two conv output rows: one row of windows
    for s in range(n):
        for i in range(ph):
            for r in range(2):
                y = 2 * i + r
                for col in range(wo):
                    for o in range(co):
                        z[r, col, o] = b[o]
                for di in range(kh):
                    for dj in range(kw):
                        for ch in range(c):
                            for col in range(wo):
                                v = x[s, y + di, col + dj, ch]
                                for o in range(co):
                                    z[r, col, o] += v * w[di, dj, ch, o]
            for j in range(pw):
                for o in range(co):
                    best = z[0, 2 * j, o]
                    arg = 0
                    for t in range(1, 4):
                        v = z[t // 2, 2 * j + t % 2, o]
                        if v > best or (np.isnan(v) and not np.isnan(best)):
                            best = v
                            arg = t
                    out[s, i, j, o] = best if (best > 0 or np.isnan(best)) else 0.0
                    taps[s, i, j, o] = arg


@_jit
def backward(x, g, out, taps, gw, gb, kh, kw, c, co):
    """gw = Σ patch ⊗ g and gb = Σ g over the winning taps of windows whose output is above 0
    (x, out and taps as `forward` had them); gw (kh, kw, c, co) and gb (co,) are overwritten."""
    n = x.shape[0]
    ph, pw = out.shape[1], out.shape[2]
    k = kh * kw * c
    acc = np.zeros((k, co), gw.dtype)
    acc_b = np.zeros(co, gw.dtype)
    gd = np.empty((4, co), gw.dtype)  # one window's gradient at each of its 4 taps
    patch = np.empty((4, k), gw.dtype)  # the input patch under each tap
    for s in range(n):
        for i in range(ph):
            for j in range(pw):
                for o in range(co):
                    gv = g[s, i, j, o] if out[s, i, j, o] > 0 else 0.0
                    acc_b[o] += gv
                    a = taps[s, i, j, o]
                    for t in range(4):
                        gd[t, o] = gv if a == t else 0.0
                for t in range(4):
                    y, col = 2 * i + t // 2, 2 * j + t % 2
                    q = 0
                    for di in range(kh):
                        for dj in range(kw):
                            for ch in range(c):
                                patch[t, q] = x[s, y + di, col + dj, ch]
                                q += 1
                for q in range(k):
                    p0, p1, p2, p3 = patch[0, q], patch[1, q], patch[2, q], patch[3, q]
                    for o in range(co):
                        acc[q, o] += p0 * gd[0, o] + p1 * gd[1, o] + p2 * gd[2, o] + p3 * gd[3, o]
    q = 0
    for di in range(kh):
        for dj in range(kw):
            for ch in range(c):
                for o in range(co):
                    gw[di, dj, ch, o] = acc[q, o]
                q += 1
    for o in range(co):
        gb[o] = acc_b[o]
