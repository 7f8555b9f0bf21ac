"""Core layers: Dense, Activation, Dropout, Flatten, Reshape."""

from __future__ import annotations

import numpy as np

from .. import ops
from ..random import get_rng
from . import activations, per_example
from . import regularizers as regs
from .layer import Layer, register


class KernelLayer(Layer):
    """Base of layers with a kernel, an optional bias and an activation (Dense, Conv2D, ...):
    the shared arguments, weight creation, regularizers and config live here once."""

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="torch_uniform",
        bias_initializer="torch_uniform",
        kernel_regularizer=None,
        bias_regularizer=None,
        name=None,
        dtype="float32",
    ):
        super().__init__(name=name, dtype=dtype)
        self.activation_name = activations.name_of(activation)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._regularizers = {
            "kernel": regs.get(kernel_regularizer),
            "bias": regs.get(bias_regularizer),
        }
        self.bias = None

    def add_kernel_and_bias(self, kernel_shape, outputs, fan_in):
        """Create `kernel` (and `bias` of length `outputs`), initialised with this fan-in."""
        self.add_weight(
            "kernel", kernel_shape, self.kernel_initializer, fan_in=fan_in, fan_out=outputs
        )
        if self.use_bias:
            self.add_weight(
                "bias", (outputs,), self.bias_initializer, fan_in=fan_in, fan_out=outputs
            )

    def get_config(self):
        return {
            **super().get_config(),
            "activation": self.activation_name,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "kernel_regularizer": regs.config_of(self._regularizers["kernel"]),
            "bias_regularizer": regs.config_of(self._regularizers["bias"]),
        }


@register
class Dense(KernelLayer):
    """y = activation(x·W + b), W of shape (in, units).

    Init like PyTorch's Linear: W, b ~ U(±1/sqrt(in)). Works on any leading axes.
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="torch_uniform",
        bias_initializer="torch_uniform",
        kernel_regularizer=None,
        bias_regularizer=None,
        name=None,
        dtype="float32",
    ):
        super().__init__(
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            name=name,
            dtype=dtype,
        )
        if int(units) <= 0:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}")
        self.units = int(units)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        self.add_kernel_and_bias((fan_in, self.units), self.units, fan_in)

    def call(self, x):
        self.expect_last_dim(x, self.kernel.shape[0])
        pre = ops.linear(x, self.kernel, self.bias)
        # The per-example gradient hook (a no-op unless DP-SGD is recording, per_example.py).
        return self.activation(per_example.linear_site(x, pre, self.kernel, self.bias))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@register
class Activation(Layer):
    """y = f(x) for a named activation f."""

    def __init__(self, activation, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.activation_name = activations.name_of(activation)
        self.activation = activations.get(activation)

    def call(self, x):
        return self.activation(x)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation_name}


@register
class Dropout(Layer):
    """Training: y = x·mask/(1−rate), mask ~ Bernoulli(1−rate). Inference: y = x.

    With a `seed` the layer draws from its own generator `rng` (part of a checkpoint's state),
    else from the library's default one (splitgrad.seed).
    """

    def __init__(self, rate, seed=None, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1], got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def stochastic(self):
        return self.rate > 0.0

    def call(self, x):
        if not self.training or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return x * np.zeros(x.shape, dtype=x.dtype)
        rng = self.rng or get_rng()
        keep = rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        mask = (keep >= self.rate).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@register
class Flatten(Layer):
    """(batch, d1, d2, ...) → (batch, d1·d2·...)."""

    def call(self, x):
        return x.reshape(x.shape[0], -1)


@register
class Reshape(Layer):
    """(batch, ...) → (batch, *target_shape); one entry may be −1."""

    def __init__(self, target_shape, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.target_shape = tuple(int(s) for s in target_shape)

    def call(self, x):
        n = int(np.prod(x.shape[1:]))
        known = int(np.prod([s for s in self.target_shape if s != -1]))
        if (-1 not in self.target_shape and known != n) or (known == 0 or n % known):
            raise ValueError(
                f"layer {self.name!r} (Reshape) cannot reshape input {tuple(x.shape)} "
                f"({n} values per sample) to {self.target_shape}"
            )
        return x.reshape((x.shape[0],) + self.target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}
