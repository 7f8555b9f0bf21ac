"""Per-example gradients through the layer hooks (layers/per_example.py) equal a loop of
single-example backward passes, for every layer with weights; DP-SGD's clipped, noised step is
the same on the batched and the looped path; BatchNormalization is refused. float64 throughout.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import nn, optim
from splitgrad.layers import per_example
from splitgrad.split import DPSGD, dp_sgd


def compiled(layers, loss=None):
    model = nn.Sequential(layers, dtype="float64")
    model.compile(
        optimizer=optim.SGD(learning_rate=0.1),
        loss=loss or sg.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def same_as_loop(model, x, y, clips=(None, 0.05)):
    """The batched pass exists (every weight is at a site) and equals the loop."""
    model.build_from_sample(x)
    for clip in clips:
        loop = dp_sgd._looped(model, x, y, clip)
        batched = dp_sgd._batched(model, x, y, clip)
        assert batched is not None, "the batched path did not cover every weight"
        np.testing.assert_allclose(batched[0], loop[0], rtol=1e-10, atol=1e-12)
        assert batched[1] == pytest.approx(loop[1], rel=1e-12)
        assert batched[2] == pytest.approx(loop[2], rel=1e-10)


def tokens(n=6, steps=5, vocab=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, (n, steps)), rng.integers(0, 3, n)


RECURRENT = [
    lambda: nn.SimpleRNN(4),
    lambda: nn.SimpleRNN(4, activation="relu", return_sequences=True),
    lambda: nn.LSTM(4),
    lambda: nn.LSTM(3, return_sequences=True, go_backwards=True),
    lambda: nn.GRU(4),
    lambda: nn.GRU(3, return_sequences=True),
    lambda: nn.Bidirectional(nn.LSTM(3)),
    lambda: nn.Bidirectional(nn.GRU(2, return_sequences=True), merge_mode="sum"),
]


@pytest.mark.parametrize("make", RECURRENT)
def test_recurrent_layers_after_an_embedding(make):
    sg.seed(0)
    layers = [nn.Embedding(7, 5), make()]
    if getattr(layers[1], "return_sequences", False) or getattr(
        getattr(layers[1], "forward_layer", None), "return_sequences", False
    ):
        layers.append(nn.Flatten())
    model = compiled([*layers, nn.Dense(3)])
    same_as_loop(model, *tokens())


def test_recurrent_layer_on_float_input_with_sequence_loss():
    """Every step in the loss (Dense on (N, T, H)), two stacked LSTMs, a GRU on top."""
    sg.seed(1)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 6, 3)), rng.integers(0, 4, (5, 6))
    model = compiled(
        [
            nn.LSTM(4, return_sequences=True),
            nn.GRU(5, return_sequences=True),
            nn.Dense(4),
        ]
    )
    same_as_loop(model, x, y)


def test_embedding_alone_with_repeated_ids_and_a_large_vocabulary():
    sg.seed(2)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, (8, 9))  # many repeats within each example
    model = compiled([nn.Embedding(4, 3), nn.Flatten(), nn.Dense(2)])
    same_as_loop(model, x, rng.integers(0, 2, 8))
    big = rng.integers(0, 50_000, (6, 4))  # V = 50,000: no (N, V, D) array is built
    model = compiled([nn.Embedding(50_000, 3), nn.Flatten(), nn.Dense(2)])
    same_as_loop(model, big, rng.integers(0, 2, 6), clips=(0.05,))


def test_embedding_of_single_ids_and_a_regression_loss():
    sg.seed(3)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 7), rng.normal(size=(7, 2))
    model = compiled([nn.Embedding(5, 4), nn.Dense(2)], loss=sg.losses.MeanSquaredError())
    same_as_loop(model, x, y)


def test_frozen_weights_are_neither_clipped_nor_returned():
    sg.seed(9)
    table = nn.Embedding(7, 4)
    table.trainable = False
    model = compiled([table, nn.GRU(3), nn.Dense(3)])
    same_as_loop(model, *tokens(seed=9))
    lstm = nn.LSTM(3)
    lstm.trainable = False
    model = compiled([nn.Embedding(7, 4), lstm, nn.Dense(3)])
    same_as_loop(model, *tokens(seed=10))


def test_batchnorm_free_cnn_with_dense_on_sequences():
    sg.seed(4)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 8, 8, 2)), rng.integers(0, 3, 5)
    model = compiled(
        [
            nn.Conv2D(3, 3, activation="relu"),
            nn.AvgPool2D(2),
            nn.Reshape((9, 3)),
            nn.Dense(4, activation="tanh"),  # (N, 9, 4): nine positions per example
            nn.Flatten(),
            nn.Dense(3),
        ]
    )
    same_as_loop(model, x, y)


def test_unused_state_outputs_and_an_unreached_site_count_as_zero():
    """Stateless first layer whose h, c outputs are dropped by the model."""
    sg.seed(5)
    inputs = nn.Input((4,), dtype="int64")
    h = nn.Embedding(6, 3, dtype="float64")(inputs)
    lstm = nn.LSTM(3, return_sequences=True, return_state=True, dtype="float64")
    seq, _, _ = lstm(h)
    out = nn.Dense(2, dtype="float64")(nn.Flatten()(seq))
    model = sg.Model(inputs, out)
    model.compile(optimizer=optim.SGD(), loss=sg.losses.MeanSquaredError())
    rng = np.random.default_rng(5)
    same_as_loop(model, rng.integers(0, 6, (4, 4)), rng.normal(size=(4, 2)))


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 5),
    steps=st.integers(1, 6),
    vocab=st.integers(1, 30),
    units=st.integers(1, 6),
    kind=st.sampled_from(["SimpleRNN", "LSTM", "GRU"]),
    sequences=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_any_shapes(batch, steps, vocab, units, kind, sequences, seed):
    sg.seed(seed)
    layers = [nn.Embedding(vocab, 3), getattr(nn, kind)(units, return_sequences=sequences)]
    model = compiled([*layers, nn.Dense(2)])
    x, y = tokens(batch, steps, vocab, seed)
    y = np.random.default_rng(seed).integers(0, 2, (batch, steps) if sequences else batch)
    same_as_loop(model, x, y, clips=(0.1,))


def test_uncovered_weights_fall_back_to_the_loop():
    """A weight used twice (tied) or a Recompute block (its forward keeps no graph) is not
    covered: the batched pass says so and clipped_sum takes the exact loop."""
    sg.seed(6)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(4, 3)), rng.integers(0, 2, 4)
    shared = nn.Dense(3, activation="tanh", dtype="float64")
    inputs = nn.Input((3,), dtype="float64")
    tied = sg.Model(inputs, nn.Dense(2, dtype="float64")(shared(shared(inputs))))
    recomputed = compiled([nn.Recompute(nn.Dense(3, activation="tanh")), nn.Dense(2)])
    tied.compile(optimizer=optim.SGD(), loss=sg.losses.SparseCategoricalCrossentropy(True))
    for model in (tied, recomputed):
        model.build_from_sample(x)
        assert dp_sgd._batched(model, x, y, 1.0) is None
        total, _, _ = dp_sgd.clipped_sum(model, x, y, 1.0)
        np.testing.assert_allclose(total, dp_sgd._looped(model, x, y, 1.0)[0], rtol=1e-12)


def lstm_model():
    sg.seed(7)
    return compiled([nn.Embedding(9, 4), nn.LSTM(5), nn.Dense(3)])


def test_the_clipped_noised_step_is_the_same_on_both_paths(monkeypatch):
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 9, (24, 6)), rng.integers(0, 3, 24)
    way = {"clip": 0.5, "noise_multiplier": 1.3, "seed": 11}
    batched_fit_equals_loop(monkeypatch, lstm_model, x, y, way)


def batched_fit_equals_loop(monkeypatch, build, x, y, way):
    """Two epochs of DP-SGD (`way` settings) on build(): every step through the batched
    per-example pass, then through the per-example loop alone; the same weights after."""
    took, batched_pass = [], dp_sgd._batched
    monkeypatch.setattr(dp_sgd, "_batched", lambda *a: took.append(batched_pass(*a)) or took[-1])
    batched = build()
    batched.fit(x, y, batch_size=8, epochs=2, seed=3, verbose=0, way=DPSGD(**way))
    assert took and all(t is not None for t in took)  # every step took the batched pass
    monkeypatch.setattr(dp_sgd, "_batched", lambda *args: None)  # the loop only
    looped = build()
    looped.fit(x, y, batch_size=8, epochs=2, seed=3, verbose=0, way=DPSGD(**way))
    for a, b in zip(batched.get_weights(), looped.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_recording_leaves_plain_training_alone():
    """Outside `recording()` the hooks return their input: the recurrent op keeps its weight
    gradients, and the recorder sees nothing."""
    model = lstm_model()
    x, y = tokens(3, 4, 9)
    model.build_from_sample(x)
    with per_example.recording() as rec:
        pass
    model.train_step(x, y)
    assert rec.sites == [] and all(p.grad is not None for p in model.parameters())


def test_batchnorm_is_refused_with_a_message_and_a_frozen_one_accepted():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(12, 4)), rng.integers(0, 2, 12)
    model = compiled([nn.Dense(3), nn.BatchNormalization(name="bn"), nn.Dense(2)])
    with pytest.raises(ValueError, match=r"'bn' \(BatchNormalization.*trainable = False"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, way=DPSGD())
    with pytest.raises(ValueError, match="no per-example gradient"):
        dp_sgd.clipped_sum(model, x, y, 1.0)
    frozen = nn.BatchNormalization(name="bn")
    frozen.trainable = False  # moving statistics: the examples no longer mix
    model = compiled([nn.Dense(3), frozen, nn.Dense(2)])
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, way=DPSGD())
    same_as_loop(model, x[:5], y[:5])


# ----- Conv2DTranspose: kernel gradient = fields(δ)ᵀ·x per example -------------------------------
TRANSPOSED = [  # (kernel_size, strides, padding, dilation_rate, use_bias)
    (3, 1, "valid", 1, True),
    (3, 1, "same", 1, False),
    (3, 2, "valid", 1, False),
    (3, 2, "same", 1, True),
    ((2, 3), (3, 2), "valid", 1, True),  # rows that no kernel tap reaches
    (4, 2, 1, 1, True),  # the DCGAN generator's upsampling
    (3, 1, "same", 2, True),
    (2, 2, "valid", (2, 1), False),
]


@pytest.mark.parametrize("kernel, strides, padding, dilation, bias", TRANSPOSED)
def test_conv2d_transpose(kernel, strides, padding, dilation, bias):
    sg.seed(11)
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(4, 5, 4, 3)), rng.integers(0, 3, 4)
    layer = nn.Conv2DTranspose(
        4, kernel, strides=strides, padding=padding, dilation_rate=dilation, use_bias=bias
    )
    model = compiled([layer, nn.Flatten(), nn.Dense(3)])
    same_as_loop(model, x, y)


def test_conv2d_transpose_ghost_norm_and_a_frozen_one():
    """Few input pixels and many channels take the ghost norm (two Gram matrices) instead of
    building each example's kernel gradient; a frozen transposed conv is left out."""
    sg.seed(12)
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(5, 1, 2, 8)), rng.normal(size=(5, 2))
    model = compiled(
        [nn.Conv2DTranspose(8, 3, strides=2, activation="tanh"), nn.Flatten(), nn.Dense(2)],
        loss=sg.losses.MeanSquaredError(),
    )
    same_as_loop(model, x, y)
    frozen = nn.Conv2DTranspose(3, 3, strides=2, padding="same")
    frozen.trainable = False
    model = compiled([nn.Conv2D(4, 3, activation="relu"), frozen, nn.Flatten(), nn.Dense(2)])
    same_as_loop(model, rng.normal(size=(4, 5, 5, 2)), rng.integers(0, 2, 4))


def autoencoder():
    sg.seed(13)
    return compiled(
        [
            nn.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
            nn.Conv2D(6, 3, strides=2, padding="same", activation="relu"),
            nn.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu"),
            nn.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ],
        loss=sg.losses.MeanSquaredError(),
    )


def test_conv_autoencoder_per_example_gradients():
    rng = np.random.default_rng(13)
    x = rng.uniform(size=(5, 8, 8, 1))
    same_as_loop(autoencoder(), x, x)


def test_conv_autoencoder_dp_sgd_fit_is_the_same_on_both_paths(monkeypatch):
    rng = np.random.default_rng(14)
    x = rng.uniform(size=(16, 8, 8, 1))
    way = {"clip": 0.1, "noise_multiplier": 1.1, "seed": 5}
    batched_fit_equals_loop(monkeypatch, autoencoder, x, x, way)
