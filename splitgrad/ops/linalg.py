"""Linear-algebra primitives: batched matmul and the fused Dense `Linear` (x·W + b)."""

from __future__ import annotations

import numpy as np

from .._kernels.thread_team import matmul
from ..tensor import Function, unbroadcast


# ----- linear algebra --------------------------------------------------------------------
class MatMul(Function):
    """z = a @ b (NumPy matmul rules, batched and broadcast)."""

    writes_grads = True  # 2-D operands: their gradients go straight into the buffers

    def forward(self, a, b):
        self.a, self.b = a, b
        if a.ndim == b.ndim == 2:  # on splitgrad's team inside a recurrent or conv model
            return matmul(a, b)
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        if a.ndim == b.ndim == 2:
            ga = matmul(g, b.T, out=self.grad_out(0, a.shape, g.dtype)) if self.needs[0] else None
            gb = matmul(a.T, g, out=self.grad_out(1, b.shape, g.dtype)) if self.needs[1] else None
            return ga, gb
        if a.ndim == 1 and b.ndim == 1:
            return (g * b if self.needs[0] else None, g * a if self.needs[1] else None)
        if self.needs[0]:
            if b.ndim == 1:
                ga = np.multiply.outer(g, b)
            else:
                ga = (g[..., None, :] if a.ndim == 1 else g) @ np.swapaxes(b, -1, -2)
                ga = unbroadcast(
                    ga.reshape(ga.shape[:-2] + ga.shape[-1:]) if a.ndim == 1 else ga, a.shape
                )
        if self.needs[1]:
            if a.ndim == 1:
                gb = np.multiply.outer(a, g) if b.ndim == 2 else a[:, None] * g[..., None, :]
                gb = unbroadcast(gb, b.shape)
            else:
                gg = g[..., None] if b.ndim == 1 else g
                gb = np.swapaxes(a, -1, -2) @ gg
                gb = unbroadcast(gb[..., 0] if b.ndim == 1 else gb, b.shape)
        return ga, gb


class Linear(Function):
    """z = x·W + b, the fused Dense primitive (x of shape (..., in), W of shape (in, out))."""

    writes_grads = True  # dW and db go straight into the optimizer's buffers (tensor.py)

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        self.bshape = None if b is None else b.shape
        # parallel.matmul: big products on splitgrad's helper threads (see parallel.py).
        out = matmul(x.reshape(-1, x.shape[-1]), w).reshape(x.shape[:-1] + (w.shape[1],))
        if b is not None:
            out += b
        return out

    def backward(self, g):
        x, w = self.x, self.w
        g2 = g.reshape(-1, g.shape[-1])
        gx = matmul(g2, w.T).reshape(x.shape) if self.needs[0] else None
        gw = gb = None
        if self.needs[1]:
            gw = matmul(x.reshape(-1, x.shape[-1]).T, g2, out=self.grad_out(1, w.shape, g.dtype))
        if len(self.needs) > 2 and self.needs[2]:
            out = self.grad_out(2, g2.shape[1:], g.dtype)
            gb = unbroadcast(np.add.reduce(g2, axis=0, out=out), self.bshape)
        return gx, gw, gb
