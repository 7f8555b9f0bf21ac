"""VAE: a variational autoencoder (Kingma & Welling 2014), dense or convolutional.

    vae = VAE(latent_dim=2)                    # 784 → 512 ReLU → (μ, log σ²) of 2 → 512 → 784
    vae.compile(optimizer=sg.optim.Adam(1e-3))
    vae.fit(x, x, batch_size=128, epochs=20)   # history: loss, reconstruction, kl
    vae.elbo(x_test)                           # {"elbo", "reconstruction", "kl"}, nats/example
    vae.sample(16); vae.interpolate(x[0], x[1], steps=10)

The loss is the one hook `compute_loss`, so `fit`'s own `train_step`, `evaluate` and the ways
of splitting training all train the same ELBO.
"""

from __future__ import annotations

import numpy as np

from .. import losses
from .. import validate as check
from ..layers.core import Dense
from ..layers.layer import register
from ..tensor import no_grad
from . import _blocks
from ._base import GenerativeModel, check_targets
from .autoencoder import _check_round_trip, interpolate
from .objectives import gaussian_kl, reparameterize, standard_normal

RECONSTRUCTIONS = ("bce", "mse")


@register
class VAE(GenerativeModel):
    """q(z|x) = N(μ(x), diag σ²(x)) with μ and log σ² two Dense heads on the encoder;
    z = μ + exp(½·log σ²)·ε, ε ~ N(0, I) from splitgrad's generator (the reparameterisation
    trick); the decoder gives logits (reconstruction "bce": Bernoulli pixels in [0, 1]) or means
    ("mse": squared error) of x.

    loss = reconstruction + β·KL, per example and averaged over the batch, where
    reconstruction = Σ_pixels BCE(decoder(z), y) (or Σ (decoder(z) − y)²) and
    KL = ½·Σ_j (σ_j² + μ_j² − 1 − log σ_j²). With "bce" and β = 1, −loss is the ELBO, a lower
    bound on log p(x). In inference mode the model's output is the reconstruction from z = μ.
    """

    TRACKED = ("reconstruction", "kl")

    def __init__(
        self,
        latent_dim=2,
        kind="dense",
        hidden=(512,),
        filters=(32, 64),
        beta=1.0,
        reconstruction="bce",
        encoder=None,
        decoder=None,
        name=None,
        dtype="float32",
    ):
        super().__init__(name=name, dtype=dtype)
        who = self._set_architecture(latent_dim, kind, hidden, filters)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise ValueError(f"{who}: beta must be a number ≥ 0, got {beta!r}")
        self.beta = float(beta)
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(
                f"{who}: reconstruction must be 'bce' (pixels in [0, 1]) or 'mse', "
                f"got {reconstruction!r}"
            )
        self.reconstruction = reconstruction
        encoder = _blocks.from_spec(encoder, who, "encoder")
        decoder = _blocks.from_spec(decoder, who, "decoder")
        self.given = {"encoder": encoder is not None, "decoder": decoder is not None}
        if encoder is None:  # the body: x → features; the two heads below give μ and log σ²
            encoder = _blocks.encoder(self.kind, self.hidden, self.filters, None, self.dtype)
        self.encoder = encoder
        self.z_mean = Dense(self.latent_dim, name="z_mean", dtype=self.dtype)
        self.z_log_var = Dense(self.latent_dim, name="z_log_var", dtype=self.dtype)
        self.decoder = decoder  # the default one is made in build, from the input's shape

    def compile(self, optimizer="adam", loss=None, metrics=None):
        """Keras's compile. `loss` compares the decoder's raw output with the target and must
        sum over the batch (reduction "sum"; it is divided by the batch size); by default it is
        binary cross-entropy on logits ("bce") or squared error ("mse")."""
        if loss is None:
            loss = (
                losses.BinaryCrossentropy(from_logits=True, reduction="sum")
                if self.reconstruction == "bce"
                else losses.MeanSquaredError(reduction="sum")
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics)

    def build(self, input_shape):
        if self.decoder is None:
            self.decoder = _blocks.decoder(
                self.kind,
                tuple(input_shape[1:]),
                self.hidden,
                self.filters,
                None,
                type(self).__name__,
                self.dtype,
            )
            self.decoder.train(self.training)
        sample = np.zeros((1,) + tuple(input_shape[1:]), self.dtype)
        with no_grad():
            mu, _ = self.posterior(sample)
            out = self.decoder(mu)
        _check_round_trip(self, input_shape, out.shape)

    # ----- the model --------------------------------------------------------------------
    def posterior(self, x):
        """(μ, log σ²) of q(z|x), as Tensors."""
        h = self.encoder(x)
        return self.z_mean(h), self.z_log_var(h)

    def output(self, raw):
        """The decoder's raw output as data: sigmoid of the logits ("bce"), or as is."""
        return raw.sigmoid() if self.reconstruction == "bce" else raw

    def call(self, x):
        mu, log_var = self.posterior(x)
        z = reparameterize(mu, log_var) if self.training else mu
        return self.output(self.decoder(z))

    def loss_parts(self, x, y, rng=None):
        """(reconstruction, KL, decoder output) for a batch, the first two averaged over it;
        z = μ + σ·ε with ε from `rng` (splitgrad's generator by default)."""
        mu, log_var = self.posterior(x)
        raw = self.decoder(reparameterize(mu, log_var, rng))
        check_targets(self, y, raw.shape)
        rec = self.loss(y, raw) * (1.0 / len(raw.data))
        return rec, gaussian_kl(mu, log_var), raw

    def compute_loss(self, x, y):
        """reconstruction + β·KL (+ regularizers); the parts go to the trackers."""
        rec, kl, raw = self.loss_parts(x, y)
        loss = rec + kl * self.beta
        for penalty in self.regularization_losses():
            loss = loss + penalty
        self.record(len(raw.data), reconstruction=rec.data, kl=kl.data)
        self._last_pred = raw  # the trackers ignore it; the user's metrics get the data
        if len(self.metrics) > len(getattr(self, "trackers", {})):
            with no_grad():
                self._last_pred = self.output(raw.detach())
        return loss

    # ----- using a trained model --------------------------------------------------------
    def elbo(self, x, y=None, rng=None, batch_size=256) -> dict:
        """The ELBO on x (targets y, x by default) in nats per example, in inference mode:
        {"elbo": −(reconstruction + KL), "reconstruction", "kl"}, one z per example drawn with
        `rng` (pass a seeded generator for a figure that does not change between calls)."""
        x = check.numeric_array(x, "x")
        y = x if y is None else check.numeric_array(y, "y")
        batch_size = check.positive_int(batch_size, "VAE.elbo: batch_size")
        rec_sum = kl_sum = 0.0
        was = self.training
        self.eval()
        try:
            with no_grad():
                for i in range(0, len(x), batch_size):
                    rec, kl, _ = self.loss_parts(x[i : i + batch_size], y[i : i + batch_size], rng)
                    n = len(x[i : i + batch_size])
                    rec_sum, kl_sum = rec_sum + float(rec.data) * n, kl_sum + float(kl.data) * n
        finally:
            self.train(was)
        rec, kl = rec_sum / len(x), kl_sum / len(x)
        return {"elbo": -(rec + kl), "reconstruction": rec, "kl": kl}

    def encode(self, x, batch_size=256) -> np.ndarray:
        """μ of q(z|x): the code of each sample."""
        return self.infer(lambda b: self.posterior(b)[0], x, batch_size)

    def encode_distribution(self, x, batch_size=256):
        """(μ, log σ²) of q(z|x) as arrays."""
        mu = self.encode(x, batch_size)
        return mu, self.infer(lambda b: self.posterior(b)[1], x, batch_size)

    def decode(self, z, batch_size=256) -> np.ndarray:
        """The data the decoder makes from codes z (pixel probabilities for "bce")."""
        return self.infer(lambda b: self.output(self.decoder(b)), z, batch_size)

    def sample(self, n, rng=None) -> np.ndarray:
        """n new samples: decode(z) with z ~ N(0, I), the prior, from `rng` (splitgrad's
        generator by default)."""
        n = check.positive_int(n, "VAE.sample: n")
        return self.decode(standard_normal((n, self.latent_dim), self.dtype, rng))

    def interpolate(self, a, b, steps=8) -> np.ndarray:
        """`steps` samples decoded along the straight line between μ(a) and μ(b)."""
        return interpolate(self, a, b, steps)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "kind": self.kind,
            "hidden": list(self.hidden),
            "filters": list(self.filters),
            "beta": self.beta,
            "reconstruction": self.reconstruction,
            "encoder": _blocks.spec(self.encoder) if self.given["encoder"] else None,
            "decoder": _blocks.spec(self.decoder) if self.given["decoder"] else None,
        }
