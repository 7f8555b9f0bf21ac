"""fashion-mlp: MIT 6.S191 lab 2's dense classifier on Fashion-MNIST.

Flatten → Dense 128 ReLU → Dense 10 logits, batch 64, as in the lab (which uses MNIST). The lab's
SGD lr 0.1 wobbles around 87 % on Fashion-MNIST, so we use Adam 1e-3, cosine-decayed to 0 over
15 epochs (measured: 88.5 % test; 87.3 % with a constant rate for 10 epochs).
Needs Debian's dataset-fashion-mnist package; quick mode trains 1 epoch on 1,000 images.
"""

import math

from splitgrad import nn, schedules
from splitgrad.datasets import load_fashion_mnist
from splitgrad.recipes import compile_classifier

DESCRIPTION = "MLP 784-128-10 on Fashion-MNIST (MIT lab 2 dense model)"
DEFAULTS = {"epochs": 15, "batch_size": 64, "learning_rate": 1e-3}
QUICK = {"epochs": 1}
TASK = "multiclass"
QUICK_TRAIN, QUICK_TEST = 1000, 500


def load_data(quick=False, seed=0):
    """Fashion-MNIST (N, 28, 28, 1) in [0, 1]; quick mode keeps the first few thousand."""
    return subset(load_fashion_mnist(), quick)


def subset(data, quick):
    """The first QUICK_TRAIN / QUICK_TEST images when quick (the files are not class-sorted)."""
    if quick:
        data.x_train, data.y_train = data.x_train[:QUICK_TRAIN], data.y_train[:QUICK_TRAIN]
        data.x_test, data.y_test = data.x_test[:QUICK_TEST], data.y_test[:QUICK_TEST]
    return data


def build_model(learning_rate, data):
    """The lab's dense model, compiled with Adam and cross-entropy on its logits."""
    model = nn.Sequential(
        [
            nn.Flatten(),
            nn.Dense(128, activation="relu"),
            nn.Dense(10),
        ]
    )
    return compile_classifier(model, learning_rate)


def fit_options(model, data, settings):
    """The learning rate cosine-decayed from its starting value to 0 over the whole run (the
    first 90 % of the rows train, the last 10 % validate)."""
    train_rows = len(data.x_train) - int(len(data.x_train) * 0.1)
    steps = math.ceil(train_rows / settings["batch_size"]) * settings["epochs"]
    model.optimizer.learning_rate = schedules.CosineDecay(settings["learning_rate"], steps)
    return {}
