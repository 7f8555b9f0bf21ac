"""fit's class_weight / sample_weight (Keras 3's weighted mean Σ w·ℓ / B) against PyTorch, and
steps_per_epoch with arrays and generators."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, torch_sgd_step

import splitgrad as sg
from splitgrad import nn, optim


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, size=n)


def _model(lr=0.1):
    sg.seed(0)
    model = nn.Sequential([nn.Dense(4, activation="tanh"), nn.Dense(3)], dtype="float64")
    model.compile(
        optimizer=optim.SGD(learning_rate=lr),
        loss=sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.build_from_sample(np.zeros((1, 5)))
    return model


def _torch_twin(model):
    (k1, b1, k2, b2) = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    return [k1, b1, k2, b2]


def _torch_epoch(params, x, y, w, batch, lr, order):
    k1, b1, k2, b2 = params
    for start in range(0, len(x), batch):
        idx = order[start : start + batch]
        xb, yb, wb = torch.tensor(x[idx]), torch.tensor(y[idx]), torch.tensor(w[idx])
        logits = torch.tanh(xb @ k1 + b1) @ k2 + b2
        loss = (F.cross_entropy(logits, yb, reduction="none") * wb).sum() / len(idx)
        torch_sgd_step(loss, params, lr)


@pytest.mark.parametrize("kind", ["class_weight", "sample_weight", "both"])
def test_weighted_fit_matches_torch(kind):
    x, y = _data()
    class_weight = {0: 1.0, 1: 3.0, 2: 0.5}
    sw = np.random.default_rng(1).uniform(0, 2, size=len(x))
    w = np.ones(len(x))
    kwargs = {}
    if kind in ("class_weight", "both"):
        w = w * np.array([class_weight[c] for c in y])
        kwargs["class_weight"] = class_weight
    if kind in ("sample_weight", "both"):
        w = w * sw
        kwargs["sample_weight"] = sw
    model = _model()
    params = _torch_twin(model)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, **kwargs)
    order = np.arange(len(x))
    for _ in range(2):
        _torch_epoch(params, x, y, w, 8, 0.1, order)
    for ours, theirs in zip(model.get_weights(), params):
        assert_close(ours, theirs.detach(), rtol=1e-10, atol=1e-12)


def test_weights_of_one_equal_an_unweighted_fit_and_evaluate_weighs_the_loss():
    x, y = _data()
    a, b = _model(), _model()
    a.fit(x, y, batch_size=8, epochs=1, seed=3, verbose=0)
    b.fit(x, y, batch_size=8, epochs=1, seed=3, verbose=0, sample_weight=np.ones(len(x)))
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    per_row = sg.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    losses = per_row(y, a.predict(x)).data
    sw = np.linspace(0, 2, len(x))
    got = a.evaluate(x, y, batch_size=len(x), sample_weight=sw, return_dict=True)["loss"]
    assert got == pytest.approx(float((losses * sw).sum() / len(x)), rel=1e-12)


def test_validation_data_with_weights_and_the_errors():
    x, y = _data()
    model = _model()
    sw = np.ones(len(x))
    sw[:12] = 0.0
    h = model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y, sw))
    half = model.evaluate(x[12:], y[12:], return_dict=True)["loss"]
    assert h.history["val_loss"][0] == pytest.approx(half / 2, rel=1e-9)
    with pytest.raises(ValueError, match=r"no weight for class\(es\) \[2\]"):
        model.fit(x, y, epochs=1, verbose=0, class_weight={0: 1.0, 1: 2.0})
    with pytest.raises(ValueError, match=r"sample_weight has shape \(3,\); expected .* \(24,\)"):
        model.fit(x, y, epochs=1, verbose=0, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="finite and non-negative"):
        model.fit(x, y, epochs=1, verbose=0, sample_weight=-sw)
    with pytest.raises(ValueError, match="not supported with way="):
        model.fit(x, y, epochs=1, verbose=0, sample_weight=sw, way=sg.split.DataParallel(2))


def test_a_generator_of_weighted_triples_trains_like_sample_weight():
    x, y = _data()
    sw = np.random.default_rng(2).uniform(0, 2, size=len(x))
    a, b = _model(), _model()
    a.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, sample_weight=sw)
    b.fit(((x[i : i + 8], y[i : i + 8], sw[i : i + 8]) for i in range(0, 24, 8)), verbose=0)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-12)


def test_steps_per_epoch_with_a_generator_goes_on_and_with_arrays_cuts_each_epoch():
    x, y = _data()
    seen = []

    def endless():
        i = 0
        while True:
            seen.append(i)
            yield x[i % 24 : i % 24 + 4], y[i % 24 : i % 24 + 4]
            i += 4

    model = _model()
    h = model.fit(endless(), epochs=3, steps_per_epoch=2, verbose=0)
    assert len(h.history["loss"]) == 3
    assert seen == [0, 4, 8, 12, 16, 20]  # each epoch continues the generator, none extra
    counted = []

    class Count(sg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counted.append(batch)

    model.fit(x, y, batch_size=4, epochs=2, steps_per_epoch=3, verbose=0, callbacks=[Count()])
    assert counted == [0, 1, 2, 0, 1, 2]
