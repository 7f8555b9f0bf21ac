"""Max pooling, im2col and col2im compiled for the CPU at hand (numba), one pass each.

With NumPy, max pooling over NHWC costs a pass per window tap (inner loops only C floats long)
forward, and backward another dozen: find every tap equal to the maximum, keep the first one,
multiply. That was a quarter of a fashion-cnn epoch. Here the forward pass finds each window's
maximum and the tap that holds it (the FIRST maximum in row-major order, as PyTorch), and the
backward pass writes the input gradient from those tap numbers in one sweep.

Measured on this project's 2-core machine (float32, first pool of the lab CNN, 64 × 26 × 26 ×
24): forward 0.35 → 0.29 ms, backward 1.7 → 0.30 ms.

The convolution's passes outside its GEMMs go the same way (lab CNN, batch 64, float32, best of
200 calls): im2col of the second conv 0.30 → 0.19 ms (no padded copy either), the tap-major
col2im of its backward 0.58 → 0.17 ms (bias + ReLU over the GEMM output: activation_jit.py).
Each gives the same bits as the NumPy passes it replaces, which stay as the fallback.

This module imports numba, so it is imported lazily (`compiled.image_kernels`), keeping
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


# The kernels below index flat arrays with unsigned offsets (`_u`): numba then drops its check
# for negative indices, and the inner loops vectorise (measured 3-5x faster than indexing the
# 4-D arrays, on the lab CNN's shapes).
_u = np.uintp


@_jit
def im2col(x, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, cols, ones):
    """cols[(b·Ho + i)·Wo + j, (ti·kw + tj)·C + ch] = x[b, i·sh + ti·dh − pt, j·sw + tj·dw − pl,
    ch], 0 where that falls in the padding; with `ones`, a last column of ones (a folded bias).

    Each row is written whole, one run of kw·C floats per kernel row where the window lies
    inside the image (dilation 1), tap by tap at the borders, where the padding is read as
    zeros: no padded copy of x is made. A copy, so the same bits as the NumPy path
    (`ops.conv._im2col`). Meant for several channels: with C < 4 the runs are too short and
    NumPy's tap-by-tap copy is faster (measured 0.25 vs 0.6 ms for a grayscale batch).
    """
    n, h, w, c = x.shape
    width = cols.shape[1]
    xf, cf = x.reshape(-1), cols.reshape(-1)
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                d0 = _u(((b * ho + i) * wo + j) * width)
                q0 = j * sw - pl
                whole = dw == 1 and q0 >= 0 and q0 + kw <= w
                for ti in range(kh):
                    r = i * sh + ti * dh - pt
                    row_in = 0 <= r < h
                    xrow = _u(max(0, (b * h + r) * w * c))
                    if row_in and whole:
                        d, s = d0 + _u(ti * kw * c), xrow + _u(q0 * c)
                        for k in range(kw * c):
                            cf[d + _u(k)] = xf[s + _u(k)]
                        continue
                    for tj in range(kw):
                        d = d0 + _u((ti * kw + tj) * c)
                        q = q0 + tj * dw
                        if row_in and 0 <= q < w:
                            s = xrow + _u(q * c)
                            for ch in range(c):
                                cf[d + _u(ch)] = xf[s + _u(ch)]
                        else:
                            for ch in range(c):
                                cf[d + _u(ch)] = 0.0
                if ones:
                    cf[d0 + _u(width - 1)] = 1.0


@_jit
def col2im_taps(taps, kh, kw, sh, sw, dh, dw, pt, pl, out):
    """The adjoint of im2col from a tap-major (kh·kw, N, Ho, Wo, C) array, cropped to out
    (N, H, W, C): out[b, y, x] = Σ over taps t = ti·kw + tj in increasing order of taps[t, b, i,
    j] with y + pt = i·sh + ti·dh and x + pl = j·sw + tj·dw.

    Each image row is zeroed and then receives its taps in order: per pixel the same additions
    in the same order as adding whole taps into a zeroed image (`ops.conv._col2im_taps`), so
    the same bits, but in one pass with the row in L1 instead of kh·kw passes over the image.
    """
    n, h, w, c = out.shape
    ho, wo = taps.shape[2], taps.shape[3]
    tf, of = taps.reshape(-1), out.reshape(-1)
    per_tap = n * ho * wo * c
    for b in range(n):
        for y in range(h):
            orow = _u((b * h + y) * w * c)
            for k in range(w * c):
                of[orow + _u(k)] = 0.0
            for ti in range(kh):
                r = y + pt - ti * dh
                if r < 0 or r % sh != 0 or r // sh >= ho:
                    continue
                srow = _u(((b * ho + r // sh) * wo) * c)
                for tj in range(kw):
                    src = _u((ti * kw + tj) * per_tap) + srow
                    x0 = tj * dw - pl  # x of window column j is j·sw + x0
                    j0 = max(0, (-x0 + sw - 1) // sw)
                    j1 = min(wo, (w - x0 + sw - 1) // sw)
                    if sw == 1:
                        # Stride 1: one contiguous run of (j1 − j0)·C floats.
                        d, s = orow + _u((x0 + j0) * c), src + _u(j0 * c)
                        for k in range((j1 - j0) * c):
                            of[d + _u(k)] += tf[s + _u(k)]
                    else:
                        for j in range(j0, j1):
                            d, s = orow + _u((j * sw + x0) * c), src + _u(j * c)
                            for ch in range(c):
                                of[d + _u(ch)] += tf[s + _u(ch)]


@_jit
def col2im_stride1(cols, kh, kw, pt, pl, out):
    """The adjoint of a stride-1, undilated im2col from its own (N, Ho, Wo, kh, kw, C) layout,
    cropped to out (N, H, W, C): out[b, y, x] = Σ over taps (ti, tj) in row-major order of
    cols[b, y + pt − ti, x + pl − tj, ti, tj], where that lies inside cols.

    Each pixel sums its taps in a register-sized run and is written once: the same additions
    in the same order as `col2im_taps`, so the same bits. Meant to be compiled with kh and kw
    as constants (`specialize.version`): its tap loops then unroll, and it runs 2x faster than
    `col2im`, whose general strides cost integer divisions per tap (lab CNN's second conv, 32
    images: 0.32 → 0.16 ms). That lets the input gradient be one GEMM with kh·kw·C columns
    instead of kh·kw narrow ones (`ops.conv`).
    """
    n, h, w, c = out.shape
    ho, wo = cols.shape[1], cols.shape[2]
    cf, of = cols.reshape(-1), out.reshape(-1)
    row = kh * kw * c  # one cols row: every tap of one output pixel
    for b in range(n):
        for y in range(h):
            for x in range(w):
                o = _u(((b * h + y) * w + x) * c)
                for ch in range(c):
                    of[o + _u(ch)] = 0.0
                for ti in range(kh):
                    i = y + pt - ti
                    if i < 0 or i >= ho:
                        continue
                    for tj in range(kw):
                        j = x + pl - tj
                        if j < 0 or j >= wo:
                            continue
                        src = _u(((b * ho + i) * wo + j) * row + (ti * kw + tj) * c)
                        for ch in range(c):
                            of[o + _u(ch)] += cf[src + _u(ch)]
