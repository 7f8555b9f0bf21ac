"""A convolution with few input channels, its ReLU and a 2×2 max pool, as one op.

    y = maxpool₂ₓ₂(relu(x ⋆ W + b))    (NHWC, valid, stride 1; pool windows 2×2, stride 2)

Sequential runs a Conv2D(activation="relu") followed by a MaxPool2D(2) through this op when
the conv is a network's first (its input needs no gradient) and sees at most `MAX_CHANNELS`
channels (layers/fusion.py says exactly when). The conv's full-size output, four times the
pooled one, then never reaches memory (see `_kernels/conv_pool_jit.py`). The batch is cut into
one slice per thread of splitgrad's team; the weight and bias gradients are summed from one
part per slice in a fixed order, so results are the same bits from run to run.
"""

from __future__ import annotations

import numpy as np

from .._kernels.compiled import conv_pool_kernels
from .._kernels.thread_team import OnOwnThreads, batch_groups, run_groups, sum_parts
from .._kernels.workspace import empty
from ..tensor import Function, Tensor

MAX_CHANNELS = 4  # with more input channels the GEMM path is faster


class ConvReluPoolFn(OnOwnThreads, Function):
    """y = maxpool₂ₓ₂(relu(x ⋆ W + b)); gradients for W and b only (x is a network's input)."""

    def _forward(self, x, w, b, ws=None):
        n, h, wd, _ = x.shape
        kh, kw, _, co = w.shape
        ph, pw = (h - kh + 1) // 2, (wd - kw + 1) // 2
        self.jit, self.ws = conv_pool_kernels(x.dtype), ws
        self.x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
        self.w_shape = w.shape
        bias = np.zeros(co, x.dtype) if b is None else np.ascontiguousarray(b)
        self.out = empty(ws, (n, ph, pw, co), x.dtype)
        self.taps = empty(ws, self.out.shape, np.uint8)
        jit, out, taps, xc = self.jit, self.out, self.taps, self.x

        def piece(_, images):
            jit.forward(xc[images], w, bias, out[images], taps[images], *w.shape)

        run_groups(piece, batch_groups(n))
        return self.out

    def _backward(self, g):
        if self.needs[0]:  # fusion.py never fuses such a conv: say so rather than return None
            raise RuntimeError("ConvReluPoolFn computes no input gradient")
        g = np.ascontiguousarray(g)
        groups = batch_groups(g.shape[0])
        co = self.w_shape[3]
        parts_w = empty(self.ws, (len(groups),) + self.w_shape, g.dtype)
        parts_b = empty(self.ws, (len(groups), co), g.dtype)
        jit, x, out, taps = self.jit, self.x, self.out, self.taps

        def piece(k, im):
            arrays = (x[im], g[im], out[im], taps[im], parts_w[k], parts_b[k])
            jit.backward_for(arrays, self.w_shape)(*arrays, *self.w_shape)

        run_groups(piece, groups)
        gb = sum_parts(parts_b) if len(self.needs) > 2 and self.needs[2] else None
        return None, sum_parts(parts_w), gb


def conv_relu_pool(x, w, b=None, ws=None) -> Tensor:
    """maxpool₂ₓ₂(relu(conv2d(x, w, b))) for NHWC x that needs no gradient (valid, stride 1)."""
    return ConvReluPoolFn.apply(x, w, b, ws=ws)
