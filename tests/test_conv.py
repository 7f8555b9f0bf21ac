"""Conv, pooling and batch-norm: forward and gradients against PyTorch (float64, NHWC↔NCHW),
finite-difference checks of each fused primitive, running statistics, errors and buffer reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, numeric_grad, to_torch
from hypothesis import given
from hypothesis import strategies as st

from splitgrad import Tensor, nn, no_grad
from splitgrad._kernels.workspace import Workspace
from splitgrad.ops import conv as conv_ops
from splitgrad.ops import pooling as pooling_ops
from splitgrad.ops.conv import conv_geometry
from splitgrad.ops.normalization import batch_norm


def nchw(t):
    return t.permute(0, 3, 1, 2)


def nhwc(t):
    return t.permute(0, 2, 3, 1)


def torch_kernel(w):
    """(kh, kw, in, out) → (out, in, kh, kw); also (kh, kw, out, in) → (in, out, kh, kw)."""
    return w.permute(3, 2, 0, 1).contiguous()


def torch_pad(x_nchw, pads, value=0.0):
    (pt, pb), (pl, pr) = pads
    return F.pad(x_nchw, (pl, pr, pt, pb), value=value)


def layer_pads(layer, shape):
    out = []
    for size, k, s, d in zip(shape[1:3], layer.kernel_size, layer.strides, layer.dilation_rate):
        out.append(conv_geometry(size, k, s, d, layer.padding)[1:])
    return tuple(out)


def run_layer(layer, x, r):
    """Output and input gradient of sum(layer(x)·r), with x a float64 leaf."""
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    (y * Tensor(r)).sum().backward()
    return y.data, xt.grad


conv_cases = st.fixed_dictionaries(
    {
        "n": st.integers(1, 2),
        "h": st.integers(1, 8),
        "w": st.integers(1, 8),
        "cin": st.integers(1, 3),
        "cout": st.integers(1, 4),
        "kh": st.integers(1, 3),
        "kw": st.integers(1, 3),
        "stride": st.integers(1, 3),
        "dil": st.integers(1, 2),
        "padding": st.sampled_from(["valid", "same"]),
        "bias": st.booleans(),
        "act": st.sampled_from([None, "relu"]),
        "seed": st.integers(0, 2**16),
    }
)


def _assert_matches_torch(layer, y, gx, r, yt, xt, wt, bt):
    """Backpropagate r through torch's output yt, then compare the forward value and the
    input, kernel and (when there is one) bias gradients with splitgrad's."""
    (yt * to_torch(r, False)).sum().backward()
    assert_close(y, yt, what="forward")
    assert_close(gx, xt.grad, what="dx")
    assert_close(layer.kernel.grad, wt.grad, what="dW")
    if bt is not None:
        assert_close(layer.bias.grad, bt.grad, what="db")


@given(conv_cases)
def test_conv2d_matches_torch(c):
    rng = np.random.default_rng(c["seed"])
    layer = nn.Conv2D(
        c["cout"],
        (c["kh"], c["kw"]),
        strides=c["stride"],
        padding=c["padding"],
        dilation_rate=c["dil"],
        use_bias=c["bias"],
        activation=c["act"],
        dtype="float64",
    )
    x = rng.standard_normal((c["n"], c["h"], c["w"], c["cin"]))
    span = (c["dil"] * (c["kh"] - 1) + 1, c["dil"] * (c["kw"] - 1) + 1)
    if c["padding"] == "valid" and (span[0] > c["h"] or span[1] > c["w"]):
        with pytest.raises(ValueError, match="larger than the padded input"):
            layer(x)
        return
    layer.build(x.shape)
    layer.built = True
    yshape = layer(x).shape
    r = rng.standard_normal(yshape)
    y, gx = run_layer(layer, x, r)

    xt, wt = to_torch(x), to_torch(layer.kernel.data)
    bt = to_torch(layer.bias.data) if c["bias"] else None
    yt = F.conv2d(
        torch_pad(nchw(xt), layer_pads(layer, x.shape)),
        torch_kernel(wt),
        bt,
        stride=c["stride"],
        dilation=c["dil"],
    )
    yt = nhwc(torch.relu(yt) if c["act"] == "relu" else yt)
    _assert_matches_torch(layer, y, gx, r, yt, xt, wt, bt)


@pytest.mark.parametrize(
    "stride,padding,dil,bias",
    [(1, "valid", 1, True), (2, "same", 1, True), (1, "same", 2, False), (2, 1, 1, True)],
)
def test_conv2d_many_channels_matches_torch(stride, padding, dil, bias):
    # Eight input channels take the other im2col copy and keep the bias out of the GEMM.
    rng = np.random.default_rng(stride + dil)
    layer = nn.Conv2D(
        5, 3, strides=stride, padding=padding, dilation_rate=dil, use_bias=bias, dtype="float64"
    )
    x = rng.standard_normal((2, 7, 6, 8))
    layer.build(x.shape)
    layer.built = True
    r = rng.standard_normal(layer(x).shape)
    y, gx = run_layer(layer, x, r)
    xt, wt = to_torch(x), to_torch(layer.kernel.data)
    bt = to_torch(layer.bias.data) if bias else None
    yt = nhwc(
        F.conv2d(
            torch_pad(nchw(xt), layer_pads(layer, x.shape)),
            torch_kernel(wt),
            bt,
            stride=stride,
            dilation=dil,
        )
    )
    _assert_matches_torch(layer, y, gx, r, yt, xt, wt, bt)


def test_same_padding_rule():
    # Keras: out = ceil(H/s); total = max((out−1)s + k − H, 0); odd pixel bottom/right.
    assert conv_geometry(5, 3, 1, 1, "same") == (5, 1, 1)
    assert conv_geometry(6, 4, 1, 1, "same") == (6, 1, 2)
    assert conv_geometry(7, 3, 2, 1, "same") == (4, 1, 1)
    assert conv_geometry(8, 3, 2, 1, "same") == (4, 0, 1)
    assert conv_geometry(8, 1, 3, 1, "same") == (3, 0, 0)
    assert conv_geometry(28, 3, 1, 1, "valid") == (26, 0, 0)


@given(conv_cases)
def test_conv2d_transpose_matches_torch(c):
    rng = np.random.default_rng(c["seed"])
    layer = nn.Conv2DTranspose(
        c["cout"],
        (c["kh"], c["kw"]),
        strides=c["stride"],
        padding=c["padding"],
        dilation_rate=c["dil"],
        use_bias=c["bias"],
        dtype="float64",
    )
    x = rng.standard_normal((c["n"], c["h"], c["w"], c["cin"]))
    layer.build(x.shape)
    layer.built = True
    out_hw = layer.output_size(c["h"], c["w"])
    r = rng.standard_normal((c["n"],) + out_hw + (c["cout"],))
    y, gx = run_layer(layer, x, r)

    # Oracle: torch's unpadded transposed conv, zero-extended to the padded size, then cropped.
    xt, wt = to_torch(x), to_torch(layer.kernel.data)
    full = F.conv_transpose2d(nchw(xt), torch_kernel(wt), stride=c["stride"], dilation=c["dil"])
    pads = layer_pads(layer, (0,) + out_hw)
    need = [o + sum(p) - f for o, p, f in zip(out_hw, pads, full.shape[2:])]
    full = F.pad(full, (0, need[1], 0, need[0]))
    yt = nhwc(full[:, :, pads[0][0] : pads[0][0] + out_hw[0], pads[1][0] : pads[1][0] + out_hw[1]])
    bt = to_torch(layer.bias.data) if c["bias"] else None
    if bt is not None:
        yt = yt + bt
    _assert_matches_torch(layer, y, gx, r, yt, xt, wt, bt)


def test_conv2d_transpose_shapes_and_init():
    layer = nn.Conv2DTranspose(8, 3, strides=2, padding="same")
    y = layer(np.zeros((2, 7, 5, 4), np.float32))
    assert y.shape == (2, 14, 10, 8) and layer.kernel.shape == (3, 3, 8, 4)
    assert np.abs(layer.kernel.data).max() <= 1 / np.sqrt(8 * 9)
    assert nn.Conv2DTranspose(3, 3, strides=2)(np.zeros((1, 4, 4, 2))).shape == (1, 9, 9, 3)
    # An int padding crops that many pixels per side, like PyTorch's padding argument.
    rng = np.random.default_rng(6)
    layer = nn.Conv2DTranspose(3, 3, strides=2, padding=1, dtype="float64")
    x = rng.standard_normal((1, 4, 5, 2))
    y = layer(x)
    yt = F.conv_transpose2d(
        nchw(to_torch(x)),
        torch_kernel(to_torch(layer.kernel.data)),
        to_torch(layer.bias.data),
        stride=2,
        padding=1,
    )
    assert_close(y.data, nhwc(yt))


pool_cases = st.fixed_dictionaries(
    {
        "n": st.integers(1, 2),
        "h": st.integers(1, 7),
        "w": st.integers(1, 7),
        "c": st.integers(1, 3),
        "ph": st.integers(1, 3),
        "pw": st.integers(1, 3),
        "sh": st.integers(1, 3),
        "sw": st.integers(1, 3),
        "padding": st.sampled_from(["valid", "same"]),
        "ties": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def _pool_input(c):
    rng = np.random.default_rng(c["seed"])
    shape = (c["n"], c["h"], c["w"], c["c"])
    # Small integers make many tied maxima, which must send the gradient to the first one.
    x = rng.integers(0, 3, shape).astype(float) if c["ties"] else rng.standard_normal(shape)
    return rng, x


def _pool_or_skip(cls, c, x):
    layer = cls((c["ph"], c["pw"]), (c["sh"], c["sw"]), c["padding"], dtype="float64")
    if c["padding"] == "valid" and (c["ph"] > c["h"] or c["pw"] > c["w"]):
        with pytest.raises(ValueError, match="larger than the padded input"):
            layer(x)
        return None, None
    pads = tuple(
        conv_geometry(s, k, st_, 1, c["padding"])[1:]
        for s, k, st_ in zip((c["h"], c["w"]), layer.pool_size, layer.strides)
    )
    return layer, pads


@given(pool_cases)
def test_max_pool_matches_torch(c):
    rng, x = _pool_input(c)
    layer, pads = _pool_or_skip(nn.MaxPool2D, c, x)
    if layer is None:
        return
    xt = to_torch(x)
    yt = nhwc(
        F.max_pool2d(torch_pad(nchw(xt), pads, -np.inf), (c["ph"], c["pw"]), (c["sh"], c["sw"]))
    )
    r = rng.standard_normal(yt.shape)
    (yt * to_torch(r, False)).sum().backward()
    y, gx = run_layer(layer, x, r)
    assert_close(y, yt, what="forward")
    assert_close(gx, xt.grad, what="dx")


@given(pool_cases)
def test_avg_pool_matches_torch(c):
    rng, x = _pool_input(c)
    layer, pads = _pool_or_skip(nn.AvgPool2D, c, x)
    if layer is None:
        return
    k, s = (c["ph"], c["pw"]), (c["sh"], c["sw"])
    xt = to_torch(x)
    total = F.avg_pool2d(torch_pad(nchw(xt), pads), k, s) * (k[0] * k[1])
    ones = torch_pad(torch.ones(1, 1, c["h"], c["w"]), pads)
    yt = nhwc(total / (F.avg_pool2d(ones, k, s) * (k[0] * k[1])))
    r = rng.standard_normal(yt.shape)
    (yt * to_torch(r, False)).sum().backward()
    y, gx = run_layer(layer, x, r)
    assert_close(y, yt, what="forward")
    assert_close(gx, xt.grad, what="dx")


def test_max_pool_ties_go_to_first_maximum_and_overlaps_accumulate():
    x = np.array([[1.0, 3.0, 3.0], [3.0, 0.0, 3.0], [2.0, 3.0, 1.0]])[None, :, :, None]
    y, gx = run_layer(nn.MaxPool2D(2, strides=1, dtype="float64"), x, np.ones((1, 2, 2, 1)))
    assert_close(y[0, :, :, 0], [[3.0, 3.0], [3.0, 3.0]])
    # Windows at (0,0) and (0,1) both pick (0,1); (1,0) picks (1,0); (1,1) picks (1,2).
    assert_close(gx[0, :, :, 0], [[0, 2, 0], [1, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize("pool,padding", [(2, "valid"), (3, "same"), ((2, 3), "valid")])
def test_max_pool_tiling_windows_with_ties_match_torch(pool, padding):
    # stride == pool takes the one-shot path; 0/1 data makes ties in almost every window.
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, (2, 7, 8, 3)).astype(float)
    layer = nn.MaxPool2D(pool, padding=padding, dtype="float64")
    pads = tuple(conv_geometry(s, k, k, 1, padding)[1:] for s, k in zip((7, 8), layer.pool_size))
    xt = to_torch(x)
    yt = nhwc(F.max_pool2d(torch_pad(nchw(xt), pads, -np.inf), layer.pool_size))
    r = rng.standard_normal(yt.shape)
    (yt * to_torch(r, False)).sum().backward()
    y, gx = run_layer(layer, x, r)
    assert_close(y, yt)
    assert_close(gx, xt.grad)


def test_global_average_pooling():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    r = rng.standard_normal((2, 5))
    y, gx = run_layer(nn.GlobalAveragePooling2D(dtype="float64"), x, r)
    xt = to_torch(x)
    yt = F.adaptive_avg_pool2d(nchw(xt), 1).flatten(1)
    (yt * to_torch(r, False)).sum().backward()
    assert_close(y, yt)
    assert_close(gx, xt.grad)
    assert nn.GlobalAveragePooling2D(keepdims=True)(x).shape == (2, 1, 1, 5)


@pytest.mark.parametrize("shape", [(6, 3), (3, 4, 5, 2)])
def test_batch_norm_training_inference_and_running_stats(shape):
    rng = np.random.default_rng(1)
    c = shape[-1]
    layer = nn.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float64")
    layer.build(shape)
    layer.built = True
    layer.gamma.data[:] = rng.uniform(0.5, 1.5, c)
    layer.beta.data[:] = rng.standard_normal(c)
    gt, bt = to_torch(layer.gamma.data), to_torch(layer.beta.data)
    rm, rv = torch.zeros(c), torch.ones(c)
    to_ncx = (lambda t: t) if len(shape) == 2 else nchw
    from_ncx = (lambda t: t) if len(shape) == 2 else nhwc
    for step in range(3):
        x = rng.standard_normal(shape) * 2 + 1
        r = rng.standard_normal(shape)
        layer.zero_grad()
        gt.grad = bt.grad = None
        y, gx = run_layer(layer, x, r)
        xt = to_torch(x)
        yt = from_ncx(
            F.batch_norm(to_ncx(xt), rm, rv, gt, bt, training=True, momentum=0.1, eps=1e-5)
        )
        (yt * to_torch(r, False)).sum().backward()
        assert_close(y, yt, what=f"forward step {step}")
        assert_close(gx, xt.grad, what="dx")
        assert_close(layer.gamma.grad, gt.grad, what="dgamma")
        assert_close(layer.beta.grad, bt.grad, what="dbeta")
        assert_close(layer.moving_mean.data, rm, what="running mean")
        assert_close(layer.moving_variance.data, rv, what="running var (unbiased)")
    layer.eval()
    layer.zero_grad()
    gt.grad = bt.grad = None
    x, r = rng.standard_normal(shape), rng.standard_normal(shape)
    y, gx = run_layer(layer, x, r)
    xt = to_torch(x)
    yt = from_ncx(F.batch_norm(to_ncx(xt), rm, rv, gt, bt, training=False, eps=1e-5))
    (yt * to_torch(r, False)).sum().backward()
    assert_close(y, yt, what="inference forward")
    assert_close(gx, xt.grad, what="inference dx")
    assert_close(layer.gamma.grad, gt.grad, what="inference dgamma")
    assert_close(layer.moving_mean.data, rm, what="inference leaves running stats alone")


def test_batch_norm_defaults_and_state_weights():
    layer = nn.BatchNormalization()
    assert (layer.momentum, layer.epsilon) == (0.99, 1e-3)
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32) * 3
    y = layer(x)
    expect = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    assert_close(y.data, expect, rtol=1e-5, atol=1e-5)
    assert_close(layer.moving_mean.data, 0.01 * x.mean(0), rtol=1e-5, atol=1e-6)
    names = layer.named_weights()
    assert list(names) == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [p.name for p in layer.parameters()] == ["gamma", "beta"]
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(np.zeros((1, 3), np.float32))


# ----- finite differences of every fused primitive ----------------------------------------
def _fd_check(fn, arrays, seed=0):
    """Compare the analytic gradient of sum(fn(*tensors)·r) with central differences."""
    rng = np.random.default_rng(seed)
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    r = rng.standard_normal(out.shape)
    (out * Tensor(r)).sum().backward()
    for t, a in zip(tensors, arrays):

        def f():
            with no_grad():
                return float((fn(*[Tensor(b) for b in arrays]).data * r).sum())

        assert_close(t.grad, numeric_grad(f, a), rtol=1e-5, atol=1e-7)


def test_finite_differences_conv_and_transpose():
    rng = np.random.default_rng(2)
    x, w, b = (
        rng.standard_normal((2, 5, 4, 2)),
        rng.standard_normal((2, 3, 2, 3)),
        rng.standard_normal(3),
    )
    pads = ((1, 1), (0, 1))
    ws = Workspace()
    _fd_check(
        lambda x, w, b: conv_ops.conv2d(x, w, b, (2, 1), (1, 1), pads, relu=True, ws=ws), [x, w, b]
    )
    _fd_check(lambda x, w: conv_ops.conv2d(x, w, None, (1, 2), (2, 1), pads), [x, w])
    wt = rng.standard_normal((3, 2, 3, 2))
    _fd_check(
        lambda x, w, b: conv_ops.conv2d_transpose(
            x, w, b, (2, 2), (1, 1), ((1, 0), (0, 0)), out_hw=(10, 9)
        ),
        [x, wt, b],
    )


def test_finite_differences_pools_and_batch_norm():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 5, 2))
    pads = ((0, 1), (1, 1))
    _fd_check(
        lambda x: pooling_ops.max_pool2d(x, (3, 2), (2, 1), pads, (2, 6), ws=Workspace()), [x]
    )
    _fd_check(lambda x: pooling_ops.avg_pool2d(x, (3, 2), (2, 1), pads, (2, 6)), [x])
    g, b = rng.uniform(0.5, 1.5, 2), rng.standard_normal(2)
    rm, rv = np.zeros(2), np.ones(2)
    _fd_check(lambda x, g, b: batch_norm(x, g, b, None, None, training=True), [x, g, b])
    _fd_check(lambda x, g, b: batch_norm(x, g, b, rm, rv, training=False), [x, g, b])
    _fd_check(lambda x: batch_norm(x, None, None, None, None, axis=1), [x])


# ----- layers: errors, configs, buffer reuse ---------------------------------------------
def test_errors_name_layer_expected_and_fix():
    conv = nn.Conv2D(4, 3, name="c1")
    with pytest.raises(
        ValueError, match=r"'c1'.*4-D channels-last.*\(2, 8, 8\).*x\[\.\.\., None\]"
    ):
        conv(np.zeros((2, 8, 8), np.float32))
    conv(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"built for 3 input channels.*got 8.*transpose"):
        conv(np.zeros((1, 3, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"'c1'.*larger than the padded input.*padding='same'"):
        conv(np.zeros((1, 2, 9, 3), np.float32))
    assert nn.Conv2D(4, 3, padding="same")(np.zeros((1, 2, 2, 1))).shape == (1, 2, 2, 4)
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match=r"MaxPool2D.*larger than the padded input"):
        nn.MaxPool2D(3)(np.zeros((1, 2, 2, 1)))
    bn = nn.BatchNormalization(name="bn")
    bn(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"'bn'.*built for 3 channels.*got 5"):
        bn(np.zeros((4, 5), np.float32))


def test_conv_init_config_and_aliases():
    conv = nn.Conv2D(6, (3, 2), strides=2, padding="same", activation="relu")
    conv(np.zeros((1, 5, 5, 4), np.float32))
    bound = 1 / np.sqrt(4 * 3 * 2)
    assert conv.kernel.shape == (3, 2, 4, 6) and conv.kernel.dtype == np.float32
    assert np.abs(conv.kernel.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    for layer in (
        conv,
        nn.MaxPool2D(3, 1, "same"),
        nn.AvgPool2D(2),
        nn.Conv2DTranspose(2, 3, 2, "same"),
        nn.BatchNormalization(epsilon=1e-5),
        nn.GlobalAveragePooling2D(),
    ):
        again = type(layer).from_config(layer.get_config())
        assert again.get_config() == layer.get_config()
    assert nn.MaxPooling2D is nn.MaxPool2D and nn.AveragePooling2D is nn.AvgPool2D


def test_reused_buffers_keep_two_live_graphs_apart():
    # Two forwards through one layer before one backward must not share im2col buffers.
    rng = np.random.default_rng(4)
    model = nn.Sequential([nn.Conv2D(3, 3, activation="relu"), nn.MaxPool2D(2)], dtype="float64")
    a, b = rng.standard_normal((2, 6, 6, 2)), rng.standard_normal((2, 6, 6, 2))
    (model(a).sum() + 2 * model(b).sum()).backward()
    both = model.layers[0].kernel.grad.copy()
    grads = []
    for x in (a, b):
        model.zero_grad()
        with no_grad():
            model(rng.standard_normal((2, 6, 6, 2)))  # an unrecorded call in between
        model(x).sum().backward()
        grads.append(model.layers[0].kernel.grad.copy())
    assert_close(both, grads[0] + 2 * grads[1])
    # A kept output is never recycled by later calls.
    kept = model(a)
    saved = kept.data.copy()
    for _ in range(3):
        model(b).sum().backward()
    assert_close(kept.data, saved)


def test_w2_network_trains_in_float32():
    rng = np.random.default_rng(5)
    model = nn.Sequential(
        [
            nn.Conv2D(8, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(8, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Flatten(),
            nn.Dense(10),
        ]
    )
    x = rng.standard_normal((16, 28, 28, 1)).astype(np.float32)
    target = rng.standard_normal((16, 10)).astype(np.float32)
    losses = []
    for _ in range(5):
        model.zero_grad()
        diff = model(x) - Tensor(target)
        loss = (diff * diff).mean()
        loss.backward()
        for p in model.parameters():
            assert p.grad.dtype == np.float32
            p.data -= 0.05 * p.grad
        losses.append(loss.item())
    assert losses[-1] < losses[0]
