"""Fused image primitives (channels-last NHWC) with analytic backward: convolution and
transposed convolution (pooling: ops/pooling.py).

Convolution is im2col + one GEMM: a strided view of the (padded) input gathers every receptive
field into a (N·Ho·Wo, kh·kw·C) matrix, which one matmul multiplies by the (kh·kw·C, O) kernel.
Its backward is one GEMM for dW and one GEMM plus a col2im scatter-add (kh·kw strided adds)
for dX. The transposed convolution runs the same two halves the other way round.

Where numba is available (`_kernels.compiled.image_kernels`, `activation_kernels`), the passes
outside the GEMMs run as compiled kernels: im2col (C ≥ 4), the backward's col2im, bias + ReLU
in one pass, ReLU's mask. Each gives the same bits as its NumPy path, the fallback (and the
path with `compiled.ENABLED = False`). With fewer than 4 input channels (a grayscale or RGB
first layer) the receptive fields are gathered tap-major instead, as the matrix's transpose.

A convolution runs on splitgrad's own threads (`_kernels/thread_team.py`): it cuts its batch
into one slice per thread, and each thread gathers, multiplies and applies bias + ReLU for its
slice, and in the backward pass masks, multiplies and scatters its slice; the weight gradient is
summed from one part per slice, in a fixed order. On the lab CNN this took a training step from
about 8.5 to 6.8 ms on the 2-core machine (OpenBLAS's own threads split each GEMM, but every
other pass ran on one core).

Every large array (im2col matrices, padded copies, masks, outputs, input gradients) comes from
the calling layer's `Workspace`, because glibc hands big freed blocks back to the kernel and
page-faults them in again on every step. The workspace reuses an array only when nothing else
refers to it any more, so live graphs, kept outputs and views are never overwritten.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._kernels.compiled import activation_kernels, image_kernels
from .._kernels.specialize import version
from .._kernels.thread_team import (
    OnOwnThreads,
    batch_groups,
    matmul,
    piece_product,
    run_groups,
    sum_parts,
)
from .._kernels.workspace import empty, zeros
from ..tensor import Function, Tensor


def pair(value, what="kernel_size") -> tuple:
    """An int or a 2-sequence as an (h, w) pair of positive ints."""
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return value


def conv_geometry(size, k, stride, dilation, padding, who="Conv2D", axis="height"):
    """(out, pad_before, pad_after) along one axis, for padding "valid", "same" or an int.

    "same" is Keras's rule: out = ceil(size/stride), total padding max((out−1)·s + k' − size, 0)
    with k' = dilation·(k−1)+1, the odd pixel at the bottom/right.
    """
    span = dilation * (k - 1) + 1
    if padding == "valid":
        before = after = 0
    elif padding == "same":
        total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
        before, after = total // 2, total - total // 2
    elif isinstance(padding, (int, np.integer)) and padding >= 0:
        before = after = int(padding)
    else:
        raise ValueError(f"{who}: padding must be 'valid', 'same' or an int >= 0, got {padding!r}")
    padded = size + before + after
    if span > padded:
        raise ValueError(
            f"{who}: the {axis} window ({span} pixels: kernel {k}, dilation {dilation}) is larger "
            f"than the padded input ({padded} = {size} + padding {before + after}). Use "
            f"padding='same', a smaller kernel or pool size, or a larger input."
        )
    return (padded - span) // stride + 1, before, after


def _pad(x, pads, ws, fill=0.0):
    """x with `pads` ((top, bottom), (left, right)) added around H and W (x itself if none)."""
    (pt, pb), (pl, pr) = pads
    if not (pt or pb or pl or pr):
        return x
    n, h, w, c = x.shape
    xp = empty(ws, (n, h + pt + pb, w + pl + pr, c), x.dtype)
    # Only the border is filled: a recycled buffer may hold anything there.
    xp[:, :pt] = fill
    xp[:, pt + h :] = fill
    xp[:, pt : pt + h, :pl] = fill
    xp[:, pt : pt + h, pl + w :] = fill
    xp[:, pt : pt + h, pl : pl + w] = x
    return xp


def _crop(xp, pads, shape, ws):
    """The unpadded part of xp as a contiguous array of `shape` (xp itself if no padding)."""
    if xp.shape == tuple(shape):
        return xp
    (pt, _), (pl, _) = pads
    out = empty(ws, shape, xp.dtype)
    np.copyto(out, xp[:, pt : pt + shape[1], pl : pl + shape[2]])
    return out


def _windows(xp, k, stride, dilation, out_hw):
    """A read-only (N, Ho, Wo, kh, kw, C) view of every receptive field of xp (no copy)."""
    s0, s1, s2, s3 = xp.strides
    shape = (xp.shape[0], out_hw[0], out_hw[1], k[0], k[1], xp.shape[3])
    strides = (s0, s1 * stride[0], s2 * stride[1], s1 * dilation[0], s2 * dilation[1], s3)
    return as_strided(xp, shape, strides, writeable=False)


def _tap(xp, i, j, stride, dilation, out_hw):
    """The (N, Ho, Wo, C) strided slice of xp that kernel tap (i, j) sees."""
    r, c = i * dilation[0], j * dilation[1]
    return xp[
        :,
        r : r + stride[0] * (out_hw[0] - 1) + 1 : stride[0],
        c : c + stride[1] * (out_hw[1] - 1) + 1 : stride[1],
    ]


def _padded_shape(shape, pads):
    (pt, pb), (pl, pr) = pads
    return (shape[0], shape[1] + pt + pb, shape[2] + pl + pr, shape[3])


def _im2col(x, k, stride, dilation, pads, out_hw, ws, ones=False):
    """The (N·Ho·Wo, kh·kw·C) matrix of receptive fields, plus a column of ones if `ones`."""
    rows = x.shape[0] * out_hw[0] * out_hw[1]
    cols = empty(ws, (rows, k[0] * k[1] * x.shape[3] + ones), x.dtype)
    _gatherer(x, k, stride, dilation, pads, out_hw, ws, ones)(slice(0, x.shape[0]), cols)
    return cols


def _gatherer(x, k, stride, dilation, pads, out_hw, ws, ones=False, tap_major=False):
    """fill(images, cols): writes the receptive fields of x[images] (a slice of the batch)
    into `cols`, their rows of the im2col matrix, or with `tap_major` their columns of its
    transpose (one row per kernel tap and channel). Any padded copy is made here, once, so the
    fills of different slices can run on different threads."""
    c, width = x.shape[3], k[0] * k[1] * x.shape[3]
    jit = image_kernels(x.dtype) if c >= 4 and x.flags.c_contiguous and not tap_major else None
    if jit is not None:
        # One compiled pass writes each row whole and reads the padding as zeros: no padded
        # copy, and no 6-D copy crawling along C-float runs (1.6x faster on the lab CNN's
        # second conv; with fewer channels the tap-major copy below is faster).
        def fill(images, cols):
            jit.im2col(
                x[images], *k, *stride, *dilation, pads[0][0], pads[1][0], *out_hw, cols, ones
            )

        return fill
    xp = _pad(x, pads, ws)

    def fill(images, cols):
        src = xp[images]
        if tap_major:
            # Each tap's pixels land in one contiguous row: whole image rows are copied, not
            # C floats at a time (for a grayscale batch 0.26 -> 0.09 ms on the lab CNN).
            for t in range(k[0] * k[1]):
                tap = _tap(src, t // k[1], t % k[1], stride, dilation, out_hw)
                for ch in range(c):
                    np.copyto(cols[t * c + ch].reshape(tap.shape[:3]), tap[..., ch])
            if ones:
                cols[width] = 1
            return
        step = cols.strides[0]
        # A 6-D view of the patch part, so one copy lays out every receptive field.
        blocks = as_strided(
            cols,
            (src.shape[0], out_hw[0], out_hw[1], k[0], k[1], c),
            (step * out_hw[0] * out_hw[1], step * out_hw[1], step)
            + (cols.itemsize * k[1] * c, cols.itemsize * c, cols.itemsize),
        )
        if c < 4:
            # With very few channels the one 6-D copy crawls along length-c rows; copying
            # kernel tap by tap streams whole image rows instead (3x faster for grayscale).
            for t in range(k[0] * k[1]):
                i, j = divmod(t, k[1])
                np.copyto(blocks[:, :, :, i, j], _tap(src, i, j, stride, dilation, out_hw))
        else:
            np.copyto(blocks, _windows(src, k, stride, dilation, out_hw))
        if ones:
            cols[:, width] = 1

    return fill


def _col2im(cols, x_shape, k, stride, dilation, pads, out_hw, ws):
    """Scatter-add the rows of `cols` back onto an image of `x_shape` (the adjoint of im2col)."""
    n, c = x_shape[0], x_shape[3]
    dxp = zeros(ws, _padded_shape(x_shape, pads), cols.dtype)
    blocks = cols.reshape(n, out_hw[0], out_hw[1], k[0], k[1], c)
    for i in range(k[0]):
        for j in range(k[1]):
            tap = _tap(dxp, i, j, stride, dilation, out_hw)
            np.add(tap, blocks[:, :, :, i, j], out=tap)
    return _crop(dxp, pads, x_shape, ws)


def _col2im_taps(taps, x_shape, k, stride, dilation, pads, out_hw, ws, out):
    """Like `_col2im`, but from a (kh·kw, N·Ho·Wo, C) array (one contiguous block per tap),
    written into `out`.

    Each tap's add then reads a contiguous source and writes runs of Wo·C floats (stride 1),
    instead of the im2col layout's C-float runs, whose short inner loops made `_col2im` ~3x
    slower for the few channels of a small CNN.
    """
    n, c = x_shape[0], x_shape[3]
    blocks = taps.reshape(k[0] * k[1], n, out_hw[0], out_hw[1], c)
    jit = image_kernels(taps.dtype) if taps.flags.c_contiguous else None
    if jit is not None:
        # One pass, each image row zeroed and summed in L1, cropped on the fly; same bits.
        jit.col2im_taps(blocks, *k, *stride, *dilation, pads[0][0], pads[1][0], out)
        return out
    dxp = zeros(ws, _padded_shape(x_shape, pads), taps.dtype)
    for t in range(k[0] * k[1]):
        tap = _tap(dxp, t // k[1], t % k[1], stride, dilation, out_hw)
        np.add(tap, blocks[t], out=tap)
    np.copyto(out, _crop(dxp, pads, x_shape, ws))
    return out


def _col2im_compiled(jit, cols, x_shape, k, stride, dilation, pads, out_hw, ws):
    """`_col2im` by the compiled kernel: each (cropped) pixel written once, the same bits."""
    n, c = x_shape[0], x_shape[3]
    out = empty(ws, x_shape, cols.dtype)
    blocks = cols.reshape(n, out_hw[0], out_hw[1], k[0], k[1], c)
    jit.col2im(blocks, *k, *stride, *dilation, pads[0][0], pads[1][0], out)
    return out


class Conv2DFn(OnOwnThreads, Function):
    """y = relu?(Σ_{i,j,c} xpad[n, s·h + d·i, s·w + d·j, c]·W[i, j, c, o] + b[o]) (NHWC, im2col).

    `premasked`: set by a max pool reading this ReLU output to the gradient array it returned
    with the ReLU mask already applied; backward skips its mask when it receives exactly that
    array (the pool was the only consumer).
    """

    premasked = None

    def _forward(
        self,
        x,
        w,
        b=None,
        stride=(1, 1),
        dilation=(1, 1),
        pads=((0, 0), (0, 0)),
        relu=False,
        ws=None,
    ):
        n, h, wd, c = x.shape
        kh, kw, _, co = w.shape
        ho = (h + sum(pads[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (wd + sum(pads[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        self.geom = ((kh, kw), stride, dilation, pads, (ho, wo))
        self.x_shape, self.w, self.ws, self.relu = x.shape, w, ws, relu
        k = kh * kw * c
        # A 1x1 stride-1 unpadded kernel needs no gathering: the image already is the matrix.
        self.gather = not (kh == kw == 1 and stride == (1, 1) and pads == ((0, 0), (0, 0)))
        # For short rows (few input channels) the bias rides in the GEMM as a column of ones:
        # cheaper than separate passes over the large output for b and for its gradient.
        self.fold = b is not None and self.gather and k < 64
        wm = w.reshape(k, co)
        if self.fold:
            wm = np.concatenate([wm, b.reshape(1, co).astype(wm.dtype)])
        # With few channels the receptive fields are gathered tap-major, as the transpose
        # of the im2col matrix (see `_gatherer`); the GEMMs read it transposed.
        self.tap_major = self.gather and c < 4
        if self.gather:
            shape = (k + self.fold, n * ho * wo)
            cols = empty(ws, shape if self.tap_major else shape[::-1], x.dtype)
            geom = ((kh, kw), stride, dilation, pads, (ho, wo))
            gather = _gatherer(x, *geom, ws, self.fold, self.tap_major)
        else:
            cols = x.reshape(-1, c)
        self.cols = cols
        out = empty(ws, (n, ho, wo, co), np.result_type(x, w))
        out2 = out.reshape(-1, co)
        add_bias = b is not None and not self.fold
        # (A bias of another dtype keeps NumPy's `out += b`: it adds in the wider type.)
        same = not add_bias or b.dtype == out.dtype
        jit = activation_kernels(out.dtype) if (add_bias or relu) and same else None
        bias = None if jit is None else (b.reshape(-1) if add_bias else out.reshape(-1)[:co])
        per = ho * wo

        groups = batch_groups(n)
        mm = _product(groups)

        def piece(_, images):
            rows = slice(images.start * per, images.stop * per)
            if self.gather:
                gather(images, cols[:, rows] if self.tap_major else cols[rows])
            mm(self._cols(rows), wm, out=out2[rows])
            if jit is not None:
                # Bias and ReLU in one pass over the GEMM output instead of one pass each.
                jit.bias_relu(out2[rows], bias, add_bias, relu)

        _on_team(piece, groups, out.dtype)
        if jit is None:
            if add_bias:
                out += b
            if relu:
                np.maximum(out, 0, out=out)
        if relu:
            self.out = out
        return out

    def _backward(self, g):
        ws, w, co = self.ws, self.w, self.w.shape[3]
        k = w.size // co
        premasked, self.premasked = self.premasked, None
        mask = self.relu and g is not premasked
        n = self.x_shape[0]
        groups = batch_groups(n)
        # One call per group of images (one per team member; see `_on_team`), each in its own
        # rows of every buffer below, all of which are taken here, in the calling thread.
        mm = _product(groups)
        if mask:
            jit = activation_kernels(g.dtype)
            if jit is None or not g.flags.c_contiguous or g.dtype != self.out.dtype:
                mask = np.greater(self.out, 0, out=empty(ws, g.shape, bool))
                g, mask = np.multiply(g, mask, out=empty(ws, g.shape, g.dtype)), False
            else:
                # The mask and the product in one pass per piece, no boolean temporary.
                src, g = g, empty(ws, g.shape, g.dtype)
        g2 = g.reshape(-1, co)
        per = g2.shape[0] // n
        gx = gw = gb = None
        want_b = len(self.needs) > 2 and self.needs[2]
        want_w = self.needs[1] or (want_b and self.fold)
        if want_w:
            # OpenBLAS runs this shape ~2x faster as (gᵀ·cols)ᵀ than as colsᵀ·g (measured on
            # the lab CNN's second conv); with few columns the plain order is as fast.
            flip = k + self.fold > co  # the im2col matrix's width
            parts = empty(
                ws, (len(groups),) + ((co, k + self.fold) if flip else (k + self.fold, co)), g.dtype
            )
        if want_b and not self.fold:
            ones = empty(ws, (g2.shape[0],), g2.dtype)  # a GEMV with ones sums rows fastest
            ones.fill(1)
            bias_parts = empty(ws, (len(groups), co), g.dtype)
        if self.needs[0]:
            gx = empty(ws, self.x_shape, g.dtype)
            wt = w.reshape(-1, w.shape[2], co).transpose(0, 2, 1)  # (taps, O, C)
            dtaps = empty(ws, (wt.shape[0] * g2.shape[0] * w.shape[2],), g.dtype)

        def piece(part, images):
            rows = slice(images.start * per, images.stop * per)
            if mask:
                flat = slice(rows.start * co, rows.stop * co)
                jit.relu_mask(
                    src.reshape(-1)[flat], self.out.reshape(-1)[flat], g.reshape(-1)[flat]
                )
            gp = g2[rows]
            if want_w:
                if flip:
                    mm(gp.T, self._cols(rows), out=parts[part])
                else:
                    mm(self._cols(rows).T, gp, out=parts[part])
            if want_b and not self.fold:
                np.dot(ones[rows], gp, out=bias_parts[part])  # (np.dot lets go of the GIL)
            if self.needs[0]:
                self._input_gradient(mm, gp, images, rows, wt, dtaps, gx)

        _on_team(piece, groups, g.dtype)
        if want_w:
            gwb = sum_parts(parts)
            gwb = gwb.T if flip else gwb
            gw, gb = gwb[:k].reshape(w.shape), gwb[k] if self.fold else None
        if want_b and not self.fold:
            gb = sum_parts(bias_parts)
        return gx, gw, gb

    def _cols(self, rows):
        """The im2col matrix's `rows` (a view, whichever way it was gathered)."""
        return self.cols[:, rows].T if self.tap_major else self.cols[rows]

    def _input_gradient(self, mm, gp, images, rows, wt, dtaps, gx):
        """gx[images] from gp, their `rows` of the output gradient."""
        w = self.w
        if not self.gather:
            mm(gp, w.reshape(-1, w.shape[3]).T, out=gx[images].reshape(len(gp), -1))
            return
        size = wt.shape[0] * wt.shape[2]  # taps · C per row
        (kh, kw), stride, dilation, pads, (ho, wo) = self.geom
        if stride == dilation == (1, 1):
            # One GEMM, (rows, O) @ (O, taps·C), then col2im from the im2col layout: the GEMM
            # is ~1.3x faster than kh·kw narrow ones (lab CNN's second conv, 0.87 → 0.67 ms a
            # thread), more than the compiled scatter from this layout costs (0.10 → 0.16 ms).
            cols = dtaps[size * rows.start : size * rows.stop].reshape(len(gp), size)
            mm(gp, w.reshape(-1, w.shape[3]).T, out=cols)
            jit = image_kernels(gp.dtype)
            if jit is None:  # NumPy: tap by tap into a zeroed image, the same bits
                np.copyto(gx[images], _col2im(cols, gx[images].shape, *self.geom, self.ws))
                return
            blocks = cols.reshape(-1, ho, wo, kh, kw, w.shape[2])
            args = (blocks, kh, kw, pads[0][0], pads[1][0], gx[images])
            version(jit.col2im_stride1, args, {1, 2})(*args)
            return
        # One GEMM per kernel tap, (rows, O) @ (O, C), stacked tap-major so that the
        # scatter-add streams whole image rows (see `_col2im_taps`).
        mine = dtaps[size * rows.start : size * rows.stop].reshape(wt.shape[0], len(gp), -1)
        stacked = matmul if mm is matmul else np.matmul  # (piece_product is for 2-D products)
        stacked(gp, wt, out=mine)
        _col2im_taps(mine, gx[images].shape, *self.geom, self.ws, out=gx[images])


def _product(groups):
    """The 2-D product inside a piece: thread_team's matmul when there is one piece (it may cut
    a big product itself), else `piece_product`, which runs alongside the other pieces."""
    return matmul if len(groups) == 1 else piece_product


def _on_team(piece, groups, dtype):
    """`run_groups`, on the team's threads only where the compiled kernels run: the NumPy
    fallback takes buffers from the workspace inside its pieces, so it runs them in order
    (in the same groups, so both paths give the same bits)."""
    run_groups(piece, groups, parallel=image_kernels(dtype) is not None)


class Conv2DTransposeFn(Function):
    """y = conv2d's input gradient with x in the output's place: col2im(x·Wᵀ), cropped, + b.

    Kernel (kh, kw, out, in), i.e. the kernel of the convolution it transposes (Keras layout).
    """

    def forward(
        self,
        x,
        w,
        b=None,
        stride=(1, 1),
        dilation=(1, 1),
        pads=((0, 0), (0, 0)),
        out_hw=None,
        ws=None,
    ):
        n, h, wd, ci = x.shape
        kh, kw, co, _ = w.shape
        self.geom = ((kh, kw), stride, dilation, pads, (h, wd))
        self.x, self.w, self.ws = x, w, ws
        cols = matmul(
            x.reshape(-1, ci),
            w.reshape(-1, ci).T,
            out=empty(ws, (n * h * wd, kh * kw * co), np.result_type(x, w)),
        )
        jit = image_kernels(cols.dtype)
        shape = (n, out_hw[0], out_hw[1], co)
        if jit is not None:
            # The im2col layout's C-float runs make the NumPy scatter slow (1.5x measured on a
            # stride-2 upsampling); the compiled col2im writes each pixel once, same bits.
            out = _col2im_compiled(jit, cols, shape, *self.geom, ws)
        else:
            out = _col2im(cols, shape, *self.geom, ws)
        if b is not None:
            out += b
        return out

    def backward(self, g):
        x, w, ci = self.x, self.w, self.x.shape[3]
        gx = gw = gb = None
        if self.needs[0] or self.needs[1]:
            gcols = _im2col(g, *self.geom, self.ws)
            if self.needs[0]:
                gx = matmul(gcols, w.reshape(-1, ci)).reshape(x.shape)
            if self.needs[1]:
                gw = matmul(gcols.T, x.reshape(-1, ci)).reshape(w.shape)
        if len(self.needs) > 2 and self.needs[2]:
            gb = g.reshape(-1, g.shape[3]).sum(axis=0)
        return gx, gw, gb


# ----- public functions ------------------------------------------------------------------
def conv2d(
    x, w, b=None, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), relu=False, ws=None
) -> Tensor:
    """NHWC convolution (optionally with a fused ReLU); `pads` from `conv_geometry`."""
    return Conv2DFn.apply(x, w, b, stride=stride, dilation=dilation, pads=pads, relu=relu, ws=ws)


def conv2d_transpose(
    x, w, b=None, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), out_hw=None, ws=None
) -> Tensor:
    """NHWC transposed convolution producing spatial size `out_hw`."""
    return Conv2DTransposeFn.apply(
        x, w, b, stride=stride, dilation=dilation, pads=pads, out_hw=out_hw, ws=ws
    )


def patches(x: np.ndarray, kernel_hw, stride, dilation, pads) -> np.ndarray:
    """The receptive fields of an NHWC image batch: (N, Ho·Wo, kh·kw·C), in the row order of a
    (kh, kw, C, O) kernel read as a (kh·kw·C, O) matrix (for per-example gradients)."""
    n, h, w, _ = x.shape
    kh, kw = kernel_hw
    ho = (h + sum(pads[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + sum(pads[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = _im2col(x, (kh, kw), stride, dilation, pads, (ho, wo), None)
    return cols.reshape(n, ho * wo, -1)
