"""The MIT 6.S191 lab 2 CNN and its custom training loop, written as the lab writes it (with
the imports and names of README's "Coming from Keras" table), against the same steps in
PyTorch (float64)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, torch_sgd_step

import splitgrad as sg
from splitgrad import nn


def build_cnn_model():
    """Lab 2's model, as written there (with the dtype pinned for the comparison)."""
    return sg.Sequential(
        [
            nn.Conv2D(filters=24, kernel_size=(3, 3), activation="relu"),
            nn.MaxPool2D(pool_size=(2, 2)),
            nn.Conv2D(filters=36, kernel_size=(3, 3), activation="relu"),
            nn.MaxPool2D(pool_size=(2, 2)),
            nn.Flatten(),
            nn.Dense(128, activation="relu"),
            nn.Dense(10, activation="softmax"),
        ],
        dtype="float64",
    )


def _torch_step(params, images, labels, lr):
    k1, b1, k2, b2, w3, c3, w4, c4 = params
    x = torch.tensor(images).permute(0, 3, 1, 2)
    h = F.max_pool2d(F.relu(F.conv2d(x, k1.permute(3, 2, 0, 1), b1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, k2.permute(3, 2, 0, 1), b2)), 2)
    h = h.permute(0, 2, 3, 1).reshape(len(images), -1)  # channels-last flatten, as splitgrad
    logits = F.relu(h @ w3 + c3) @ w4 + c4
    loss = F.cross_entropy(logits, torch.tensor(labels), reduction="sum")
    torch_sgd_step(loss, params, lr)


def test_lab2_custom_training_loop_matches_torch():
    rng = np.random.default_rng(0)
    train_images = rng.random((12, 28, 28, 1))
    train_labels = rng.integers(0, 10, size=12)
    sg.seed(0)
    cnn_model = build_cnn_model()
    cnn_model.predict(train_images[:1])
    params = [torch.tensor(w, requires_grad=True) for w in cnn_model.get_weights()]

    # ----- the lab's loop, with tf → sg ---------------------------------------------------
    batch_size = 4
    optimizer = sg.optim.SGD(learning_rate=1e-2)
    for idx in range(0, train_images.shape[0], batch_size):
        (images, labels) = (
            train_images[idx : idx + batch_size],
            train_labels[idx : idx + batch_size],
        )
        images = sg.tensor(images, dtype="float64")
        with sg.GradientTape() as tape:
            logits = cnn_model(images)
            loss_value = sg.losses.sparse_categorical_crossentropy(
                labels, logits, reduction="none"
            )  # Keras's backend function: one loss per example; the tape sums them
        grads = tape.gradient(loss_value, cnn_model.trainable_variables)
        optimizer.apply_gradients(zip(grads, cnn_model.trainable_variables))
        _torch_step(params, train_images[idx : idx + batch_size], labels, 1e-2)

    for ours, theirs in zip(cnn_model.get_weights(), params):
        assert_close(ours, theirs.detach(), rtol=1e-9, atol=1e-12)


def test_tape_leaves_grads_alone_and_says_what_it_needs():
    w = sg.tensor(np.array([1.0, 2.0]), dtype="float64")
    w.requires_grad_()
    w.grad = np.array([5.0, 5.0])
    with sg.GradientTape() as tape:
        y = (w * w).sum()
    assert_close(tape.gradient(y, w), np.array([2.0, 4.0]))
    assert_close(w.grad, np.array([5.0, 5.0]))  # as it was
    with pytest.raises(RuntimeError, match="persistent=True"):
        tape.gradient(y, w)
    opt = sg.optim.SGD(learning_rate=0.1)
    opt.apply_gradients([(np.array([1.0, 1.0]), w)])
    assert_close(w.data, np.array([0.9, 1.9]))
    other = sg.tensor(np.zeros(3), dtype="float64").requires_grad_()
    with pytest.raises(ValueError, match="not among those this optimizer was built for"):
        opt.apply_gradients([(np.ones(3), other)])
