"""autoencoder: a dense autoencoder on Fashion-MNIST, 784 → 512 → 32 → 512 → 784.

Flatten → Dense 512 ReLU → Dense 32 (a linear code) → Dense 512 ReLU → Dense 784 sigmoid,
trained to give back its input under the mean squared error; Adam 1e-3, batch 128, 20 epochs.
Why these: it is the course's first autoencoder (one hidden layer on each side, the shape of the
Keras blog's and of benchmark W4), 32 units is the code size the quality bar names, and MSE is
the figure we report, so we train on it. Measured: test MSE 0.0081 after 20 epochs (the bar is
0.015; epoch 2 already reaches 0.013 on the validation images).

The run folder gets reconstructions.png (test images above their reconstructions),
traversal.png (the decoder along the codes' two principal directions, over the 5–95 %
quantiles of their spread around the mean code) and latent_scatter.png (the test codes on their
first two principal components, coloured by class). Needs Debian's dataset-fashion-mnist; quick
mode trains 1 epoch on 1,000 images.
"""

from __future__ import annotations

import types

import numpy as np

from splitgrad import optim
from splitgrad.datasets import load_fashion_mnist
from splitgrad.generative import Autoencoder, pictures
from splitgrad.recipes import fashion_mlp

DESCRIPTION = "dense autoencoder 784-512-32-512-784 on Fashion-MNIST (reconstruction MSE)"
DEFAULTS = {"epochs": 20, "batch_size": 128, "learning_rate": 1e-3}
QUICK = {"epochs": 1}
TASK = "generative"
LATENT = 32


def load_data(quick=False, seed=0):
    """Fashion-MNIST images as both inputs and targets (an autoencoder gives back its input);
    the class labels stay beside them for the pictures."""
    return images(load_fashion_mnist(), quick)


def images(split, quick):
    """A DataSplit of images as (x, x) pairs, with `labels_train`, `labels_test`, `meta`."""
    split = fashion_mlp.subset(split, quick)
    return types.SimpleNamespace(
        x_train=split.x_train,
        y_train=split.x_train,
        x_test=split.x_test,
        y_test=split.x_test,
        labels_train=split.y_train,
        labels_test=split.y_test,
        meta={**split.meta, "task": TASK},
    )


def build_model(learning_rate, data):
    """The autoencoder above, compiled with Adam and the mean squared error."""
    model = Autoencoder(latent_dim=LATENT, kind="dense", hidden=(512,))
    model.compile(optimizer=optim.Adam(learning_rate=learning_rate), loss="mse")
    return model


def evaluate(model, data):
    """The reconstruction error on the test images: mean squared error per pixel."""
    out = model.evaluate(data.x_test, data.y_test, batch_size=256, return_dict=True)
    return {"mse": out["loss"]}


def attachments(model, data, history):
    """reconstructions.png, traversal.png and latent_scatter.png of the test images."""
    return code_pictures(model, data, model.encode(data.x_test))


def code_pictures(model, data, codes, prior=False):
    """The three pictures of an autoencoder. Its traversal walks the codes' two principal
    directions around their mean; a VAE's (`prior=True`) walks the prior N(0, I) along the two
    units whose μ varies most (both units of a 2-D latent space)."""
    names = data.meta.get("class_names")
    shown = data.x_test[:20]
    if prior:
        dims = tuple(sorted(int(i) for i in np.argsort(codes.std(axis=0))[::-1][:2]))
        traversal = pictures.latent_traversal(model.decode, np.zeros(codes.shape[1]), dims=dims)
    else:
        directions, spread = pictures.principal_directions(codes)
        traversal = pictures.latent_traversal(
            model.decode,
            codes.mean(axis=0),
            spread,
            directions=directions,
            names=("principal component 1", "principal component 2"),
        )
    return {
        "reconstructions.png": pictures.reconstructions(shown, model.predict(shown)),
        "traversal.png": traversal,
        "latent_scatter.png": pictures.latent_scatter(codes, data.labels_test, names),
    }
