"""Callbacks: EarlyStopping on scripted loss sequences (Keras 3 semantics), and the others
(ModelCheckpoint, CSVLogger, TerminateOnNaN, LambdaCallback, LearningRateScheduler,
ProgressBar) inside real `fit` runs.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import splitgrad as sg
from splitgrad import callbacks as cbks
from splitgrad import losses, nn, optim
from splitgrad.checkpoint import load_model


class FakeModel:
    """What EarlyStopping touches: get/set_weights and stop_training. The 'weights' are the
    epoch number they were trained to, so a restore shows which epoch it came from."""

    def __init__(self):
        self.epoch = None
        self.stop_training = False

    def get_weights(self):
        return [np.array(self.epoch)]

    def set_weights(self, weights):
        self.epoch = int(weights[0])


def drive(callback, values, monitor="val_loss"):
    """Feed one monitored value per epoch as fit would; returns (epochs run, final weights)."""
    model = FakeModel()
    callback.set_model(model)
    callback.on_train_begin()
    ran = []
    for epoch, value in enumerate(values):
        model.epoch = epoch  # "training" this epoch moved the weights to epoch `epoch`
        ran.append(epoch)
        callback.on_epoch_end(epoch, {monitor: value, "loss": 0.0})
        if model.stop_training:
            break
    callback.on_train_end()
    callback.stopped = model.stop_training
    return ran[-1], model.epoch


# (kwargs, monitor, values, last epoch run, restored weights' epoch)
SCRIPTS = {
    "patience 0 stops at the first non-improvement": (
        {"patience": 0},
        "val_loss",
        [1.0, 0.9, 0.9, 0.5],
        2,
        1,
    ),
    "patience 2 counts epochs since the best": (
        {"patience": 2},
        "val_loss",
        [1.0, 0.9, 0.95, 0.93, 0.1],
        3,
        1,
    ),
    "improvement resets the wait": (
        {"patience": 2},
        "val_loss",
        [1.0, 1.1, 0.9, 1.2, 0.8, 1.3, 1.4, 0.1],
        6,
        4,
    ),
    "never stops while improving": ({"patience": 1}, "val_loss", [5.0, 4.0, 3.0, 2.0, 1.0], 4, 4),
    "does not stop at epoch 0": ({"patience": 0}, "val_loss", [1.0, 0.5, 0.6], 2, 1),
    "min_delta: a small drop is no improvement": (
        {"patience": 1, "min_delta": 0.1},
        "val_loss",
        [1.0, 0.95, 0.5],
        1,
        0,
    ),
    "min_delta: a big drop is one": (
        {"patience": 1, "min_delta": 0.1},
        "val_loss",
        [1.0, 0.85, 0.8, 0.7],
        2,
        1,
    ),
    "negative min_delta means the same as positive": (
        {"patience": 1, "min_delta": -0.1},
        "val_loss",
        [1.0, 0.95, 0.5],
        1,
        0,
    ),
    "mode auto maximises accuracy": (
        {"patience": 2, "monitor": "val_accuracy"},
        "val_accuracy",
        [0.5, 0.6, 0.6, 0.55, 0.9],
        3,
        1,
    ),
    "mode max on a custom metric": (
        {"patience": 1, "monitor": "score", "mode": "max"},
        "score",
        [1.0, 2.0, 1.5],
        2,
        1,
    ),
    "mode min on an accuracy-like name": (
        {"patience": 1, "monitor": "val_accuracy", "mode": "min"},
        "val_accuracy",
        [0.5, 0.4, 0.45],
        2,
        1,
    ),
    "baseline not beaten: wait keeps growing though best improves": (
        {"patience": 3, "baseline": 0.5},
        "val_loss",
        [0.9, 0.8, 0.85, 0.86, 0.1],
        2,
        1,
    ),
    "without that baseline the same run goes on": (
        {"patience": 3},
        "val_loss",
        [0.9, 0.8, 0.85, 0.86, 0.1],
        4,
        4,
    ),
    "baseline beaten resets the wait": (
        {"patience": 3, "baseline": 0.85},
        "val_loss",
        [0.9, 0.8, 0.85, 0.86, 0.87, 0.1],
        4,
        1,
    ),
    "start_from_epoch ignores the warm-up epochs": (
        {"patience": 1, "start_from_epoch": 2},
        "val_loss",
        [0.5, 0.4, 1.0, 1.1, 0.1],
        3,
        2,
    ),
}

STOP_AT_THE_END = {
    "does not stop at epoch 0",
    "mode max on a custom metric",
    "mode min on an accuracy-like name",
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_early_stopping_scripted(name):
    kwargs, monitor, values, last, best = SCRIPTS[name]
    stop = cbks.EarlyStopping(restore_best_weights=True, **kwargs)
    assert drive(stop, values, monitor) == (last, best)
    assert stop.best_epoch == best
    assert stop.stopped_epoch == (last if stop.stopped else 0)
    assert stop.stopped == (last < len(values) - 1 or name in STOP_AT_THE_END)
    # Without restore_best_weights the weights stay at the last epoch run.
    plain = cbks.EarlyStopping(**kwargs)
    assert drive(plain, values, monitor) == (last, last)


def test_early_stopping_restores_when_no_epoch_ever_improved():
    # A NaN never compares as better: the first epoch's weights are the snapshot.
    stop = cbks.EarlyStopping(patience=1, restore_best_weights=True)
    assert drive(stop, [float("nan"), float("nan"), float("nan")]) == (1, 0)


def test_early_stopping_is_reusable_and_warns_on_missing_metric():
    stop = cbks.EarlyStopping(patience=0)
    assert drive(stop, [1.0, 2.0, 3.0])[0] == 1
    assert drive(stop, [1.0, 0.5, 0.25])[0] == 2  # state reset by on_train_begin
    with pytest.warns(UserWarning, match="val_loss"):
        assert drive(stop, [1.0, 2.0], monitor="loss")[0] == 1
    with pytest.raises(ValueError, match="mode"):
        cbks.EarlyStopping(mode="up")


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def _model(seed=0, lr=0.01):
    sg.seed(seed)
    model = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(2)])
    model.compile(
        optimizer=optim.Adam(learning_rate=lr),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class Script(cbks.Callback):
    """Replaces val_loss with scripted values (it runs before the callbacks after it) and
    snapshots the weights at the end of every epoch."""

    def __init__(self, values):
        self.values, self.snapshots = values, []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]
        self.snapshots.append(self.model.get_weights())


def test_early_stopping_inside_fit_stops_and_restores_the_best_epoch():
    x, y = _data()
    model = _model()
    script = Script([1.0, 0.7, 0.8, 0.9, 0.95, 0.1, 0.1])
    stop = cbks.EarlyStopping(patience=3, restore_best_weights=True)
    history = model.fit(
        x, y, epochs=7, validation_split=0.25, verbose=0, seed=0, callbacks=[script, stop]
    )
    assert history.epoch == [0, 1, 2, 3, 4]
    assert stop.stopped_epoch == 4 and stop.best_epoch == 1
    for ours, best in zip(model.get_weights(), script.snapshots[1]):
        assert np.array_equal(ours, best)


def test_model_checkpoint_save_best_only(tmp_path):
    x, y = _data()
    model = _model()
    script = Script([1.0, 1.2, 0.8, 0.8, 0.5])
    ckpt = cbks.ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}", save_best_only=True)
    model.fit(x, y, epochs=5, validation_split=0.25, verbose=0, seed=0, callbacks=[script, ckpt])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-01", "ckpt-03", "ckpt-05"]
    restored = load_model(tmp_path / "ckpt-03")
    for ours, saved in zip(script.snapshots[2], restored.get_weights()):
        assert np.array_equal(ours, saved)
    assert ckpt.best == 0.5


def test_model_checkpoint_every_epoch_and_max_mode(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        seed=0,
        callbacks=[cbks.ModelCheckpoint(tmp_path / "every-{epoch}")],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["every-1", "every-2"]
    best = cbks.ModelCheckpoint(tmp_path / "best", monitor="accuracy", save_best_only=True)
    assert best.mode == "max"


def test_csv_logger(tmp_path):
    x, y = _data()
    model = _model()
    path = tmp_path / "log.csv"
    history = model.fit(
        x, y, epochs=3, validation_split=0.25, verbose=0, seed=0, callbacks=[cbks.CSVLogger(path)]
    )
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(history.history["loss"])
    # append=True continues the file without a second header
    model.fit(
        x,
        y,
        epochs=4,
        initial_epoch=3,
        validation_split=0.25,
        verbose=0,
        seed=0,
        callbacks=[cbks.CSVLogger(path, append=True)],
    )
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == ["epoch", "0", "1", "2", "3"]


def test_terminate_on_nan_stops_training(capsys):
    x, y = _data()
    batches = []

    class Diverging(nn.Sequential):
        """Reports a NaN loss from its third batch on."""

        def train_step(self, xb, yb):
            logs = super().train_step(xb, yb)
            if len(batches) >= 2:
                logs["loss"] = float("nan")
            return logs

    sg.seed(0)
    model = Diverging([nn.Dense(2)])
    model.compile(optimizer="sgd", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    count = cbks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    history = model.fit(
        x, y, batch_size=8, epochs=5, verbose=0, seed=0, callbacks=[count, cbks.TerminateOnNaN()]
    )
    assert batches == [0, 1, 2]
    assert history.epoch == [0] and math.isnan(history.history["loss"][0])
    assert "invalid loss" in capsys.readouterr().out


def test_lambda_callback_hooks_and_rejects_unknown_names():
    x, y = _data()
    model = _model()
    seen = []
    cb = cbks.LambdaCallback(
        on_train_begin=lambda logs=None: seen.append("begin"),
        on_epoch_begin=lambda epoch, logs=None: seen.append(f"e{epoch}"),
        on_epoch_end=lambda epoch, logs: seen.append(f"end{epoch}:{sorted(logs)}"),
        on_train_end=lambda logs=None: seen.append("end"),
    )
    model.fit(x, y, epochs=2, batch_size=48, verbose=0, seed=0, callbacks=[cb])
    assert seen == [
        "begin",
        "e0",
        "end0:['accuracy', 'loss']",
        "e1",
        "end1:['accuracy', 'loss']",
        "end",
    ]
    with pytest.raises(ValueError, match="unknown hook"):
        cbks.LambdaCallback(epoch_end=print)


def test_learning_rate_scheduler_sets_the_rate_each_epoch():
    x, y = _data()
    model = _model(lr=0.1)
    seen = []
    schedule = cbks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    spy = cbks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: seen.append(model.optimizer.learning_rate)
    )
    model.fit(x, y, epochs=3, verbose=0, seed=0, callbacks=[schedule, spy])
    assert seen == pytest.approx([0.1, 0.05, 0.025])


def test_progress_output(capsys):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, verbose=2, seed=0)
    out = capsys.readouterr().out
    assert "Epoch 1/2 - loss:" in out and "Epoch 2/2" in out and "accuracy" in out
    model.fit(x, y, epochs=1, verbose=1, seed=0)
    assert "Epoch 1/1" in capsys.readouterr().err
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_model_checkpoint_weights_only_batch_frequency_and_threshold(tmp_path):
    x, y = _data()
    model = _model()
    weights = cbks.ModelCheckpoint(
        tmp_path / "w-{epoch}-{batch}", save_weights_only=True, save_freq=2
    )
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=0, callbacks=[weights])
    # 3 batches an epoch: the 2nd, 4th and 6th batch of the run save.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-1-2", "w-2-1", "w-2-3"]
    twin = _model()
    twin.build_from_sample(x)
    twin.load_weights(tmp_path / "w-2-3")
    for ours, loaded in zip(model.get_weights(), twin.get_weights()):
        assert np.array_equal(ours, loaded)
    # A threshold no epoch beats: nothing is saved.
    script = Script([1.0, 0.9])
    strict = cbks.ModelCheckpoint(
        tmp_path / "best", save_best_only=True, initial_value_threshold=0.5
    )
    model.fit(x, y, epochs=2, verbose=0, seed=0, callbacks=[script, strict])
    assert not (tmp_path / "best").exists() and strict.best == 0.5
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or a positive"):
        cbks.ModelCheckpoint(tmp_path / "x", save_freq="batch")


def test_lambda_callback_takes_keras_hook_names():
    x, y = _data()
    model = _model()
    batches = []
    cb = cbks.LambdaCallback(
        on_batch_end=lambda batch, logs: batches.append(batch),  # Keras's older name
        on_test_begin=lambda logs=None: None,  # accepted; evaluate calls no callbacks
    )
    model.fit(x, y, batch_size=48, epochs=2, verbose=0, seed=0, callbacks=[cb])
    assert batches == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="unknown hook 'on_epoch_finish'.*on_epoch_end"):
        cbks.LambdaCallback(on_epoch_finish=print)
