"""PyTorch habits, written as a PyTorch user writes them, against torch 2.13 in float64:
`sum(dim=, keepdim=)` and the other reductions, `requires_grad_()`, `is_leaf`, `grad_fn`, and
the PyTorch-named losses (`CrossEntropyLoss()(input, target)`), alone and through
`Model.compile(loss=CrossEntropyLoss())`, which calls its loss in Keras's order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitgrad import losses, nn, no_grad, optim
from splitgrad.losses.torch_named import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from splitgrad.tensor import Tensor

torch.set_default_dtype(torch.float64)


def _pair(shape, seed=0):
    x = np.random.default_rng(seed).normal(size=shape)
    return Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)


def _same(ours, theirs, rtol=1e-12, atol=1e-13):
    np.testing.assert_allclose(
        np.asarray(ours.data if isinstance(ours, Tensor) else ours),
        theirs.detach().numpy(),
        rtol=rtol,
        atol=atol,
    )


# ----- reductions under PyTorch's names ----------------------------------------------------
@pytest.mark.parametrize("method", ["sum", "mean"])
@pytest.mark.parametrize("dim, keepdim", [(1, True), (0, False), (-1, None), ((0, 2), True)])
def test_sum_and_mean_take_dim_and_keepdim(method, dim, keepdim):
    t, tt = _pair((3, 4, 5))
    kw = {"dim": dim} if keepdim is None else {"dim": dim, "keepdim": keepdim}
    ours, theirs = getattr(t, method)(**kw), getattr(tt, method)(**kw)
    assert ours.shape == tuple(theirs.shape)
    _same(ours, theirs)
    w = np.random.default_rng(1).normal(size=ours.shape)
    (ours * Tensor(w)).sum().backward()
    (theirs * torch.tensor(w)).sum().backward()
    _same(t.grad, tt.grad)


@pytest.mark.parametrize("method", ["max", "min"])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_and_min_with_dim_return_values_and_indices(method, keepdim):
    t, tt = _pair((4, 6), seed=2)
    values, indices = getattr(t, method)(dim=1, keepdim=keepdim)
    expected = getattr(tt, method)(dim=1, keepdim=keepdim)
    _same(values, expected.values)
    np.testing.assert_array_equal(indices.data, expected.indices.numpy())
    assert getattr(t, method)(dim=1).values is not None  # a named pair, as torch's
    values.sum().backward()
    expected.values.sum().backward()
    _same(t.grad, tt.grad)
    # NumPy/Keras's spelling keeps NumPy's result: the values only.
    assert getattr(t, method)(axis=1).shape == (4,)
    _same(getattr(t, method)(), getattr(tt, method)())


def test_softmax_takes_dim():
    t, tt = _pair((3, 4), seed=3)
    _same(t.softmax(dim=0), tt.softmax(dim=0))
    _same(t.log_softmax(dim=1), tt.log_softmax(dim=1))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t: t.sum(axis=1, dim=1), "axis=1 and dim=1.*give one"),
        (lambda t: t.mean(keepdims=True, keepdim=True), "keepdims=True and keepdim=True"),
        (lambda t: t.softmax(axis=0, dim=1), "axis=0 and dim=1"),
        (lambda t: t.max(keepdim=True), "needs dim=<int>"),
    ],
)
def test_both_spellings_are_a_clear_error(call, match):
    with pytest.raises(TypeError, match=match):
        call(Tensor(np.ones((2, 3))))


# ----- the graph under PyTorch's names ----------------------------------------------------
def test_is_leaf_grad_fn_and_requires_grad_follow_torch():
    x, tx = Tensor(np.ones(3)), torch.ones(3)
    w, tw = _pair((3,))
    cases = [
        (x, tx),  # a constant
        (w, tw),  # a parameter
        (x * 2, tx * 2),  # an op on constants: no gradient, a leaf
        (w * 2, tw * 2),  # an op on a parameter: not a leaf
        (w.detach(), tw.detach()),
    ]
    with no_grad(), torch.no_grad():
        cases.append((w * 2, tw * 2))
    for ours, theirs in cases:
        assert ours.is_leaf == theirs.is_leaf
        assert ours.requires_grad == theirs.requires_grad
        assert (ours.grad_fn is None) == (theirs.grad_fn is None)
    y = (w @ Tensor(np.ones((3, 2)))).relu()
    assert y.grad_fn.name() in repr(y.grad_fn) and y.grad_fn.name() != ""
    assert type(y.grad_fn).__name__ == y.grad_fn.name()

    # requires_grad_() marks a leaf in place and returns it; gradients then flow to it.
    z = Tensor(np.arange(3.0))
    assert z.requires_grad_() is z and z.requires_grad and z.is_leaf
    (z * z).sum().backward()
    np.testing.assert_array_equal(z.grad, 2 * np.arange(3.0))
    assert z.requires_grad_(False) is z and not z.requires_grad
    with pytest.raises(RuntimeError, match="only a leaf"):
        (w * 2).requires_grad_(False)
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3)).requires_grad_()


# ----- PyTorch-named losses against torch.nn ------------------------------------------------
def _targets(kind, shape, rng):
    if kind == "ids":
        return rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    if kind == "probs":
        p = rng.random(shape)
        return p / p.sum(axis=1, keepdims=True)
    if kind == "binary":
        return rng.integers(0, 2, size=shape).astype(np.float64)
    return rng.normal(size=shape)


LOSSES = [
    ("ce", CrossEntropyLoss, torch.nn.CrossEntropyLoss, {}, (6, 4), "ids", None),
    (
        "ce_weight_smooth",
        CrossEntropyLoss,
        torch.nn.CrossEntropyLoss,
        {"weight": [0.5, 1.0, 2.0, 1.5], "label_smoothing": 0.1},
        (6, 4),
        "ids",
        None,
    ),
    ("ce_axis1_3d", CrossEntropyLoss, torch.nn.CrossEntropyLoss, {}, (3, 4, 5), "ids", None),
    (
        "ce_ignore",
        CrossEntropyLoss,
        torch.nn.CrossEntropyLoss,
        {"ignore_index": 1},
        (8, 3),
        "ids",
        None,
    ),
    ("ce_probs", CrossEntropyLoss, torch.nn.CrossEntropyLoss, {}, (5, 4), "probs", None),
    (
        "ce_sum",
        CrossEntropyLoss,
        torch.nn.CrossEntropyLoss,
        {"reduction": "sum"},
        (5, 4),
        "ids",
        None,
    ),
    ("nll", NLLLoss, torch.nn.NLLLoss, {"weight": [1.0, 2.0, 0.5]}, (6, 3), "ids", "log_softmax"),
    ("mse", MSELoss, torch.nn.MSELoss, {}, (4, 3), "real", None),
    ("l1", L1Loss, torch.nn.L1Loss, {"reduction": "sum"}, (4, 3), "real", None),
    ("bce", BCELoss, torch.nn.BCELoss, {}, (6, 2), "binary", "sigmoid"),
    (
        "bce_logits_pos_weight",
        BCEWithLogitsLoss,
        torch.nn.BCEWithLogitsLoss,
        {"pos_weight": [2.0, 0.5]},
        (6, 2),
        "binary",
        None,
    ),
    ("huber", HuberLoss, torch.nn.HuberLoss, {"delta": 0.7}, (5, 3), "real", None),
    ("smooth_l1", SmoothL1Loss, torch.nn.SmoothL1Loss, {"beta": 0.5}, (5, 3), "real", None),
]


def _torch_kwargs(kw):
    return {k: torch.tensor(v) if k in ("weight", "pos_weight") else v for k, v in kw.items()}


@pytest.mark.parametrize("case", LOSSES, ids=[c[0] for c in LOSSES])
def test_torch_named_losses_match_torch_nn(case):
    _, ours_cls, torch_cls, kw, shape, kind, squash = case
    rng = np.random.default_rng(4)
    x = rng.normal(size=shape) * 2
    target = _targets(kind, shape, rng)
    t_in = torch.tensor(x, requires_grad=True)
    ours_in = Tensor(x.copy(), requires_grad=True)
    if squash == "sigmoid":
        pred_t, pred = torch.sigmoid(t_in), ours_in.sigmoid()
    elif squash == "log_softmax":
        pred_t, pred = torch.log_softmax(t_in, dim=1), ours_in.log_softmax(dim=1)
    else:
        pred_t, pred = t_in, ours_in
    theirs = torch_cls(**_torch_kwargs(kw))(pred_t, torch.tensor(target))
    ours = ours_cls(**kw)(pred, target)  # PyTorch's order: input, target
    _same(ours, theirs, rtol=1e-11, atol=1e-12)
    theirs.backward()
    ours.backward()
    _same(ours_in.grad, t_in.grad, rtol=1e-10, atol=1e-12)

    # The Keras-order twin that compile uses gives the same value.
    twin = losses.get(ours_cls(**kw))
    assert isinstance(twin, losses.Loss) and type(twin).__name__ == ours_cls.__name__
    _same(twin(target, pred), theirs, rtol=1e-11, atol=1e-12)


def test_swapped_arguments_name_the_order():
    logits = Tensor(np.random.default_rng(5).normal(size=(4, 3)), requires_grad=True)
    ids = np.array([0, 2, 1, 1])
    with pytest.raises(ValueError, match=r"CrossEntropyLoss takes \(input, target\) as in PyTorch"):
        CrossEntropyLoss()(ids, logits)
    twin = losses.get(CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"takes \(y_true, y_pred\) as in Keras.*Swap them"):
        twin(logits, ids)
    target = Tensor(np.ones((4, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"MSELoss takes \(input, target\)"):
        MSELoss()(np.zeros((4, 3)), target)


def test_twin_settings_names_and_sample_weights():
    twin = losses.get("CrossEntropyLoss")
    assert type(twin).__name__ == "CrossEntropyLoss" and twin.ignore_index == -100
    assert losses.get(BCEWithLogitsLoss).from_logits  # a class works too; settings read through
    restored = losses.get(losses.serialize(losses.get(CrossEntropyLoss(label_smoothing=0.2))))
    assert restored.label_smoothing == 0.2 and type(restored).__name__ == "CrossEntropyLoss"
    per_row = type(twin).from_config({**twin.get_config(), "reduction": "none"})
    rng = np.random.default_rng(6)
    z, y, w = rng.normal(size=(5, 3)), rng.integers(0, 3, 5), rng.random(5)
    rows = per_row(y, Tensor(z)).data
    np.testing.assert_allclose(twin(y, Tensor(z), sample_weight=w).data, (rows * w).sum() / 5)


# ----- Model.compile with a PyTorch-named loss ---------------------------------------------
def test_compile_with_cross_entropy_loss_trains_like_torch_and_saves(tmp_path):
    from splitgrad.checkpoint import load_model

    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(24, 5)), rng.integers(0, 3, 24)
    model = nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3)], dtype="float64")
    model.build_from_sample(x[:1])
    start = [w.copy() for w in model.get_weights()]
    model.compile(
        optimizer=optim.SGD(learning_rate=0.1), loss=CrossEntropyLoss(label_smoothing=0.1)
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    tw = [torch.tensor(w, requires_grad=True) for w in start]
    topt = torch.optim.SGD(tw, lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for i in range(0, 24, 8):
        topt.zero_grad()
        out = torch.relu(torch.tensor(x[i : i + 8]) @ tw[0] + tw[1]) @ tw[2] + tw[3]
        loss_fn(out, torch.tensor(y[i : i + 8])).backward()
        topt.step()
    for ours, theirs in zip(model.get_weights(), tw):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)

    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded.loss).__name__ == "CrossEntropyLoss"
    assert loaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
