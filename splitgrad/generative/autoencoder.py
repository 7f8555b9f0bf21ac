"""Autoencoder: input → latent code → reconstruction, dense or convolutional.

    ae = Autoencoder(latent_dim=32)                    # Flatten → 512 ReLU → 32 → 512 → 784
    ae.compile(optimizer=sg.optim.Adam(1e-3))          # loss "mse" unless told otherwise
    ae.fit(x, x, batch_size=128, epochs=20)            # fit(noisy_x, x) denoises
    codes, images = ae.encode(x_test), ae.decode(codes)

The default networks are in _blocks.py; pass `encoder=` / `decoder=` (any Layer) to use your
own, or subclass and override `call`. The decoder is made when the first batch shows the
input's shape.
"""

from __future__ import annotations

import numpy as np

from .. import validate as check
from ..layers import activations
from ..layers.layer import register
from ..tensor import no_grad
from . import _blocks
from ._base import GenerativeModel, check_targets


@register
class Autoencoder(GenerativeModel):
    """z = encoder(x), x̂ = decoder(z), trained so that x̂ matches the target y (x itself, or the
    clean x behind a noisy input) under the compiled loss, MSE by default.

    kind "dense": Flatten → Dense(h, relu) for h in `hidden` → Dense(latent_dim) (a linear
    code), and back through the same sizes to the input's shape. kind "conv": 3×3 stride-2
    convolutions with `filters` channels, then Dense(latent_dim); the decoder mirrors it with
    transposed convolutions. The output goes through `output_activation` (sigmoid: data in
    [0, 1]).
    """

    def __init__(
        self,
        latent_dim=32,
        kind="dense",
        hidden=(512,),
        filters=(32, 64),
        output_activation="sigmoid",
        encoder=None,
        decoder=None,
        name=None,
        dtype="float32",
    ):
        super().__init__(name=name, dtype=dtype)
        who = self._set_architecture(latent_dim, kind, hidden, filters)
        activations.get(output_activation)  # an unknown name fails here, not at build
        self.output_activation = activations.name_of(output_activation)
        encoder = _blocks.from_spec(encoder, who, "encoder")
        decoder = _blocks.from_spec(decoder, who, "decoder")
        self.given = {"encoder": encoder is not None, "decoder": decoder is not None}
        if encoder is None:
            encoder = _blocks.encoder(
                self.kind, self.hidden, self.filters, self.latent_dim, self.dtype
            )
        self.encoder = encoder
        self.decoder = decoder  # the default one is made in build, from the input's shape

    def compile(self, optimizer="adam", loss="mse", metrics=None):
        """Keras's compile, with the reconstruction loss defaulting to MSE."""
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics)

    def build(self, input_shape):
        if self.decoder is None:
            self.decoder = _blocks.decoder(
                self.kind,
                tuple(input_shape[1:]),
                self.hidden,
                self.filters,
                self.output_activation,
                type(self).__name__,
                self.dtype,
            )
            self.decoder.train(self.training)
        sample = np.zeros((1,) + tuple(input_shape[1:]), self.dtype)
        with no_grad():
            out = self.decoder(self.encoder(sample))
        _check_round_trip(self, input_shape, out.shape)

    def call(self, x):
        return self.decoder(self.encoder(x))

    def compute_loss(self, x, y):
        y_pred = self(x)
        check_targets(self, y, y_pred.shape)
        loss = self.loss(y, y_pred)
        for penalty in self.regularization_losses():
            loss = loss + penalty
        self._last_pred = y_pred
        return loss

    # ----- using a trained model --------------------------------------------------------
    def encode(self, x, batch_size=256) -> np.ndarray:
        """The latent codes of x (inference mode, batched)."""
        return self.infer(self.encoder, x, batch_size)

    def decode(self, z, batch_size=256) -> np.ndarray:
        """The reconstructions the decoder makes from codes z."""
        return self.infer(self.decoder, z, batch_size)

    def interpolate(self, a, b, steps=8) -> np.ndarray:
        """`steps` outputs along the straight line between the codes of samples a and b (the
        first is a's reconstruction, the last b's)."""
        return interpolate(self, a, b, steps)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "kind": self.kind,
            "hidden": list(self.hidden),
            "filters": list(self.filters),
            "output_activation": self.output_activation,
            "encoder": _blocks.spec(self.encoder) if self.given["encoder"] else None,
            "decoder": _blocks.spec(self.decoder) if self.given["decoder"] else None,
        }


def interpolate(model, a, b, steps):
    """model.decode of the codes (1 − t)·encode(a) + t·encode(b), t = 0 … 1 in `steps` steps."""
    steps = check.positive_int(steps, f"{type(model).__name__}.interpolate: steps")
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"{type(model).__name__}.interpolate: a and b must be two samples of the same "
            f"shape, got {a.shape} and {b.shape}"
        )
    codes = model.encode(np.stack([a, b]))
    t = np.linspace(0.0, 1.0, steps, dtype=codes.dtype)[:, None]
    return model.decode((1 - t) * codes[0] + t * codes[1])


def _check_round_trip(model, input_shape, out_shape):
    if tuple(out_shape[1:]) != tuple(input_shape[1:]):
        raise ValueError(
            f"{type(model).__name__} {model.name!r}: the decoder gives samples of shape "
            f"{tuple(out_shape[1:])} for inputs of shape {tuple(input_shape[1:])}; they must "
            "match, so change the decoder's last layer (or its Reshape)"
        )
