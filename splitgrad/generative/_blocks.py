"""The default networks of the generative models, and how a network a user passes in is saved.

Two kinds, chosen with `kind=`:
* "dense": Flatten → Dense(h, relu) for h in `hidden`, and the mirror image back to the input's
  shape; works for any input shape.
* "conv": stride-2 convolutions, `filters[i]` channels each (so each one halves the height and
  width), and stride-2 transposed convolutions back up; the image's height and width must be
  multiples of 2^len(filters).

The networks that map back to the data (decoders, generators) depend on the input's shape, so
the models create them in `build`, when the first batch shows it. A network given by the user
is saved as {"class", "config"} (like Sequential's layers) and rebuilt by class name.
"""

from __future__ import annotations

import math

from ..layers.conv import Conv2D, Conv2DTranspose
from ..layers.core import Activation, Dense, Flatten, Reshape
from ..layers.layer import Layer, layer_class
from ..layers.normalization import BatchNormalization
from ..model import Sequential

KINDS = ("dense", "conv")


def check_kind(kind, who):
    if kind not in KINDS:
        raise ValueError(f"{who}: kind must be 'dense' or 'conv', got {kind!r}")
    return kind


def sizes(values, who, what):
    """A tuple of positive ints from an int or a sequence (e.g. hidden=(512,))."""
    values = (values,) if isinstance(values, int) else tuple(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{who}: {what} must be a positive int or a list of them, got {values!r}")
    if min(values) <= 0:
        raise ValueError(f"{who}: {what} must be positive, got {list(values)}")
    return values


def spec(layer):
    """What a config stores for a user's network: None for a default one."""
    return None if layer is None else {"class": type(layer).__name__, "config": layer.get_config()}


def from_spec(value, who, what):
    """The network a `spec` describes (a Layer passes through; None stays None)."""
    if value is None or isinstance(value, Layer):
        return value
    if isinstance(value, dict) and "class" in value:
        return layer_class(value["class"]).from_config(value.get("config", {}))
    raise TypeError(f"{who}: {what} must be a Layer (e.g. nn.Sequential), got {value!r}")


def image_grid(shape, steps, who):
    """(height, width) after `steps` halvings of an NHWC sample `shape` (no batch axis); a clear
    error when the strides do not divide the image."""
    if len(shape) != 3:
        raise ValueError(
            f"{who}: kind='conv' needs images (batch, height, width, channels), got samples of "
            f"shape {tuple(shape)}; use kind='dense' or add a channel axis: x[..., None]"
        )
    h, w, _ = shape
    step = 2**steps
    if h % step or w % step:
        raise ValueError(
            f"{who}: kind='conv' halves the image {steps} times, so its height and width must be "
            f"multiples of {step}; got {h}×{w}. Pad or crop the images, use fewer filters, or "
            "use kind='dense'"
        )
    return h // step, w // step


def encoder(kind, hidden, filters, outputs=None, dtype="float32") -> Sequential:
    """x → features (→ Dense(outputs) when given): the data side of the autoencoders."""
    if kind == "dense":
        layers = [Flatten()] + [Dense(h, activation="relu") for h in hidden]
    else:
        layers = [Conv2D(f, 3, strides=2, padding="same", activation="relu") for f in filters]
        layers.append(Flatten())
    if outputs is not None:
        layers.append(Dense(outputs))
    return Sequential(layers, name="encoder", dtype=dtype)


def decoder(kind, shape, hidden, filters, activation, who, dtype="float32") -> Sequential:
    """z → a sample of `shape` (no batch axis), through `activation` (None: raw values)."""
    if kind == "dense":
        layers = [Dense(h, activation="relu") for h in reversed(hidden)]
        layers.append(Dense(math.prod(shape), activation=activation))
        if len(shape) > 1:
            layers.append(Reshape(shape))
        return Sequential(layers, name="decoder", dtype=dtype)
    h0, w0 = image_grid(shape, len(filters), who)
    layers = [Dense(h0 * w0 * filters[-1], activation="relu"), Reshape((h0, w0, filters[-1]))]
    layers += [
        Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu")
        for f in reversed(filters[:-1])
    ]
    layers.append(Conv2DTranspose(shape[-1], 3, strides=2, padding="same", activation=activation))
    return Sequential(layers, name="decoder", dtype=dtype)


def _bn():
    # PyTorch's BatchNorm defaults (momentum 0.1 = Keras 0.9, eps 1e-5), as in the DCGAN paper.
    return BatchNormalization(momentum=0.9, epsilon=1e-5)


def generator(kind, shape, hidden, filters, dtype="float32") -> Sequential:
    """z → an image in [0, 1] of `shape`. "conv" is DCGAN's (Radford et al. 2016): Dense to the
    smallest grid, then 4×4 stride-2 transposed convolutions, BatchNorm and ReLU between them,
    a sigmoid at the end."""
    if kind == "dense":
        layers = [Dense(h, activation="relu") for h in reversed(hidden)]
        layers.append(Dense(math.prod(shape), activation="sigmoid"))
        if len(shape) > 1:
            layers.append(Reshape(shape))
        return Sequential(layers, name="generator", dtype=dtype)
    h0, w0 = image_grid(shape, len(filters), "GAN")
    top = filters[-1]
    layers = [Dense(h0 * w0 * top), _bn(), Activation("relu"), Reshape((h0, w0, top))]
    for f in reversed(filters[:-1]):
        layers += [Conv2DTranspose(f, 4, strides=2, padding="same"), _bn(), Activation("relu")]
    layers.append(Conv2DTranspose(shape[-1], 4, strides=2, padding="same", activation="sigmoid"))
    return Sequential(layers, name="generator", dtype=dtype)


def discriminator(kind, hidden, filters, dtype="float32") -> Sequential:
    """image → one logit (real vs generated). "conv": 4×4 stride-2 convolutions with leaky
    ReLU (DCGAN), then Dense(1)."""
    if kind == "dense":
        layers = [Flatten()] + [Dense(h, activation="leaky_relu") for h in hidden]
    else:
        layers = [Conv2D(f, 4, strides=2, padding="same", activation="leaky_relu") for f in filters]
        layers.append(Flatten())
    layers.append(Dense(1))
    return Sequential(layers, name="discriminator", dtype=dtype)
