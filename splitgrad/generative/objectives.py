"""The maths of the generative models, composed from existing ops (none has a backward of its own).

    kl = gaussian_kl(mu, log_var)            # KL(q(z|x) ‖ N(0, I)), per example, batch mean
    z = reparameterize(mu, log_var)          # μ + exp(½·log σ²)·ε, ε ~ N(0, I)
    d = discriminator_loss(real_logits, fake_logits, label_smoothing=0.1)
    g = generator_loss(fake_logits)          # the non-saturating loss −mean log σ(D(G(z)))

The reconstruction terms are the library's losses (binary cross-entropy on logits, squared
error) with reduction "sum", divided by the batch size, so every term of the ELBO is in nats per
example. `Tracker` is a metric the models fill themselves, so the parts of a loss (KL,
reconstruction, the two players' losses) reach the progress bar and History through the one
training loop.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..losses import binary_crossentropy
from ..metrics import Metric
from ..random import get_rng
from ..tensor import Tensor


def gaussian_kl(mu: Tensor, log_var: Tensor, reduction="mean") -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½·Σ_j (σ_j² + μ_j² − 1 − log σ_j²), summed over the latent
    units (the last axis); "mean" averages over the examples, "sum" adds them, "none" keeps one
    value per example."""
    per_example = (ops.exp(log_var) + mu * mu - 1.0 - log_var).sum(axis=-1) * 0.5
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return per_example.sum()
    if reduction == "mean":
        return per_example.mean()
    raise ValueError(f"gaussian_kl: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def standard_normal(shape, dtype, rng=None) -> np.ndarray:
    """ε ~ N(0, I) of `shape`, drawn in `dtype` from `rng` (splitgrad's generator by default, so
    `splitgrad.seed(n)` makes the draws reproducible)."""
    rng = get_rng() if rng is None else rng
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return rng.standard_normal(shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def reparameterize(mu: Tensor, log_var: Tensor, rng=None) -> Tensor:
    """z = μ + exp(½·log σ²)·ε with ε ~ N(0, I) from `rng` (splitgrad's generator by default):
    the sample is a differentiable function of μ and log σ², so gradients reach the encoder."""
    eps = standard_normal(mu.shape, mu.dtype, rng)
    return mu + ops.exp(log_var * 0.5) * eps


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, label_smoothing=0.0) -> Tensor:
    """BCE(D(x), 1 − s) + BCE(D(G(z)), 0), each a mean over its batch: the discriminator learns
    to call real images real (target 1 − s: one-sided label smoothing, Salimans et al. 2016)
    and generated ones fake. s = 0 is the plain GAN loss."""
    real = np.full(real_logits.shape, 1.0 - label_smoothing, dtype=real_logits.dtype)
    fake = np.zeros(fake_logits.shape, dtype=fake_logits.dtype)
    return binary_crossentropy(real, real_logits, from_logits=True) + binary_crossentropy(
        fake, fake_logits, from_logits=True
    )


def generator_loss(fake_logits: Tensor) -> Tensor:
    """BCE(D(G(z)), 1) = −mean log σ(D(G(z))): the non-saturating generator loss (Goodfellow et
    al. 2014). Minimising log(1 − σ(D(G(z)))) instead gives vanishing gradients exactly when
    the discriminator wins early in training."""
    ones = np.ones(fake_logits.shape, dtype=fake_logits.dtype)
    return binary_crossentropy(ones, fake_logits, from_logits=True)


class Tracker(Metric):
    """Running mean of a value the model reports itself: result = Σ value·count / Σ count.

    `record(value, count)` adds a batch's value; `update(y_true, y_pred)`, which fit and
    evaluate call with every batch's predictions, does nothing.
    """

    name = "tracker"

    def record(self, value, count):
        self.total += float(value) * count
        self.count += int(count)

    def update(self, y_true, y_pred):
        pass
