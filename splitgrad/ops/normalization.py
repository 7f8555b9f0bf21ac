"""Batch normalisation as one fused primitive with an analytic backward."""

from __future__ import annotations

import numpy as np

from ..tensor import Function, Tensor


class BatchNormFn(Function):
    """y = γ·(x − μ)/sqrt(σ² + ε) + β per channel on `axis`; training uses the batch's μ and
    biased σ² and updates running = (1−m)·running + m·stat (unbiased σ²), inference the
    running statistics."""

    def forward(
        self,
        x,
        gamma=None,
        beta=None,
        running_mean=None,
        running_var=None,
        momentum=0.1,
        eps=1e-3,
        training=True,
        axis=-1,
    ):
        axis = axis % x.ndim
        self.axes = tuple(i for i in range(x.ndim) if i != axis)
        self.bshape = tuple(x.shape[i] if i == axis else 1 for i in range(x.ndim))
        count = x.size // x.shape[axis]
        self.training, self.count = training, count
        if training:
            if count < 2:
                raise ValueError(
                    f"BatchNormalization: training needs more than 1 value per channel, got "
                    f"input shape {x.shape}; use a larger batch or call it in inference mode."
                )
            mean = x.mean(axis=self.axes, keepdims=True)
            xc = x - mean
            var = (xc * xc).mean(axis=self.axes, keepdims=True)
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mean.reshape(running_mean.shape)
            if running_var is not None:
                running_var *= 1 - momentum
                running_var += (momentum * count / (count - 1)) * var.reshape(running_var.shape)
        else:
            mean = running_mean.reshape(self.bshape)
            var = running_var.reshape(self.bshape)
            xc = x - mean
        self.inv = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
        self.xhat = xc * self.inv
        self.gamma = gamma
        out = self.xhat * gamma.reshape(self.bshape) if gamma is not None else self.xhat.copy()
        if beta is not None:
            out += beta.reshape(self.bshape)
        return out

    def backward(self, g):
        xhat, axes = self.xhat, self.axes
        gx = gg = gb = None
        if self.needs[0]:
            dxhat = g * self.gamma.reshape(self.bshape) if self.gamma is not None else g
            if self.training:
                # d/dx of (x−μ)/σ folds the paths through μ and σ into two channel means.
                mean_d = dxhat.mean(axis=axes, keepdims=True)
                mean_dx = (dxhat * xhat).mean(axis=axes, keepdims=True)
                gx = (dxhat - mean_d - xhat * mean_dx) * self.inv
            else:
                gx = dxhat * self.inv
        if len(self.needs) > 1 and self.needs[1]:
            gg = (g * xhat).sum(axis=axes).reshape(self.gamma.shape)
        if len(self.needs) > 2 and self.needs[2]:
            gb = g.sum(axis=axes).reshape(-1)
        return gx, gg, gb


def batch_norm(
    x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-3, training=True, axis=-1
) -> Tensor:
    """Batch normalisation; updates the running arrays in place when training."""
    return BatchNormFn.apply(
        x,
        gamma,
        beta,
        running_mean=running_mean,
        running_var=running_var,
        momentum=momentum,
        eps=eps,
        training=training,
        axis=axis,
    )
