"""Max and average pooling over NHWC images, with analytic backward.

Max pooling finds each window's maximum and, when a gradient may follow, the tap that holds the
first of them; the gradient goes back to that tap alone (as PyTorch). Where numba is available
(`_kernels.compiled.image_kernels`) both passes are compiled kernels, and inside splitgrad's own
threads (`_kernels/thread_team.py`) the batch is cut into one slice per thread. The NumPy path,
tap by tap, is the fallback and gives the same bits. Average pooling divides by the number of
real (unpadded) pixels in each window, as Keras's "same" padding does.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._kernels.compiled import image_kernels
from .._kernels.thread_team import OnOwnThreads, batch_groups, run_groups
from .._kernels.workspace import empty, zeros
from ..tensor import Function, Tensor, is_grad_enabled
from .conv import Conv2DFn, _crop, _pad, _padded_shape, _tap


class MaxPool2DFn(OnOwnThreads, Function):
    """y = max over each window (padding never wins); the gradient goes to the window's FIRST
    maximum in row-major order, and overlapping windows add up (as PyTorch)."""

    def _forward(
        self,
        x,
        pool=(2, 2),
        stride=(2, 2),
        pads=((0, 0), (0, 0)),
        out_hw=None,
        ws=None,
        relu_of=None,
    ):
        self.geom = (pool, stride, (1, 1), pads, out_hw)
        self.x_shape, self.ws, self.relu_of = x.shape, ws, relu_of
        xp = _pad(x, pads, ws, fill=-np.inf)
        out = empty(ws, (x.shape[0], out_hw[0], out_hw[1], x.shape[3]), x.dtype)
        self.jit = image_kernels(x.dtype) if x.flags.c_contiguous else None
        if self.jit is not None:
            # One compiled pass finds the maxima and, when a gradient may follow, which tap
            # of each window holds the first of them (5x faster backward than the NumPy path).
            want = is_grad_enabled()
            self.taps = empty(ws, out.shape if want else (1, 1, 1, 1), self.jit.taps_dtype(pool))
            taps, jit = self.taps, self.jit

            def piece(_, images):
                mine = taps[images] if want else taps
                jit.max_pool_forward(xp[images], *pool, *stride, out[images], mine, want)

            run_groups(piece, batch_groups(x.shape[0]))
            self.out = out
            return out
        np.copyto(out, _tap(xp, 0, 0, stride, (1, 1), out_hw))
        for t in range(1, pool[0] * pool[1]):
            np.maximum(out, _tap(xp, t // pool[1], t % pool[1], stride, (1, 1), out_hw), out=out)
        # The winners are found again in backward, so inference pays for the maxima only.
        self.xp, self.out = xp, out
        return out

    def _backward(self, g):
        pool, stride, _, pads, out_hw = self.geom
        if self.jit is not None:
            return (self._backward_compiled(g),)
        ws, xp, out = self.ws, self.xp, self.out
        if stride == pool:
            dxp = empty(ws, xp.shape, g.dtype)
            # Windows tile the input, so the one multiply below writes every pixel they cover;
            # only the uncovered bottom rows and right columns need zeros.
            dxp[:, out_hw[0] * stride[0] :] = 0
            dxp[:, :, out_hw[1] * stride[1] :] = 0
            hit = empty(ws, (g.shape[0], out_hw[0], pool[0], out_hw[1], pool[1], g.shape[3]), bool)
            np.equal(_blocks(xp, pool, out_hw), out[:, :, None, :, None], out=hit)
            _keep_first(
                ws,
                [
                    hit[:, :, i : i + 1, :, j : j + 1]
                    for i in range(pool[0])
                    for j in range(pool[1])
                ],
            )
            # Multiplying by the mask beats a masked copy: no branch per element to mispredict.
            np.multiply(g[:, :, None, :, None], hit, out=_blocks(dxp, pool, out_hw))
            return (_crop(dxp, pads, self.x_shape, ws),)
        # Overlapping (or gapped) windows: one tap at a time, adding up.
        dxp = zeros(ws, xp.shape, g.dtype)
        taps = [(t // pool[1], t % pool[1]) for t in range(pool[0] * pool[1])]
        hits = [np.equal(_tap(xp, i, j, stride, (1, 1), out_hw), out) for i, j in taps]
        _keep_first(ws, hits)
        part = empty(ws, g.shape, g.dtype)
        for (i, j), hit in zip(taps, hits):
            tap = _tap(dxp, i, j, stride, (1, 1), out_hw)
            np.add(tap, np.multiply(g, hit, out=part), out=tap)
        return (_crop(dxp, pads, self.x_shape, ws),)

    def _backward_compiled(self, g):
        pool, stride, _, pads, out_hw = self.geom
        ws, jit = self.ws, self.jit
        g = np.ascontiguousarray(g)
        padded = _padded_shape(self.x_shape, pads)
        if stride == pool:
            dxp = empty(ws, padded, g.dtype)
            # Only the bottom rows and right columns outside every window need zeros.
            dxp[:, out_hw[0] * stride[0] :] = 0
            dxp[:, :, out_hw[1] * stride[1] :] = 0
            relu = self.relu_of is not None
            taps, out = self.taps, self.out

            def piece(_, im):
                jit.max_pool_backward_tiled(g[im], taps[im], *pool, dxp[im], out[im], relu)

            run_groups(piece, batch_groups(g.shape[0]))
            if relu:
                # The ReLU mask is applied here, on the pooled maxima: the conv that made
                # this input skips its own full-size mask pass if this very array is all the
                # gradient it receives (then nothing else was added to it).
                self.relu_of.premasked = dxp
        else:
            dxp, taps = zeros(ws, padded, g.dtype), self.taps

            def piece(_, im):
                jit.max_pool_backward_add(g[im], taps[im], *pool, *stride, dxp[im])

            run_groups(piece, batch_groups(g.shape[0]))
        return _crop(dxp, pads, self.x_shape, ws)


def _blocks(xp, pool, out_hw):
    """(N, Ho, ph, Wo, pw, C) view of the non-overlapping pool windows of xp."""
    s0, s1, s2, s3 = xp.strides
    shape = (xp.shape[0], out_hw[0], pool[0], out_hw[1], pool[1], xp.shape[3])
    return as_strided(xp, shape, (s0, s1 * pool[0], s1, s2 * pool[1], s2, s3))


def _keep_first(ws, hits):
    """Clear every True in hits[t] that an earlier hits[<t] already has (first maximum wins)."""
    taken = empty(ws, hits[0].shape, bool)
    np.copyto(taken, hits[0])
    for t in range(1, len(hits)):
        np.greater(hits[t], taken, out=hits[t])
        if t < len(hits) - 1:
            np.logical_or(taken, hits[t], out=taken)


class AvgPool2DFn(Function):
    """y = mean of each window over the real (unpadded) pixels only, as Keras's "same" does."""

    def forward(self, x, pool=(2, 2), stride=(2, 2), pads=((0, 0), (0, 0)), out_hw=None, ws=None):
        self.geom = (pool, stride, (1, 1), pads, out_hw)
        self.x_shape, self.ws = x.shape, ws
        self.scale = x.dtype.type(1.0 / (pool[0] * pool[1]))
        out = self._window_sums(_pad(x, pads, ws), ws)
        if pads != ((0, 0), (0, 0)):
            ones = _pad(np.ones((1,) + x.shape[1:3] + (1,), x.dtype), pads, None)
            self.scale = (1.0 / self._window_sums(ones, None)).astype(x.dtype)
        out *= self.scale
        return out

    def _window_sums(self, xp, ws):
        pool, stride, _, _, out_hw = self.geom
        out = zeros(ws, (xp.shape[0], out_hw[0], out_hw[1], xp.shape[3]), xp.dtype)
        for t in range(pool[0] * pool[1]):
            out += _tap(xp, t // pool[1], t % pool[1], stride, (1, 1), out_hw)
        return out

    def backward(self, g):
        pool, stride, _, pads, out_hw = self.geom
        gs = np.multiply(g, self.scale, out=empty(self.ws, g.shape, g.dtype))
        dxp = zeros(self.ws, _padded_shape(self.x_shape, pads), g.dtype)
        for t in range(pool[0] * pool[1]):
            tap = _tap(dxp, t // pool[1], t % pool[1], stride, (1, 1), out_hw)
            np.add(tap, gs, out=tap)
        return (_crop(dxp, pads, self.x_shape, self.ws),)


# ----- public functions ------------------------------------------------------------------
def max_pool2d(x, pool, stride, pads, out_hw, ws=None) -> Tensor:
    """NHWC max pooling; `pads` and `out_hw` from `conv_geometry`. On the output of a conv
    with a fused ReLU, the ReLU's backward mask is applied at the pooled size instead
    (max(relu(a)) = relu(max(a)), so the gradient is the same)."""
    ctx = getattr(x, "_ctx", None)
    relu_of = ctx if type(ctx) is Conv2DFn and ctx.relu else None
    return MaxPool2DFn.apply(
        x, pool=pool, stride=stride, pads=pads, out_hw=out_hw, ws=ws, relu_of=relu_of
    )


def avg_pool2d(x, pool, stride, pads, out_hw, ws=None) -> Tensor:
    """NHWC average pooling over the unpadded pixels of each window."""
    return AvgPool2DFn.apply(x, pool=pool, stride=stride, pads=pads, out_hw=out_hw, ws=ws)
