"""Max pooling's two paths, the numba-compiled kernels and the NumPy fallback: both against
PyTorch (float64, ties to the first maximum, overlaps adding up), bitwise equal to each other,
reproducible run to run, cheap under no_grad, and numba never imported by `import splitgrad`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch.nn.functional as F
from helpers import assert_bitwise_equal, assert_close, compiled_and_numpy, to_torch
from helpers import compiled_kernels as kernels
from hypothesis import given, settings
from hypothesis import strategies as st

from splitgrad import Tensor, nn, no_grad
from splitgrad.ops.conv import conv_geometry

numba = pytest.importorskip("numba")


def pool_grad(layer, x, r):
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    (y * Tensor(r)).sum().backward()
    return y.data, xt.grad


def torch_pool(x, pool, stride, padding):
    pads = [
        conv_geometry(s, k, st_, 1, padding)[1:] for s, k, st_ in zip(x.shape[1:3], pool, stride)
    ]
    xt = to_torch(x)
    xn = F.pad(xt.permute(0, 3, 1, 2), (*pads[1], *pads[0]), value=-np.inf)
    return xt, F.max_pool2d(xn, pool, stride).permute(0, 2, 3, 1)


cases = st.fixed_dictionaries(
    {
        "shape": st.tuples(
            st.integers(1, 2), st.integers(2, 9), st.integers(2, 9), st.integers(1, 5)
        ),
        "pool": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "stride": st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
        "padding": st.sampled_from(["valid", "same"]),
        "seed": st.integers(0, 2**16),
    }
)


@pytest.mark.parametrize("enabled", [True, False], ids=["compiled", "numpy"])
@settings(max_examples=40, deadline=None)
@given(c=cases)
def test_both_paths_match_torch_with_ties(enabled, c):
    pool, stride = c["pool"], c["stride"] or c["pool"]
    if c["padding"] == "valid" and (pool[0] > c["shape"][1] or pool[1] > c["shape"][2]):
        return
    rng = np.random.default_rng(c["seed"])
    x = rng.integers(0, 3, c["shape"]).astype(float)  # ties in most windows
    xt, yt = torch_pool(x, pool, stride, c["padding"])
    r = rng.standard_normal(yt.shape)
    (yt * to_torch(r, False)).sum().backward()
    with kernels(enabled):
        y, gx = pool_grad(nn.MaxPool2D(pool, stride, c["padding"], dtype="float64"), x, r)
    assert_close(y, yt, what="forward")
    assert_close(gx, xt.grad, what="dx")


@pytest.mark.parametrize(
    "shape,pool,stride,padding",
    [
        ((4, 26, 26, 24), 2, None, "valid"),  # the lab CNN's first pool
        ((4, 11, 11, 36), 2, None, "valid"),  # odd size: the last row and column are dropped
        ((3, 13, 13, 5), 3, 2, "same"),  # overlapping, padded
        ((2, 7, 9, 3), (2, 3), (1, 2), "valid"),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_and_numpy_paths_are_bitwise_equal(shape, pool, stride, padding, dtype):
    rng = np.random.default_rng(0)
    # ReLU'd data: a quarter of the windows are all zeros (ties everywhere).
    x = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    layer = nn.MaxPool2D(pool, stride, padding, dtype=dtype)
    r = rng.standard_normal(layer(x).shape).astype(dtype)
    assert_bitwise_equal(*compiled_and_numpy(lambda: pool_grad(layer, x, r)), dtype)


def test_no_grad_forward_matches_and_records_nothing():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    layer = nn.MaxPool2D(2)
    with no_grad():
        y = layer(Tensor(x, requires_grad=True))
    assert not y.requires_grad
    np.testing.assert_array_equal(y.data, x.reshape(2, 4, 2, 4, 2, 4).max(axis=(2, 4)))


def test_nan_wins_the_window_as_in_numpy():
    x = np.zeros((1, 2, 4, 1))
    x[0, 1, 1, 0] = np.nan
    x[0, 0, 2, 0] = 5.0
    for enabled in (True, False):
        with kernels(enabled):
            y = nn.MaxPool2D(2, dtype="float64")(x).data
        assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 0] == 5.0


def test_import_splitgrad_leaves_numba_unloaded():
    code = "import sys, splitgrad; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("enabled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("also_used", [False, True], ids=["pool-only", "output-also-used"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_relu_then_pool_matches_torch(enabled, also_used, padding):
    # The pool applies the conv's ReLU mask at pooled size and the conv skips its own, but
    # only when the pool's gradient is all it receives; a second consumer must still count.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 9, 3))
    conv = nn.Conv2D(4, 3, activation="relu", dtype="float64")
    pool = nn.MaxPool2D(2, padding=padding, dtype="float64")
    with kernels(enabled):
        xs = Tensor(x, requires_grad=True)
        h = conv(xs)
        y = pool(h)
        r = rng.standard_normal(y.shape)
        loss = (y * Tensor(r)).sum()
        if also_used:
            loss = loss + (h * h).sum()
        loss.backward()
    xt = to_torch(x)
    wt, bt = to_torch(conv.kernel.data), to_torch(conv.bias.data)
    ht = F.relu(F.conv2d(xt.permute(0, 3, 1, 2), wt.permute(3, 2, 0, 1), bt))
    pads = [conv_geometry(s, 2, 2, 1, padding)[1:] for s in ht.shape[2:]]
    yt = F.max_pool2d(F.pad(ht, (*pads[1], *pads[0]), value=-np.inf), 2)
    lt = (yt.permute(0, 2, 3, 1) * to_torch(r, False)).sum()
    if also_used:
        lt = lt + (ht * ht).sum()
    lt.backward()
    assert_close(y.data, yt.permute(0, 2, 3, 1), what="forward")
    assert_close(xs.grad, xt.grad, what="dx")
    assert_close(conv.kernel.grad, wt.grad, what="dW")
    assert_close(conv.bias.grad, bt.grad, what="db")
