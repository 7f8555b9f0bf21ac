"""Losses against torch.nn.functional (values and gradients, float64), finite-difference checks of
the fused primitives, the softmax/sigmoid logits shortcut, the registry and error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, numeric_grad, to_torch
from hypothesis import given
from hypothesis import strategies as st

from splitgrad import losses, ops
from splitgrad.ops import losses as loss_ops
from splitgrad.tensor import Tensor

REDUCTIONS = ["mean", "sum", "none"]


def _value_and_grad(loss_fn, x):
    t = Tensor(x.copy(), requires_grad=True)
    out = loss_fn(t)
    out.backward(np.ones_like(out.data) if out.ndim else None)
    return out.data, t.grad


def _torch_value_and_grad(loss_fn, x):
    t = to_torch(x)
    out = loss_fn(t)
    out.backward(torch.ones_like(out))
    return out.detach().numpy(), t.grad.numpy()


def _compare(ours_fn, torch_fn, x, rtol=1e-9, atol=1e-12):
    v, g = _value_and_grad(ours_fn, x)
    tv, tg = _torch_value_and_grad(torch_fn, x)
    assert_close(v, tv, rtol=rtol, atol=atol, what="value")
    assert_close(g, tg, rtol=rtol, atol=atol, what="gradient")


def _classes_to_axis1(t):
    return t if t.ndim == 2 else t.movedim(-1, 1)


shapes = st.sampled_from([(5,), (4, 3), (2, 3, 4)])
class_shapes = st.sampled_from([(1, 2), (6, 3), (4, 5), (2, 3, 4)])


@given(shape=shapes, seed=st.integers(0, 2**16), reduction=st.sampled_from(REDUCTIONS))
def test_mse_mae_match_torch(shape, seed, reduction):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=shape), rng.normal(size=shape)
    _compare(
        lambda t: losses.mse(y, t, reduction=reduction),
        lambda t: F.mse_loss(t, torch.as_tensor(y), reduction=reduction),
        x,
    )
    _compare(
        lambda t: losses.MAE(reduction=reduction)(y, t),
        lambda t: F.l1_loss(t, torch.as_tensor(y), reduction=reduction),
        x,
    )


@given(shape=shapes, seed=st.integers(0, 2**16), reduction=st.sampled_from(REDUCTIONS))
def test_bce_probabilities_match_torch(shape, seed, reduction):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.01, 0.99, size=shape)
    x.reshape(-1)[:2] = [0.0, 1.0]  # exact 0 and 1 hit PyTorch's −100 clamp and 1e-12 floor
    y = rng.uniform(size=shape)
    _compare(
        lambda t: losses.BinaryCrossentropy(reduction=reduction)(y, t),
        lambda t: F.binary_cross_entropy(t, torch.as_tensor(y), reduction=reduction),
        x,
    )


@given(
    shape=shapes,
    seed=st.integers(0, 2**16),
    reduction=st.sampled_from(REDUCTIONS),
    use_pw=st.booleans(),
)
def test_bce_with_logits_matches_torch(shape, seed, reduction, use_pw):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=4, size=shape)
    x.reshape(-1)[0] = 60.0  # far into saturation: still finite and exact
    y = (rng.uniform(size=shape) > 0.5).astype(float)
    pw = rng.uniform(0.2, 3, size=shape[-1]) if use_pw else None
    _compare(
        lambda t: losses.binary_crossentropy(
            y, t, from_logits=True, pos_weight=pw, reduction=reduction
        ),
        lambda t: F.binary_cross_entropy_with_logits(
            t,
            torch.as_tensor(y),
            reduction=reduction,
            pos_weight=None if pw is None else torch.as_tensor(pw),
        ),
        x,
    )


@given(
    shape=class_shapes,
    seed=st.integers(0, 2**16),
    reduction=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    smoothing=st.sampled_from([0.0, 0.1, 0.35]),
    ignore=st.booleans(),
)
def test_sparse_categorical_matches_torch(shape, seed, reduction, weighted, smoothing, ignore):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    z = rng.normal(scale=3, size=shape)
    y = rng.integers(0, c, size=shape[:-1])
    if ignore:
        y.reshape(-1)[1::3] = -100  # row 0 always counts, so the mean is defined
    w = rng.uniform(0.1, 2, size=c) if weighted else None
    loss = losses.SparseCategoricalCrossentropy(
        from_logits=True,
        weight=w,
        label_smoothing=smoothing,
        ignore_index=-100 if ignore else None,
        reduction=reduction,
    )
    _compare(
        lambda t: loss(y, t),
        lambda t: F.cross_entropy(
            _classes_to_axis1(t),
            torch.as_tensor(y),
            weight=None if w is None else torch.as_tensor(w),
            label_smoothing=smoothing,
            reduction=reduction,
        ),
        z,
    )


@given(
    shape=class_shapes,
    seed=st.integers(0, 2**16),
    reduction=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    smoothing=st.sampled_from([0.0, 0.2]),
)
def test_categorical_matches_torch(shape, seed, reduction, weighted, smoothing):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    z = rng.normal(scale=3, size=shape)
    t = rng.dirichlet(np.ones(c), size=shape[:-1])
    w = rng.uniform(0.1, 2, size=c) if weighted else None
    _compare(
        lambda a: losses.categorical_crossentropy(
            t, a, from_logits=True, weight=w, label_smoothing=smoothing, reduction=reduction
        ),
        lambda a: F.cross_entropy(
            _classes_to_axis1(a),
            _classes_to_axis1(torch.as_tensor(t)),
            weight=None if w is None else torch.as_tensor(w),
            label_smoothing=smoothing,
            reduction=reduction,
        ),
        z,
    )


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_activation_output_uses_its_logits(kind):
    rng = np.random.default_rng(0)
    z = rng.normal(scale=30, size=(6, 4))  # saturated: probabilities alone would lose it
    if kind == "softmax":
        y = rng.integers(0, 4, size=6)
        ours = losses.get("sparse_categorical_crossentropy")
        ref = F.cross_entropy(torch.as_tensor(z), torch.as_tensor(y))
        act = ops.softmax
    else:
        y = (rng.uniform(size=(6, 4)) > 0.5).astype(float)
        ours = losses.get("binary_crossentropy")
        ref = F.binary_cross_entropy_with_logits(torch.as_tensor(z), torch.as_tensor(y))
        act = ops.sigmoid
    t = Tensor(z.copy(), requires_grad=True)
    out = ours(y, act(t))
    out.backward()
    tz = to_torch(z)
    ref_fn = F.cross_entropy if kind == "softmax" else F.binary_cross_entropy_with_logits
    ref_fn(tz, torch.as_tensor(y)).backward()
    assert_close(out.data, ref.detach(), rtol=1e-10)
    assert_close(t.grad, tz.grad, rtol=1e-9, atol=1e-14)


def test_probability_inputs_without_logits():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=7)
    y = rng.integers(0, 5, size=7)
    ref = lambda t: F.nll_loss(torch.log(t), torch.as_tensor(y))
    _compare(lambda t: losses.sparse_categorical_crossentropy(y, t), ref, p)
    onehot = np.eye(5)[y]
    _compare(lambda t: losses.CategoricalCrossentropy()(onehot, t), ref, p)


def _fd_check(fn, x, rtol=1e-6, atol=1e-8):
    t = Tensor(x.copy(), requires_grad=True)
    fn(t).backward()
    num = numeric_grad(lambda: fn(Tensor(x)).data, x)
    assert_close(t.grad, num, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_primitives_finite_differences(reduction):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3))
    y = rng.uniform(size=(4, 3))
    a = rng.uniform(size=(4, 3))
    pw = np.array([0.5, 2.0, 1.5])
    prim = [
        lambda t: loss_ops.SquaredError.apply(t, y, reduction=reduction),
        lambda t: loss_ops.AbsoluteError.apply(t, y, reduction=reduction),
        lambda t: loss_ops.BinaryCrossEntropyWithLogits.apply(
            t, y, pos_weight=pw, reduction=reduction
        ),
        lambda t: loss_ops.SoftmaxCrossEntropy.apply(t, a=a, denom=2.5, reduction=reduction),
        lambda t: loss_ops.SoftmaxCrossEntropy.apply(
            t, index=np.array([1, 3, 8, 9]), denom=4, reduction=reduction
        ),
        lambda t: loss_ops.NegativeLogLikelihood.apply(t, a, denom=3.0, reduction=reduction),
    ]
    for fn in prim:
        _fd_check(fn, x)
    _fd_check(
        lambda t: loss_ops.BinaryCrossEntropy.apply(t, y, reduction=reduction),
        rng.uniform(0.1, 0.9, size=(4, 3)),
    )


def test_label_smoothing_binary_and_shapes():
    x = np.array([[0.2], [0.9], [0.6]])
    y = np.array([0, 1, 1])  # (N,) targets against (N, 1) predictions are accepted
    ys = y * 0.8 + 0.1
    want = -np.mean(ys * np.log(x[:, 0]) + (1 - ys) * np.log(1 - x[:, 0]))
    got = losses.BinaryCrossentropy(label_smoothing=0.2)(y, Tensor(x))
    assert got.data == pytest.approx(want, rel=1e-12)
    seq = losses.sparse_categorical_crossentropy(
        np.zeros((2, 3, 1)), Tensor(np.zeros((2, 3, 4))), from_logits=True
    )
    assert seq.data == pytest.approx(np.log(4))


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: losses.binary_crossentropy([0, 1], Tensor(np.array([0.5, 1.5]))),
            r"probabilities in \[0, 1\].*from_logits=True",
        ),
        (
            lambda: losses.sparse_categorical_crossentropy([0], Tensor(np.array([[2.0, -1.0]]))),
            r"probabilities in \[0, 1\].*from_logits=True",
        ),
        (
            lambda: losses.sparse_categorical_crossentropy(np.eye(4)[:3], Tensor(np.zeros((3, 4)))),
            "labels look one-hot: use categorical_crossentropy",
        ),
        (
            lambda: losses.categorical_crossentropy([0, 1, 2], Tensor(np.zeros((3, 4)))),
            "integer class ids: use sparse_categorical_crossentropy",
        ),
        (
            lambda: losses.mse([0, 1, 2], Tensor(np.zeros((3, 4)))),
            r"expected \(3, 4\).*use sparse_categorical_crossentropy",
        ),
        (lambda: losses.mse(np.zeros((2, 3)), Tensor(np.zeros((3, 2)))), r"shape \(2, 3\)"),
        (
            lambda: losses.sparse_categorical_crossentropy([0, 3], Tensor(np.zeros((2, 3)))),
            "class id 3 is out of range for 3 classes",
        ),
        (
            lambda: losses.sparse_categorical_crossentropy([0.5, 1], Tensor(np.zeros((2, 3)))),
            "integer class ids",
        ),
        (
            lambda: losses.sparse_categorical_crossentropy(
                [0, 1], Tensor(np.zeros((2, 3))), weight=[1, 2]
            ),
            r"shape \(3,\)",
        ),
        (lambda: losses.MSE(reduction="avg"), "reduction must be one of"),
        (lambda: losses.get("hinge"), "unknown loss 'hinge'"),
        (lambda: losses.get(3), "must be a name"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_registry_and_configs():
    for name, cls in [
        ("mse", losses.MeanSquaredError),
        ("mean_absolute_error", losses.MAE),
        ("binary_crossentropy", losses.BinaryCrossentropy),
        ("BinaryCrossentropy", losses.BinaryCrossentropy),
        ("categorical_crossentropy", losses.CategoricalCrossentropy),
        ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy),
        ("scce", losses.SparseCategoricalCrossentropy),
    ]:
        assert type(losses.get(name)) is cls
    loss = losses.SparseCategoricalCrossentropy(
        from_logits=True,
        weight=np.array([1.0, 2.0]),
        label_smoothing=0.1,
        ignore_index=-1,
        reduction="sum",
    )
    back = losses.get(json.loads(json.dumps(losses.serialize(loss))))
    assert back.get_config() == loss.get_config()
    z, y = np.array([[0.3, -1.0], [2.0, 0.5]]), np.array([1, -1])
    assert back(y, Tensor(z)).data == loss(y, Tensor(z)).data
    assert losses.get(loss) is loss and losses.get(losses.MSE).reduction == "mean"
    assert losses.get(losses.mse) is losses.mse  # plain callables pass through


def test_all_rows_ignored_gives_nan_and_zero_grad():
    z = Tensor(np.zeros((2, 3)), requires_grad=True)
    out = losses.sparse_categorical_crossentropy([-1, -1], z, from_logits=True, ignore_index=-1)
    out.backward()
    assert np.isnan(out.data) and not z.grad.any()


def test_sparse_crossentropy_of_strided_logits_matches_torch():
    """Logits that are a transposed view: the fused backward must not write into a copy."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 4, 3))
    y = rng.integers(0, 5, size=(3, 4))
    t = Tensor(z.copy(), requires_grad=True)
    losses.sparse_categorical_crossentropy(y, t.transpose(2, 1, 0), from_logits=True).backward()
    tz = to_torch(z)
    logits = tz.permute(2, 1, 0)  # (3, 4, 5): classes last, as splitgrad reads them
    F.cross_entropy(logits.reshape(-1, 5), torch.as_tensor(y).reshape(-1)).backward()
    assert_close(t.grad, tz.grad, rtol=1e-10, atol=1e-12)
