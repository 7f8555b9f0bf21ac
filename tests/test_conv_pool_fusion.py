"""A first Conv2D(relu) and the MaxPool2D(2) after it run as one op in a Sequential
(layers/fusion.py, ops/conv_pool.py): forward and weight gradients equal PyTorch's conv → relu →
max_pool2d in float64 (odd sizes, RGB, no bias, tied and dead windows, NaN), equal the layers
run one by one, the same bits run to run and over a team of 2 or 3 threads; every case the
fused op does not cover runs the layers one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from helpers import assert_close, compiled_kernels, to_torch, without_fusion
from hypothesis import given, settings
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import nn
from splitgrad.ops.conv_pool import ConvReluPoolFn


def _pair(filters=4, kernel=3, use_bias=True, dtype="float64", **conv):
    sg.seed(0)
    return nn.Sequential(
        [
            nn.Conv2D(filters, kernel, activation="relu", use_bias=use_bias, dtype=dtype, **conv),
            nn.MaxPool2D(2, dtype=dtype),
        ]
    )


def _run(model, x, r):
    """(output, kernel gradient, bias gradient or None, the output's op) for loss Σ y·r."""
    model.zero_grad()
    y = model(x)
    (y * sg.Tensor(r)).sum().backward()
    conv = model.layers[0]
    bias = conv.bias.grad.copy() if conv.use_bias else None
    return y.numpy().copy(), conv.kernel.grad.copy(), bias, type(y._ctx)


def _torch(model, x, r):
    conv = model.layers[0]
    w = to_torch(conv.kernel.data.transpose(3, 2, 0, 1).copy())
    b = to_torch(conv.bias.data) if conv.use_bias else None
    z = F.conv2d(to_torch(x.transpose(0, 3, 1, 2).copy(), False), w, b)
    y = F.max_pool2d(F.relu(z), 2).permute(0, 2, 3, 1)
    (y * to_torch(r, False)).sum().backward()
    wg = w.grad.permute(2, 3, 1, 0).numpy()
    return y.detach().numpy(), wg, None if b is None else b.grad.numpy()


@pytest.mark.parametrize(
    "shape, filters, kwargs",
    [
        ((3, 28, 28, 1), 24, {}),  # the lab CNN's first layer
        ((2, 9, 8, 3), 5, {}),  # RGB, odd conv output: the last row is no window's
        ((2, 12, 11, 2), 3, {"use_bias": False}),
        ((1, 6, 7, 4), 6, {"kernel": 2}),
    ],
)
def test_fused_conv_relu_pool_matches_torch(shape, filters, kwargs):
    rng = np.random.default_rng(0)
    model = _pair(filters, **kwargs)
    x = rng.standard_normal(shape)
    model(x[:1])
    y, wg, bg, op = _run(model, x, rng.standard_normal(model(x).shape))
    assert op is ConvReluPoolFn
    r = rng.standard_normal(y.shape)
    y, wg, bg, _ = _run(model, x, r)
    yt, wgt, bgt = _torch(model, x, r)
    assert_close(y, yt, what="forward")
    assert_close(wg, wgt, what="dW")
    if bg is not None:
        assert_close(bg, bgt, what="db")


def test_tied_and_dead_windows_follow_torch():
    # A 2×2 kernel that reads only its top-left pixel: each window's two top taps see the same
    # pixel value (a tie) but different patches, so the kernel's gradient says which tap won
    # (the first, as PyTorch). The second filter's negative bias kills it (no gradient).
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 9, 1))
    x[:, 0:8:2, 1:9:2] = x[:, 0:8:2, 0:8:2]  # tie the two top taps of every window
    x[:, 1:8:2, 0:8] -= 5.0  # and keep the bottom taps below them
    model = _pair(2, kernel=2)
    model(x[:1])
    model.layers[0].kernel.data[:] = 0.0
    model.layers[0].kernel.data[0, 0, 0, :] = 1.0
    model.layers[0].bias.data[:] = [10.0, -100.0]
    r = rng.standard_normal((2, 4, 4, 2))
    y, wg, bg, op = _run(model, x, r)
    yt, wgt, bgt = _torch(model, x, r)
    assert op is ConvReluPoolFn
    assert_close(y, yt, what="forward")
    assert_close(wg, wgt, what="dW")
    assert_close(bg, bgt, what="db")
    assert np.all(wg[..., 1] == 0) and bg[1] == 0


def _unfused(run):
    return without_fusion("conv_relu_pool", run)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    h=st.integers(3, 9),
    w=st.integers(3, 9),
    c=st.integers(1, 4),
    filters=st.integers(1, 5),
    kernel=st.integers(1, 3),
    use_bias=st.booleans(),
)
def test_fused_equals_the_layers_one_by_one(n, h, w, c, filters, kernel, use_bias):
    if min(h, w) < kernel + 1:
        return  # no whole pool window (covered below)
    rng = np.random.default_rng(n * 100 + h * 10 + w)
    model = _pair(filters, kernel, use_bias)
    x = rng.standard_normal((n, h, w, c))
    model(x[:1])
    r = rng.standard_normal(model(x).shape)
    fused = _run(model, x, r)
    plain = _unfused(lambda: _run(model, x, r))
    assert fused[3] is ConvReluPoolFn and plain[3] is not ConvReluPoolFn
    for a, b in zip(fused[:3], plain[:3]):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_nan_wins_its_window_as_in_the_layers_one_by_one():
    rng = np.random.default_rng(2)
    model = _pair(3)
    x = rng.standard_normal((2, 8, 8, 1))
    x[0, 2, 3, 0] = np.nan
    model(x[:1])
    r = rng.standard_normal((2, 3, 3, 3))
    fused, plain = _run(model, x, r), _unfused(lambda: _run(model, x, r))
    assert fused[3] is ConvReluPoolFn
    np.testing.assert_array_equal(np.isnan(fused[0]), np.isnan(plain[0]))
    assert np.isnan(fused[0]).any()
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("team", [2, 3])
def test_a_team_splits_the_batch_and_gives_the_same_bits_each_run(monkeypatch, team):
    from splitgrad._kernels import thread_team

    monkeypatch.setattr(thread_team, "team_size", lambda: team)
    rng = np.random.default_rng(team)
    model = _pair(24, dtype="float32")
    x = rng.random((5, 28, 28, 1), dtype=np.float32)
    model(x[:1])
    r = rng.standard_normal((5, 13, 13, 24)).astype(np.float32)
    with thread_team.own_threads:
        assert len(thread_team.batch_groups(5)) == team
        first, second = _run(model, x, r), _run(model, x, r)
    assert first[3] is ConvReluPoolFn
    for a, b in zip(first[:3], second[:3]):
        np.testing.assert_array_equal(a, b)
    plain = _unfused(lambda: _run(model, x, r))
    for a, b in zip(first[:3], plain[:3]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_training_batch_takes_the_backward_compiled_for_its_shape(dtype):
    # 64 lab-CNN images in one call: the backward pass compiled with the kernel's sizes as
    # constants; it adds in the same order as the generic one, and matches PyTorch.
    from splitgrad._kernels import conv_pool_jit as jit

    rng = np.random.default_rng(6)
    x = rng.random((64, 28, 28, 1)).astype(dtype)
    w = (rng.standard_normal((3, 3, 1, 24)) * 0.3).astype(dtype)
    b = (rng.standard_normal(24) * 0.1).astype(dtype)
    out, taps = np.empty((64, 13, 13, 24), dtype), np.empty((64, 13, 13, 24), np.uint8)
    jit.forward(x, w, b, out, taps, *w.shape)
    g = rng.standard_normal(out.shape).astype(dtype)
    grads = [(np.empty_like(w), np.empty_like(b)) for _ in range(2)]
    fns = [jit.backward_for((x, g, out, taps, *grads[0]), w.shape), jit.backward]
    assert fns[0] is not jit.backward
    for fn, (gw, gb) in zip(fns, grads):
        fn(x, g, out, taps, gw, gb, *w.shape)
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-6)
    if dtype == "float64":
        model = _pair(24)
        model(x[:1])
        model.layers[0].kernel.data[...] = w
        model.layers[0].bias.data[...] = b
        yt, wgt, bgt = _torch(model, x, g)
        assert_close(out, yt, what="forward")
        assert_close(grads[0][0], wgt, what="dW")
        assert_close(grads[0][1], bgt, what="db")


def test_fused_training_matches_the_layers_one_by_one():
    rng = np.random.default_rng(3)
    x = rng.random((32, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 3, 32)

    def fit():
        sg.seed(0)
        model = nn.Sequential(
            [
                nn.Conv2D(6, 3, activation="relu"),
                nn.MaxPool2D(2),
                nn.Flatten(),
                nn.Dense(3),
            ]
        )
        model.compile(optimizer="adam", loss="CrossEntropyLoss")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=0)
        return history.history["loss"], model.get_weights()

    (loss_f, w_f), (loss_p, w_p) = fit(), _unfused(fit)
    np.testing.assert_allclose(loss_f, loss_p, rtol=1e-5)
    for a, b in zip(w_f, w_p):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _conv_op(model, x):
    return type(model(x)._ctx)


@pytest.mark.parametrize(
    "case",
    ["input needs grad", "same padding", "stride 2", "5 channels", "pool 3", "tanh", "no numba"],
)
def test_every_other_case_runs_the_layers_one_by_one(case):
    rng = np.random.default_rng(4)
    channels = 5 if case == "5 channels" else 1
    x = rng.standard_normal((2, 10, 10, channels))
    conv = {"same padding": {"padding": "same"}, "stride 2": {"strides": 2}}.get(case, {})
    sg.seed(0)
    layers = [
        nn.Conv2D(3, 3, activation="tanh" if case == "tanh" else "relu", dtype="float64", **conv),
        nn.MaxPool2D(3 if case == "pool 3" else 2, dtype="float64"),
    ]
    model = nn.Sequential(layers)
    model(x[:1])
    if case == "input needs grad":
        xt = sg.Tensor(x, requires_grad=True)
        y = model(xt)
        assert type(y._ctx) is not ConvReluPoolFn
        y.sum().backward()
        assert xt.grad is not None and xt.grad.shape == x.shape
        return
    if case == "no numba":
        with compiled_kernels(False):
            assert _conv_op(model, x) is not ConvReluPoolFn
        return
    assert _conv_op(model, x) is not ConvReluPoolFn


def test_dp_sgd_recording_runs_the_layers_one_by_one():
    from splitgrad.layers import per_example

    model = _pair(3)
    x = np.random.default_rng(5).standard_normal((2, 8, 8, 1))
    model(x[:1])
    with per_example.recording():
        assert _conv_op(model, x) is not ConvReluPoolFn


def test_a_too_small_image_gets_the_layers_error():
    model = _pair(3)
    model(np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError):
        model(np.zeros((1, 3, 3, 1)))
    with pytest.raises(ValueError, match="channels"):
        model(np.zeros((1, 8, 8, 2)))
