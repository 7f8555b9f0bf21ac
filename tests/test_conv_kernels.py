"""The convolution's compiled kernels (im2col, the tap-major col2im, bias + ReLU in one pass, the
ReLU mask) and its NumPy fallback: both against PyTorch (float64, strides, dilation, padding),
bitwise equal to each other in float32 and float64, and reproducible run to run. (NaN and −0
through bias + ReLU and the mask: test_activation_kernels.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_bitwise_equal, assert_close, compiled_and_numpy, to_torch
from helpers import compiled_kernels as kernels
from hypothesis import given, settings
from hypothesis import strategies as st

from splitgrad import Tensor, nn
from splitgrad.ops.conv import conv_geometry

numba = pytest.importorskip("numba")


def conv_step(layer, x, r, then=None):
    """Forward, then backward of sum(y·r) (through `then`, if given): y, dx, dW, db."""
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    out = then(y) if then is not None else y
    (out * Tensor(r)).sum().backward()
    grads = [xt.grad, layer.kernel.grad] + ([layer.bias.grad] if layer.use_bias else [])
    for w in layer.weights:
        w.grad = None
    return [out.data.copy()] + [g.copy() for g in grads]


def torch_conv(layer, x, relu):
    xt, wt = to_torch(x), to_torch(layer.kernel.data)
    bt = to_torch(layer.bias.data) if layer.use_bias else None
    pads = [
        conv_geometry(s, k, st_, d, layer.padding)[1:]
        for s, k, st_, d in zip(x.shape[1:3], layer.kernel_size, layer.strides, layer.dilation_rate)
    ]
    xn = F.pad(xt.permute(0, 3, 1, 2), (*pads[1], *pads[0]))
    y = F.conv2d(
        xn,
        wt.permute(3, 2, 0, 1),
        bt,
        stride=layer.strides,
        dilation=layer.dilation_rate,
    )
    return xt, wt, bt, (torch.relu(y) if relu else y).permute(0, 2, 3, 1)


cases = st.fixed_dictionaries(
    {
        "n": st.integers(1, 2),
        "hw": st.tuples(st.integers(3, 9), st.integers(3, 9)),
        "cin": st.sampled_from([1, 3, 4, 6]),  # below and above the compiled im2col's 4
        "k": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "dil": st.sampled_from([(1, 1), (2, 1), (1, 2)]),
        "padding": st.sampled_from(["valid", "same", 1]),
        "relu": st.booleans(),
        "bias": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


@pytest.mark.parametrize("enabled", [True, False], ids=["compiled", "numpy"])
@settings(max_examples=30, deadline=None)
@given(c=cases)
def test_both_paths_match_torch(enabled, c):
    span = [d * (k - 1) + 1 for d, k in zip(c["dil"], c["k"])]
    if c["padding"] == "valid" and (span[0] > c["hw"][0] or span[1] > c["hw"][1]):
        return
    if c["padding"] == 1 and (span[0] > c["hw"][0] + 2 or span[1] > c["hw"][1] + 2):
        return
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["n"], *c["hw"], c["cin"]))
    layer = nn.Conv2D(
        3,
        c["k"],
        strides=c["stride"],
        padding=c["padding"],
        dilation_rate=c["dil"],
        activation="relu" if c["relu"] else None,
        use_bias=c["bias"],
        dtype="float64",
    )
    layer.build(x.shape)
    layer.built = True
    xt, wt, bt, yt = torch_conv(layer, x, c["relu"])
    r = rng.standard_normal(yt.shape)
    (yt * to_torch(r, False)).sum().backward()
    with kernels(enabled):
        got = conv_step(layer, x, r)
    assert_close(got[0], yt, what="forward")
    assert_close(got[1], xt.grad, what="dx")
    assert_close(got[2], wt.grad, what="dW")
    if c["bias"]:
        assert_close(got[3], bt.grad, what="db")


@pytest.mark.parametrize(
    "shape,filters,kwargs",
    [
        ((3, 28, 28, 1), 24, {"activation": "relu"}),  # the lab CNN's first conv
        ((3, 13, 13, 24), 36, {"activation": "relu"}),  # its second: bias outside the GEMM
        ((2, 14, 14, 16), 8, {"padding": "same", "strides": 2}),
        ((2, 8, 7, 6), 3, {"padding": "same", "kernel_size": (5, 3)}),  # stride-1 col2im, pads
        ((2, 9, 8, 5), 4, {"padding": 2, "dilation_rate": 2, "activation": "relu"}),
        ((2, 6, 7, 8), 5, {"kernel_size": (1, 3), "strides": (2, 1), "use_bias": False}),
    ],
)
@pytest.mark.parametrize("pooled", [False, True], ids=["alone", "then-pool"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_and_numpy_paths_are_bitwise_equal(shape, filters, kwargs, pooled, dtype):
    kwargs = {"kernel_size": 3, **kwargs}
    rng = np.random.default_rng(0)
    layer = nn.Conv2D(filters, dtype=dtype, **kwargs)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :2] = 0.0  # an all-zero corner: exact zeros and ties behind the ReLU
    pool = nn.MaxPool2D(2, dtype=dtype) if pooled else None
    y = layer(x)
    r = rng.standard_normal(pool(y).shape if pooled else y.shape).astype(dtype)
    compiled, numpy_path = compiled_and_numpy(lambda: conv_step(layer, x, r, then=pool))
    assert_bitwise_equal(compiled, numpy_path, dtype)


def test_transpose_conv_paths_are_bitwise_equal():
    # Conv2DTranspose's backward gathers its output gradient with the same im2col.
    rng = np.random.default_rng(3)
    layer = nn.Conv2DTranspose(6, 3, strides=2, padding="same")
    x = rng.standard_normal((2, 5, 5, 8)).astype(np.float32)
    r = rng.standard_normal(layer(x).shape).astype(np.float32)
    assert_bitwise_equal(*compiled_and_numpy(lambda: conv_step(layer, x, r)))


@pytest.mark.parametrize("team", [2, 3])
@pytest.mark.parametrize(
    "shape,filters,kwargs",
    [
        ((5, 28, 28, 1), 24, {"activation": "relu"}),  # tap-major gathering (C < 4)
        ((5, 9, 9, 3), 4, {"padding": "same", "strides": 2}),
        ((5, 13, 13, 24), 36, {"activation": "relu"}),  # compiled im2col, bias outside
        ((4, 9, 8, 6), 5, {"padding": 1, "dilation_rate": 2, "use_bias": False}),
    ],
)
def test_batch_split_over_the_team_matches_torch_and_both_paths(
    monkeypatch, team, shape, filters, kwargs
):
    """Inside own_threads a conv and a pool cut their batch into one slice per team member
    (here 5 images over 2 or 3): the same values and gradients as PyTorch's, the compiled and
    NumPy paths bitwise equal (they cut alike), the same bits run to run."""
    from splitgrad._kernels import thread_team

    monkeypatch.setattr(thread_team, "team_size", lambda: team)
    rng = np.random.default_rng(team)
    layer = nn.Conv2D(filters, 3, dtype="float64", **kwargs)
    pool = nn.MaxPool2D(2, padding="same", dtype="float64")
    x = rng.standard_normal(shape)
    layer.build(x.shape)
    layer.built = True
    xt, wt, bt, yt = torch_conv(layer, x, kwargs.get("activation") == "relu")
    yt = F.max_pool2d(yt.permute(0, 3, 1, 2), 2, ceil_mode=True).permute(0, 2, 3, 1)
    r = rng.standard_normal(yt.shape)
    (yt * to_torch(r, False)).sum().backward()

    def split_step():
        with thread_team.own_threads:
            assert thread_team.batch_groups(shape[0])[-1] != slice(0, shape[0])
            return conv_step(layer, x, r, then=pool)

    got, numpy_path = compiled_and_numpy(split_step)
    assert_close(got[0], yt, what="forward")
    assert_close(got[1], xt.grad, what="dx")
    assert_close(got[2], wt.grad, what="dW")
    if layer.use_bias:
        assert_close(got[3], bt.grad, what="db")
    assert_bitwise_equal(got, numpy_path)
