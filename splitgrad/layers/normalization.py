"""Normalisation layers: BatchNormalization (the fused primitive is `ops/normalization.py`)."""

from __future__ import annotations

from ..ops.normalization import batch_norm
from .layer import Layer, register


@register
class BatchNormalization(Layer):
    """y = γ·(x − μ)/sqrt(σ² + ε) + β per channel (the `axis` entry; last axis by default).

    Training normalises with the batch mean and biased variance and updates
    moving = momentum·moving + (1 − momentum)·batch_stat, with the unbiased variance for
    moving_variance; inference (`layer.eval()`) uses the moving statistics. Keras defaults:
    momentum 0.99 (PyTorch's 0.1) and epsilon 1e-3 — PyTorch uses 1e-5, so pass epsilon=1e-5 to
    match torch.nn.BatchNorm exactly. moving_mean/moving_variance are non-trainable weights, so
    they are saved with the model. Works for (N, C) and NHWC (N, H, W, C) inputs alike. A
    frozen layer (`trainable = False`) always runs in inference mode, as in Keras 3.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        name=None,
        dtype="float32",
    ):
        super().__init__(name=name, dtype=dtype)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum!r}")
        if float(epsilon) <= 0.0:
            raise ValueError(f"BatchNormalization: epsilon must be > 0, got {epsilon!r}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer
        self.gamma = self.beta = None

    def _channel_axis(self, shape):
        if (
            len(shape) < 2
            or not -len(shape) <= self.axis < len(shape)
            or self.axis % len(shape) == 0
        ):
            raise ValueError(
                f"layer {self.name!r} (BatchNormalization) normalises axis {self.axis}, which "
                f"is not a feature axis of input shape {tuple(shape)}; it needs (batch, "
                f"features) or (batch, height, width, channels) input and a non-batch axis."
            )
        return self.axis % len(shape)

    def build(self, input_shape):
        c = input_shape[self._channel_axis(input_shape)]
        if self.scale:
            self.add_weight("gamma", (c,), self.gamma_initializer, fan_in=c, fan_out=c)
        if self.center:
            self.add_weight("beta", (c,), self.beta_initializer, fan_in=c, fan_out=c)
        self.add_weight(
            "moving_mean", (c,), self.moving_mean_initializer, fan_in=c, fan_out=c, trainable=False
        )
        self.add_weight(
            "moving_variance",
            (c,),
            self.moving_variance_initializer,
            fan_in=c,
            fan_out=c,
            trainable=False,
        )

    def call(self, x):
        axis = self._channel_axis(x.shape)
        c = self.moving_mean.shape[0]
        if x.shape[axis] != c:
            raise ValueError(
                f"layer {self.name!r} (BatchNormalization) was built for {c} channels on axis "
                f"{self.axis} (input shape {self.input_shape}) but got {x.shape[axis]} (input "
                f"shape {tuple(x.shape)}). Feed the same channel count or make a new layer."
            )
        return batch_norm(
            x,
            self.gamma,
            self.beta,
            self.moving_mean.data,
            self.moving_variance.data,
            momentum=1.0 - self.momentum,
            eps=self.epsilon,
            # A frozen layer normalises with its moving statistics (Keras 3).
            training=self.training and self.trainable,
            axis=axis,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": self.beta_initializer,
            "gamma_initializer": self.gamma_initializer,
            "moving_mean_initializer": self.moving_mean_initializer,
            "moving_variance_initializer": self.moving_variance_initializer,
        }
