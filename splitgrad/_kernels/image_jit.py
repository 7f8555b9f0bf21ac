"""Max pooling and col2im compiled for the CPU at hand (numba), one pass each.

With NumPy, max pooling over NHWC costs a pass per window tap (inner loops only C floats long)
forward, and backward another dozen: find every tap equal to the maximum, keep the first one,
multiply. That was a quarter of a fashion-cnn epoch. Here the forward pass finds each window's
maximum and the tap that holds it (the FIRST maximum in row-major order, as PyTorch), and the
backward pass writes the input gradient from those tap numbers in one sweep.

Measured on this project's 2-core machine (float32, first pool of the lab CNN, 64 × 26 × 26 ×
24): forward 0.35 → 0.29 ms, backward 1.7 → 0.30 ms.

This module imports numba, so it is imported lazily (`ops.conv` asks `load()`), keeping
`import splitgrad` fast. Compiled code is cached on disk (`cache=True`), so only the first
process on a machine pays the compilation. Every loop runs in a fixed order in one thread, so
results are bitwise the same from run to run.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)


@_jit
def max_pool_forward(xp, ph, pw, sh, sw, out, taps, want_taps):
    """out[n, i, j, c] = max of xp's (ph, pw) window at (i·sh, j·sw); taps[...] = the index
    t = ti·pw + tj of its first maximum (written only if want_taps). A NaN wins, as in
    np.maximum; the first NaN is the one kept."""
    n, ho, wo, c = out.shape
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                o = out[b, i, j]
                r0, c0 = i * sh, j * sw
                first = xp[b, r0, c0]
                for ch in range(c):
                    o[ch] = first[ch]
                if want_taps:
                    k = taps[b, i, j]
                    for ch in range(c):
                        k[ch] = 0
                for t in range(1, ph * pw):
                    ti = t // pw
                    row = xp[b, r0 + ti, c0 + t - ti * pw]
                    for ch in range(c):
                        v = row[ch]
                        best = o[ch]
                        # Strictly greater keeps the first of tied maxima. (A branch-free
                        # select was measured slower here.)
                        if v > best or (np.isnan(v) and not np.isnan(best)):
                            o[ch] = v
                            if want_taps:
                                taps[b, i, j, ch] = t


@_jit
def max_pool_backward_tiled(g, taps, ph, pw, dxp, out, relu):
    """Windows that tile the input (stride == pool): every pixel they cover gets g where its
    tap won, else 0, in one sweep (pixels outside every window are the caller's). With
    `relu` the input is a ReLU's output and its mask is applied too: a window whose maximum
    `out` is 0 passes no gradient (ReLU's gradient at 0 is 0, as in PyTorch)."""
    n, ho, wo, c = g.shape
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                gg = g[b, i, j]
                k = taps[b, i, j]
                m = out[b, i, j]
                for t in range(ph * pw):
                    ti = t // pw
                    row = dxp[b, i * ph + ti, j * pw + t - ti * pw]
                    for ch in range(c):
                        row[ch] = gg[ch] if k[ch] == t and (not relu or m[ch] > 0) else 0.0


@_jit
def max_pool_backward_add(g, taps, ph, pw, sh, sw, dxp):
    """Overlapping or gapped windows: dxp (zeroed by the caller) += g at each window's winning
    tap. Taps are taken one after another, as the NumPy path adds them, so a pixel that wins
    several windows sums its gradients in the same order (bitwise the same result)."""
    n, ho, wo, c = g.shape
    for t in range(ph * pw):
        ti = t // pw
        tj = t - ti * pw
        for b in range(n):
            for i in range(ho):
                for j in range(wo):
                    k = taps[b, i, j]
                    row = dxp[b, i * sh + ti, j * sw + tj]
                    gg = g[b, i, j]
                    for ch in range(c):
                        if k[ch] == t:
                            row[ch] += gg[ch]


def taps_dtype(pool) -> np.dtype:
    """The smallest integer type that numbers the taps of a window."""
    return np.dtype(np.int8 if pool[0] * pool[1] <= 127 else np.int32)


@_jit
def col2im(cols, kh, kw, sh, sw, dh, dw, pt, pl, out):
    """The adjoint of im2col, cropped: out[n, y, x] = Σ over taps (ti, tj), in row-major order,
    of cols[n, i, j, ti, tj] where y + pt = i·sh + ti·dh and x + pl = j·sw + tj·dw.

    cols is (N, Ho, Wo, kh, kw, C). Each output pixel is written once, as a sum started from
    0 and taken tap by tap: the same additions, in the same order, as adding whole taps into
    a zeroed image (`ops.conv._col2im`), so both give the same bits.
    """
    n, h, w, c = out.shape
    ho, wo = cols.shape[1], cols.shape[2]
    for b in range(n):
        for y in range(h):
            for x in range(w):
                o = out[b, y, x]
                for ch in range(c):
                    o[ch] = 0.0
                for ti in range(kh):
                    r = y + pt - ti * dh
                    if r < 0 or r % sh != 0 or r // sh >= ho:
                        continue
                    i = r // sh
                    for tj in range(kw):
                        q = x + pl - tj * dw
                        if q < 0 or q % sw != 0 or q // sw >= wo:
                            continue
                        src = cols[b, i, q // sw, ti, tj]
                        for ch in range(c):
                            o[ch] += src[ch]
