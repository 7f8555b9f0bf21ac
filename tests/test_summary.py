"""`model.summary()` prints Keras's table for Sequential, functional and subclassed models:
layer names (unique, as in Keras) with their class, output shapes with None for the batch,
parameter counts, and trainable / non-trainable totals."""

from __future__ import annotations

import numpy as np
import pytest

import splitgrad as sg
from splitgrad import nn


def _lines(model):
    out = []
    model.summary(print_fn=out.append)
    return out


def _row(lines, start):
    return next(line for line in lines if line.startswith(" " + start)).split()


def test_sequential_table_has_keras_columns_and_totals():
    model = sg.Sequential(
        [
            sg.Input((28, 28, 1)),
            nn.Conv2D(8, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Flatten(),
            nn.Dense(32, activation="relu"),
            nn.BatchNormalization(),
            nn.Dense(10),
        ],
        name="cnn",
    )
    lines = _lines(model)
    assert lines[0] == 'Model: "cnn"'
    assert lines[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"]
    assert _row(lines, "conv2d (Conv2D)") == [
        "conv2d",
        "(Conv2D)",
        "(None,",
        "26,",
        "26,",
        "8)",
        "80",
    ]
    assert _row(lines, "flatten (Flatten)")[2:] == ["(None,", "1352)", "0"]
    assert _row(lines, "dense (Dense)")[2:] == ["(None,", "32)", "43,296"]
    assert _row(lines, "dense_1 (Dense)")[2:] == ["(None,", "10)", "330"]
    total = 80 + 43_296 + 4 * 32 + 330
    assert f" Total params: {total:,} " in "\n".join(lines)
    assert f" Trainable params: {total - 64:,} " in "\n".join(lines)
    assert " Non-trainable params: 64 (256.00 B)" in lines
    assert model.count_params() == total


def test_subclassed_model_rows_are_its_layers_by_unique_name():
    class Net(sg.Model):
        def __init__(self):
            super().__init__()
            self.first = nn.Dense(16, activation="relu")
            self.second = nn.Dense(16, activation="relu")
            self.head = nn.Dense(3)

        def call(self, x):
            return self.head(self.second(self.first(x)))

    model = Net()
    with pytest.raises(
        ValueError, match=r"not yet been built.*build\(\).*model.build\(\(None, 64\)\)"
    ):
        model.summary()
    model.build((None, 5))
    lines = _lines(model)
    assert [line.split()[0] for line in lines if "(Dense)" in line] == [
        "dense",
        "dense_1",
        "dense_2",
    ]
    assert _row(lines, "dense_2 (Dense)")[2:] == ["(None,", "3)", "51"]
    assert " Total params: 419 (1.64 KB)" in lines
    assert model.predict(np.zeros((2, 5), np.float32)).shape == (2, 3)


def test_functional_summary_shows_what_each_layer_reads():
    a, b = sg.Input((4,), name="a"), sg.Input((2,), name="b")
    merged = nn.Concatenate()([nn.Dense(3)(a), b])
    model = sg.Model([a, b], nn.Dense(1, name="out")(merged))
    lines = _lines(model)
    assert lines[2].split()[-2:] == ["Connected", "to"]
    assert _row(lines, "a (InputLayer)")[2:] == ["(None,", "4)", "0", "-"]
    assert _row(lines, "concatenate (Concatenate)")[2:] == [
        "(None,",
        "5)",
        "0",
        "dense[0][0],",
        "b[0][0]",
    ]
    assert _row(lines, "out (Dense)")[-1] == "concatenate[0][0]"
