"""gan: a small DCGAN on Fashion-MNIST.

Generator: z (64 units) → Dense 7·7·64 → BatchNorm → ReLU → 4×4 stride-2 transposed conv to
14×14×32 → BatchNorm → ReLU → 4×4 stride-2 transposed conv to 28×28×1, sigmoid. Discriminator:
4×4 stride-2 convs of 32 and 64 channels with leaky ReLU → Dense 1 logit. One discriminator
update and one generator update (the non-saturating loss) per batch of 64, each with its own
Adam (lr 2e-4, beta_1 0.5: the DCGAN paper's settings), one-sided label smoothing 0.1
(real targets 0.9; Salimans et al. 2016), 5 epochs. Why these: Radford et al.'s recipe with
half the channels of the usual MNIST-sized DCGAN (64/128 took 3× as long per step here), so that
a run takes a few minutes on two cores. Seen after the 5 epochs: silhouettes of shirts,
trousers, bags and shoes with a grainy texture (pixel_std_ratio 0.92); the paper's leaky-ReLU
slope 0.2 instead of the named activation's 0.01 looked the same. More epochs and channels are
the usual next step.

The run folder gets samples.png (64 images from the prior), traversal.png (the generator over
two noise units, the others at 0) and interpolation.png (straight lines between noise pairs).
Test metrics, on the 10,000 test images and as many fakes (noise from a fixed seed): both
players' losses, the discriminator's mean probabilities and accuracy, and pixel_std_ratio, the
samples' per-pixel standard deviation over the test images' (near 1: as varied as the data,
pixel by pixel; near 0: mode collapse). None of these is a measure of image quality: look at
the pictures. Needs Debian's dataset-fashion-mnist; quick mode: 1 epoch on 1,000 images.
"""

from __future__ import annotations

import numpy as np

from splitgrad import optim
from splitgrad.datasets import load_fashion_mnist
from splitgrad.generative import GAN, pictures
from splitgrad.recipes import autoencoder

DESCRIPTION = "DCGAN (conv 32-64) on Fashion-MNIST, two Adams, label smoothing"
DEFAULTS = {"epochs": 5, "batch_size": 64, "learning_rate": 2e-4}
QUICK = {"epochs": 1}
TASK = "generative"
LATENT, FILTERS, SMOOTHING = 64, (32, 64), 0.1
EVAL_SEED = 0


def load_data(quick=False, seed=0):
    """Fashion-MNIST images (targets = inputs; the GAN ignores them), labels beside them."""
    return autoencoder.images(load_fashion_mnist(), quick)


def build_model(learning_rate, data):
    """The DCGAN above, each player with its own Adam (beta_1 0.5)."""
    model = GAN(latent_dim=LATENT, kind="conv", filters=FILTERS, label_smoothing=SMOOTHING)
    model.compile(
        optimizer=optim.Adam(learning_rate=learning_rate, beta_1=0.5),
        d_optimizer=optim.Adam(learning_rate=learning_rate, beta_1=0.5),
    )
    return model


def evaluate(model, data):
    """The two players on the test images and fresh fakes, and the samples' pixel spread."""
    rng = np.random.default_rng(EVAL_SEED)
    out = model.scores(data.x_test, rng=rng)
    samples = model.sample(len(data.x_test), rng=rng)
    out["pixel_std_ratio"] = float(samples.std(axis=0).mean() / data.x_test.std(axis=0).mean())
    return out


def attachments(model, data, history):
    """samples.png, traversal.png and interpolation.png."""
    rng = np.random.default_rng(EVAL_SEED)
    lines = np.concatenate([model.interpolate(steps=10, rng=rng) for _ in range(6)])
    return {
        "samples.png": pictures.image_grid(model.sample(64, rng=rng), "64 generated images"),
        "traversal.png": pictures.latent_traversal(
            model.generate, np.zeros(model.latent_dim), 1.0, dims=(0, 1)
        ),
        "interpolation.png": pictures.image_grid(
            lines, "interpolation between two noise vectors (one pair per row)", cols=10
        ),
    }
