"""Convolution and pooling layers, channels-last (NHWC) like Keras: Conv2D, Conv2DTranspose,
MaxPool2D, AvgPool2D and GlobalAveragePooling2D.

Kernels are (kh, kw, in, out). The maths lives in the fused primitives of `conv_ops`; these
layers own the weights, check shapes, turn "valid"/"same" into explicit padding (Keras's rule,
the odd pixel on the bottom/right) and keep a `Workspace` each, so a training loop reuses its
large arrays instead of allocating (and page-faulting) them every step.
"""

from __future__ import annotations

from .. import ops
from .._kernels.workspace import Workspace
from ..ops import conv as conv_ops
from ..ops import pooling as pooling_ops
from ..ops.conv import conv_geometry, pair
from . import per_example
from .core import KernelLayer
from .layer import Layer, register


def _padding_arg(padding, who):
    if isinstance(padding, str):
        padding = padding.lower()
        if padding in ("valid", "same"):
            return padding
    elif isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    raise ValueError(f"{who}: padding must be 'valid', 'same' or an int >= 0, got {padding!r}")


def check_nhwc(layer, shape, channels=None):
    """Raise a clear error unless `shape` is (batch, height, width, channels) with `channels`."""
    kind = type(layer).__name__
    if len(shape) != 4:
        hint = (
            " Grayscale images of shape (batch, height, width) need a channel axis: x[..., None]."
            if len(shape) == 3
            else " Reshape the input to (batch, height, width, channels)."
        )
        raise ValueError(
            f"layer {layer.name!r} ({kind}) expects 4-D channels-last input (batch, height, "
            f"width, channels), got shape {tuple(shape)}.{hint}"
        )
    if channels is not None and shape[3] != channels:
        fix = (
            channels_first_hint(kind, shape)
            if shape[1] == channels
            else "Images are channels-last: transpose NCHW data with x.transpose(0, 2, 3, 1), "
            "or make a new layer for the new channel count."
        )
        raise ValueError(
            f"layer {layer.name!r} ({kind}) was built for {channels} input channels (input "
            f"shape {layer.input_shape}) but got {shape[3]} channels (input shape "
            f"{tuple(shape)}). {fix}"
        )


def looks_channels_first(shape) -> bool:
    """A 4-D shape whose axis 1 looks like channels (1 or 3) and whose last axis does not."""
    return len(shape) == 4 and shape[1] in (1, 3) and shape[3] > 4


def channels_first_hint(kind, shape) -> str:
    n, c, h, w = shape
    return (
        f"splitgrad's {kind} is channels-last (N, H, W, C); your input of shape "
        f"{tuple(shape)} looks channels-first (N, C, H, W) = ({n}, {c}, {h}, {w}): use "
        "x.transpose(0, 2, 3, 1)"
    )


def _geometry_of(layer, shape, kernel, strides, dilation):
    """((out_h, out_w), pads) of a window sliding over NHWC `shape`; a window that does not
    fit, on input that looks NCHW, is explained as the layout mistake it likely is."""
    who = f"layer {layer.name!r} ({type(layer).__name__})"
    try:
        rows = conv_geometry(
            shape[1], kernel[0], strides[0], dilation[0], layer.padding, who, "height"
        )
        cols = conv_geometry(
            shape[2], kernel[1], strides[1], dilation[1], layer.padding, who, "width"
        )
    except ValueError as exc:
        if looks_channels_first(shape):
            raise ValueError(f"{exc} {channels_first_hint(type(layer).__name__, shape)}") from None
        raise
    return (rows[0], cols[0]), ((rows[1], rows[2]), (cols[1], cols[2]))


class _ConvBase(KernelLayer):
    """Shared arguments, weights and config of Conv2D and Conv2DTranspose."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
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
        who = type(self).__name__
        if int(filters) <= 0:
            raise ValueError(f"{who}: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size, f"{who}: kernel_size")
        self.strides = pair(strides, f"{who}: strides")
        self.dilation_rate = pair(dilation_rate, f"{who}: dilation_rate")
        self.padding = _padding_arg(padding, who)
        self._ws = Workspace()

    def _geometry(self, shape):
        return _geometry_of(self, shape, self.kernel_size, self.strides, self.dilation_rate)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
        }


@register
class Conv2D(_ConvBase):
    """y = activation(x ⋆ W + b): NHWC cross-correlation with kernel W of shape (kh, kw, in,
    filters). Init like PyTorch's Conv2d: W, b ~ U(±1/sqrt(in·kh·kw)).

    padding "valid" (none), "same" (Keras: output ceil(H/stride), extra pixel bottom/right) or
    an int (that many pixels on every side). activation="relu" runs fused inside the conv op.
    """

    wants_own_threads = True  # its op splits the batch over splitgrad's own threads

    def build(self, input_shape):
        check_nhwc(self, input_shape)
        self._geometry(input_shape)  # a kernel that does not fit fails before any weight
        cin = input_shape[3]
        kh, kw = self.kernel_size
        self.add_kernel_and_bias((kh, kw, cin, self.filters), self.filters, cin * kh * kw)

    def call(self, x):
        check_nhwc(self, x.shape, self.kernel.shape[2])
        _, pads = self._geometry(x.shape)
        recording = per_example.recording_now()  # DP-SGD: receptive fields as a linear site
        fused = self.activation_name == "relu" and not recording
        y = conv_ops.conv2d(
            x,
            self.kernel,
            self.bias,
            stride=self.strides,
            dilation=self.dilation_rate,
            pads=pads,
            relu=fused,
            ws=None if recording else self._ws,
        )
        if recording:
            fields = conv_ops.patches(
                x.data, self.kernel_size, self.strides, self.dilation_rate, pads
            )
            y = per_example.linear_site(fields, y, self.kernel, self.bias)
        return y if fused else self.activation(y)


@register
class Conv2DTranspose(_ConvBase):
    """y = activation(conv2dᵀ(x, W) + b): the input-gradient of a Conv2D, used to upsample.
    Per-example gradients (DP-SGD) come through `per_example.transposed_site`.

    Kernel (kh, kw, filters, in) like Keras (PyTorch's (in, out, kh, kw) is
    `W.transpose(3, 2, 0, 1)`); init U(±1/sqrt(filters·kh·kw)) like PyTorch's ConvTranspose2d.
    Output size: "valid" (H−1)·s + d·(k−1) + 1; "same" H·s (the cropped pixel is bottom/right's).
    """

    def build(self, input_shape):
        check_nhwc(self, input_shape)
        kh, kw = self.kernel_size
        self.add_kernel_and_bias(
            (kh, kw, self.filters, input_shape[3]), self.filters, self.filters * kh * kw
        )

    def output_size(self, h, w):
        """The (height, width) this layer produces from an (h, w) input."""
        out = []
        for size, k, s, d in zip((h, w), self.kernel_size, self.strides, self.dilation_rate):
            if self.padding == "same":
                out.append(size * s)
            else:
                crop = 2 * self.padding if isinstance(self.padding, int) else 0
                out.append((size - 1) * s + d * (k - 1) + 1 - crop)
        return tuple(out)

    def call(self, x):
        check_nhwc(self, x.shape, self.kernel.shape[3])
        out_hw = self.output_size(x.shape[1], x.shape[2])
        if min(out_hw) < 1:
            raise ValueError(
                f"layer {self.name!r} (Conv2DTranspose): padding {self.padding} leaves no output "
                f"pixels for input shape {tuple(x.shape)}; use less padding."
            )
        # The pads are those of the forward conv that maps out_hw back onto the input size.
        _, pads = self._geometry((0,) + out_hw + (0,))
        y = conv_ops.conv2d_transpose(
            x,
            self.kernel,
            self.bias,
            stride=self.strides,
            dilation=self.dilation_rate,
            pads=pads,
            out_hw=out_hw,
            ws=self._ws,
        )
        if per_example.recording_now():  # DP-SGD: per-example kernel gradients, see the hook
            y = per_example.transposed_site(x, y, self.kernel, self.bias, self._delta_fields(pads))
        return self.activation(y)

    def _delta_fields(self, pads):
        """δ (n, H', W', filters) -> its receptive fields at each input pixel, (n, h·w,
        kh·kw·filters): the forward conv that this layer transposes, run on δ, lands on the
        input's grid (the matrix the op's own backward multiplies by x for the kernel)."""
        k, s, d = self.kernel_size, self.strides, self.dilation_rate
        return lambda delta: conv_ops.patches(delta, k, s, d, pads)


class _Pool2D(Layer):
    """Shared arguments of the 2-D pooling layers: pool_size, strides (default pool_size)."""

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        who = type(self).__name__
        self.pool_size = pair(pool_size, f"{who}: pool_size")
        self.strides = pair(strides if strides is not None else self.pool_size, f"{who}: strides")
        self.padding = _padding_arg(padding, who)

    def build(self, input_shape):
        check_nhwc(self, input_shape)

    def _geometry(self, shape):
        check_nhwc(self, shape)
        return _geometry_of(self, shape, self.pool_size, self.strides, (1, 1))

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
        }


@register
class MaxPool2D(_Pool2D):
    """y = max over each pool_size window (NHWC); the gradient goes to the first maximum in
    row-major window order and overlapping windows add up (PyTorch's rule)."""

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, dtype="float32"):
        super().__init__(pool_size, strides, padding, name=name, dtype=dtype)
        self._ws = Workspace()

    def call(self, x):
        out_hw, pads = self._geometry(x.shape)
        return pooling_ops.max_pool2d(x, self.pool_size, self.strides, pads, out_hw, ws=self._ws)


@register
class AvgPool2D(_Pool2D):
    """y = mean over each pool_size window (NHWC); with "same" padding only the real pixels of
    a window are averaged (Keras; PyTorch's count_include_pad=False)."""

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, dtype="float32"):
        super().__init__(pool_size, strides, padding, name=name, dtype=dtype)
        self._ws = Workspace()

    def call(self, x):
        out_hw, pads = self._geometry(x.shape)
        return pooling_ops.avg_pool2d(x, self.pool_size, self.strides, pads, out_hw, ws=self._ws)


@register
class GlobalAveragePooling2D(Layer):
    """y[n, c] = mean over height and width of x[n, :, :, c]; keepdims keeps (n, 1, 1, c)."""

    def __init__(self, keepdims=False, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.keepdims = bool(keepdims)

    def call(self, x):
        check_nhwc(self, x.shape)
        return ops.mean(x, axis=(1, 2), keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


# Keras's longer names for the same classes.
MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D
