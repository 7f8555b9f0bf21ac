"""vae: a variational autoencoder with a 2-unit latent space on Fashion-MNIST.

Encoder Flatten → Dense 512 ReLU → (μ, log σ²) of 2 units; z = μ + σ·ε; decoder Dense 512
ReLU → Dense 784 logits; loss = Σ_pixels BCE + KL (β = 1), so −loss is the ELBO in nats per
image; Adam 1e-3, batch 128, 30 epochs. Why these: it is the classic course VAE (Kingma &
Welling's MLP, as in the Keras VAE example), and two latent units can be drawn as they are: the
run folder's traversal.png is the decoder over the prior's 5–95 % quantiles (the "learned
manifold") and latent_scatter.png shows where each class lands. A larger latent space reaches
a better ELBO but no longer fits on a page. Measured: test ELBO −262.0 nats per image after the
30 epochs (the same model in PyTorch, same budget: −262.0), −265.2 after 10.

Also written: reconstructions.png (test images above their reconstructions from μ), samples.png
(64 draws from the prior) and interpolation.png (the decoder along straight lines between the
codes of test-image pairs). Test metrics: the ELBO and its two parts on the test set, one z per
image drawn from a fixed generator (seed 0), so `splitgrad evaluate` repeats them exactly.
benchmarks/vae_vs_torch.py trains the same model in PyTorch for the same budget. Needs Debian's
dataset-fashion-mnist; quick mode trains 1 epoch on 1,000 images.
"""

from __future__ import annotations

import numpy as np

from splitgrad import optim
from splitgrad.datasets import load_fashion_mnist
from splitgrad.generative import VAE, pictures
from splitgrad.recipes import autoencoder

DESCRIPTION = "VAE 784-512-(2)-512-784 on Fashion-MNIST (ELBO, samples, latent map)"
DEFAULTS = {"epochs": 30, "batch_size": 128, "learning_rate": 1e-3}
QUICK = {"epochs": 1}
TASK = "generative"
LATENT, HIDDEN = 2, 512
EVAL_SEED = 0


def load_data(quick=False, seed=0):
    """Fashion-MNIST images as inputs and targets, the labels beside them (see autoencoder)."""
    return autoencoder.images(load_fashion_mnist(), quick)


def build_model(learning_rate, data):
    """The VAE above, compiled with Adam (reconstruction: BCE on the decoder's logits)."""
    model = VAE(latent_dim=LATENT, kind="dense", hidden=(HIDDEN,), beta=1.0)
    model.compile(optimizer=optim.Adam(learning_rate=learning_rate))
    return model


def evaluate(model, data):
    """Test ELBO, reconstruction and KL, nats per image (one z each, from a fixed seed)."""
    return model.elbo(data.x_test, rng=np.random.default_rng(EVAL_SEED))


def attachments(model, data, history):
    """The autoencoder pictures (traversal over the prior), samples and interpolations."""
    rng = np.random.default_rng(EVAL_SEED)
    files = autoencoder.code_pictures(model, data, model.encode(data.x_test), prior=True)
    files["samples.png"] = pictures.image_grid(
        model.sample(64, rng=rng), "64 samples from the prior z ~ N(0, I)"
    )
    pairs = rng.choice(len(data.x_test), size=(6, 2), replace=False)
    lines = np.concatenate(
        [model.interpolate(data.x_test[a], data.x_test[b], 10) for a, b in pairs]
    )
    files["interpolation.png"] = pictures.image_grid(
        lines, "interpolation between the codes of two test images (one pair per row)", cols=10
    )
    return files
