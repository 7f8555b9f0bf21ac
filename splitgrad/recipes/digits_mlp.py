"""digits-mlp: a softmax classifier for 8×8 handwritten digits (scikit-learn's bundled set).

Flatten → Dense 128 ReLU → Dropout → Dense 10 softmax, Adam, sparse categorical cross-entropy.
The model ends in softmax Keras-style; the loss is still computed from the logits (stable).
"""

from splitgrad import nn, optim
from splitgrad.datasets import load_digits

DESCRIPTION = "MLP 64-128-10 softmax on 8x8 digits (10 classes)"
DEFAULTS = {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3}
QUICK = {"epochs": 2}
TASK = "multiclass"


def load_data(quick=False, seed=0):
    return load_digits()


def build_model(learning_rate, data):
    model = nn.Sequential(
        [
            nn.Flatten(),
            nn.Dense(128, activation="relu"),
            nn.Dropout(0.1),
            nn.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=optim.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
