"""Learning-rate callbacks: ReduceLROnPlateau on a hand-traced metric sequence, against
torch.optim.lr_scheduler.ReduceLROnPlateau (threshold_mode="abs") on drawn sequences, and inside
real `fit` runs; the "learning_rate" log; refusing an optimizer whose rate is a schedule.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import scripted_score
from hypothesis import given
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import callbacks as cbks
from splitgrad import losses, nn, optim, schedules


def drive(callback, values, lr=0.1, monitor="val_loss"):
    """Feed one monitored value per epoch as fit would, to a model that is only an optimizer.
    Returns (the rate each epoch trained with, as logged; the rate after each epoch)."""
    model = SimpleNamespace(optimizer=optim.SGD(learning_rate=lr), stop_training=False)
    callback.set_model(model)
    callback.on_train_begin()
    logged, after = [], []
    for epoch, value in enumerate(values):
        logs = {monitor: value, "loss": 0.0}
        callback.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
        after.append(model.optimizer.learning_rate)
    return logged, after


def test_hand_traced_sequence():
    # factor 0.5, patience 2, cooldown 2, min_lr 0.02, min_delta 0.05, starting at 0.1:
    #  e0 1.00 best                     e8  0.30 best
    #  e1 0.98 wait 1 (not < 0.95)      e9  0.31 wait 1
    #  e2 0.97 wait 2 → 0.05, cool 2    e10 0.32 wait 2 → max(0.0125, 0.02) = 0.02, cool 2
    #  e3 0.50 cool 1, best             e11 0.33 cool 1, not counted
    #  e4 0.60 cool 0, counts: wait 1   e12 0.34 cool 0, wait 1
    #  e5 0.70 wait 2 → 0.025, cool 2   e13 0.35 wait 2, but lr = min_lr: unchanged
    #  e6 0.80 cool 1, not counted      e14 0.36 wait 3, unchanged
    #  e7 0.90 cool 0, wait 1
    values = [1.0, 0.98, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 0.3, 0.31, 0.32, 0.33, 0.34, 0.35, 0.36]
    cb = cbks.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=2, min_lr=0.02, min_delta=0.05)
    logged, after = drive(cb, values)
    trained = [0.1] * 3 + [0.05] * 3 + [0.025] * 5 + [0.02] * 4
    assert logged == pytest.approx(trained, rel=0, abs=1e-15)
    assert after == pytest.approx(trained[1:] + [0.02], rel=0, abs=1e-15)
    assert (cb.best, cb.wait, cb.cooldown_counter) == (0.3, 3, 0)


def test_defaults_and_modes_are_keras():
    cb = cbks.ReduceLROnPlateau()
    assert (cb.monitor, cb.factor, cb.patience, cb.mode, cb.min_delta) == (
        "val_loss",
        0.1,
        10,
        "min",
        1e-4,
    )
    assert (cb.cooldown, cb.min_lr) == (0, 0.0)
    assert cbks.ReduceLROnPlateau(monitor="val_accuracy").mode == "max"
    # max mode: an accuracy that stops rising by more than min_delta.
    cb = cbks.ReduceLROnPlateau(monitor="val_accuracy", patience=1, min_delta=0.01)
    _, after = drive(cb, [0.5, 0.6, 0.605, 0.7], monitor="val_accuracy")
    assert after == pytest.approx([0.1, 0.1, 0.01, 0.01])
    # patience=0 reduces at every epoch that does not improve.
    _, after = drive(cbks.ReduceLROnPlateau(patience=0), [1.0, 2.0, 0.5, 3.0])
    assert after == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_cooldown_one_acts_as_zero_as_in_keras():
    values = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    _, with_one = drive(cbks.ReduceLROnPlateau(patience=1, cooldown=1), values)
    _, with_zero = drive(cbks.ReduceLROnPlateau(patience=1, cooldown=0), values)
    assert with_one == with_zero == pytest.approx([0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6])


@given(
    values=st.lists(st.integers(0, 8).map(lambda k: k / 4), min_size=1, max_size=40),
    patience=st.integers(1, 4),
    cooldown=st.integers(0, 3),
    factor=st.sampled_from([0.1, 0.3, 0.5]),
    min_lr=st.sampled_from([1.23e-4, 0.0123]),
    min_delta=st.sampled_from([0.0, 0.25, 0.3]),
    mode=st.sampled_from(["min", "max"]),
)
def test_same_rates_as_torch_in_abs_threshold_mode(
    values, patience, cooldown, factor, min_lr, min_delta, mode
):
    """Keras counts the epoch that ends a cooldown and reduces at wait ≥ patience; torch
    reduces at bad epochs > patience and ignores every cooldown epoch. So Keras's (p, c) is
    torch's (p − 1, max(c − 1, 0)). Torch skips a reduction smaller than its eps=1e-8 (0.1·0.1
    = 0.010000000000000002 clamped to min_lr 0.01); Keras and splitgrad make it. A min_lr that
    no product of the rates can come within 1e-8 of (123/10^k) keeps the two comparable."""
    cb = cbks.ReduceLROnPlateau(
        monitor="m",
        mode=mode,
        factor=factor,
        patience=patience,
        cooldown=cooldown,
        min_lr=min_lr,
        min_delta=min_delta,
    )
    _, ours = drive(cb, values, lr=0.1, monitor="m")
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode=mode,
        factor=factor,
        patience=patience - 1,
        threshold=min_delta,
        threshold_mode="abs",
        cooldown=max(cooldown - 1, 0),
        min_lr=min_lr,
    )
    theirs = []
    for value in values:
        scheduler.step(value)
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == theirs  # the same float operations: bit for bit


def test_argument_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\)"):
        cbks.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="patience"):
        cbks.ReduceLROnPlateau(patience=-1)
    with pytest.raises(ValueError, match="min_lr"):
        cbks.ReduceLROnPlateau(min_lr=-0.1)
    with pytest.raises(ValueError, match="mode"):
        cbks.ReduceLROnPlateau(mode="down")
    with pytest.warns(UserWarning, match="val_loss"):
        drive(cbks.ReduceLROnPlateau(), [1.0], monitor="loss")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] - x[:, 2] > 0).astype(np.int64)


def _model(optimizer):
    sg.seed(0)
    model = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(2)])
    model.compile(
        optimizer=optimizer,
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_inside_fit_the_optimizer_steps_with_the_reduced_rate():
    x, y = _data()
    model = _model(optim.SGD(learning_rate=0.2))
    seen, steps = [], []
    spy = cbks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["learning_rate"]))
    step_rates = cbks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs=None: steps.append(model.optimizer.learning_rate)
    )
    reduce = cbks.ReduceLROnPlateau(monitor="score", factor=0.5, patience=1, verbose=1)
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=4,
        verbose=0,
        seed=0,
        callbacks=[scripted_score([1.0, 2.0, 3.0, 0.5]), reduce, spy, step_rates],
    )
    assert seen == pytest.approx([0.2, 0.2, 0.1, 0.05])
    assert steps == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    assert model.optimizer.learning_rate == pytest.approx(0.05)


def test_a_schedule_or_a_missing_optimizer_is_refused():
    x, y = _data()
    model = _model(optim.Adam(schedules.ExponentialDecay(0.01, decay_steps=10, decay_rate=0.5)))
    for cb in (cbks.ReduceLROnPlateau(), cbks.LearningRateScheduler(lambda e, lr: lr)):
        with pytest.raises(TypeError, match="ExponentialDecay.*float learning_rate"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    with pytest.raises(RuntimeError, match="compile"):
        cb = cbks.ReduceLROnPlateau()
        cb.set_model(SimpleNamespace(optimizer=None))
        cb.on_train_begin()


def test_learning_rate_scheduler_logs_the_rate_and_checks_the_schedule():
    x, y = _data()
    model = _model(optim.SGD(learning_rate=0.1))
    seen = []
    spy = cbks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["learning_rate"]))
    sched = cbks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    model.fit(x, y, epochs=3, verbose=0, seed=0, callbacks=[sched, spy])
    assert seen == pytest.approx([0.1, 0.05, 0.1 / 3])
    bad = cbks.LearningRateScheduler(lambda epoch, lr: float("nan"))
    with pytest.raises(ValueError, match="returned nan for epoch 0"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[bad])
    with pytest.raises(TypeError, match="function"):
        cbks.LearningRateScheduler(0.1)


def test_history_records_the_learning_rate():
    x, y = _data()
    model = _model(optim.SGD(learning_rate=0.2))
    reduce = cbks.ReduceLROnPlateau(monitor="score", factor=0.5, patience=1)
    history = model.fit(
        x, y, epochs=3, verbose=0, seed=0, callbacks=[scripted_score([1.0, 2.0, 3.0]), reduce]
    )
    assert history.history["learning_rate"] == pytest.approx([0.2, 0.2, 0.1])
    assert history.history["score"] == [1.0, 2.0, 3.0]
