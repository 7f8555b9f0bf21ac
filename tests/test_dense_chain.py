"""Two or more Dense layers in a row run as one DenseChain op in a Sequential (layers/fusion.py,
ops/linalg.py): forward, every weight's gradient and the input's gradient equal PyTorch's
Linear/activation stack in float64, and are the same bits as the layers run one by one
(hypothesis over depth, sizes, activations, bias, leading axes, dtype); training follows the
same trajectory; frozen layers get no gradient; every case the chain does not cover runs the
layers one by one, and wrong input still gets the layer's own error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close, to_torch, without_fusion
from hypothesis import given, settings
from hypothesis import strategies as st

import splitgrad as sg
from splitgrad import nn
from splitgrad.layers import per_example
from splitgrad.ops.activations import Probabilities
from splitgrad.ops.linalg import DenseChain

_TORCH_ACTS = {
    None: lambda z: z,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, -1),
    "elu": torch.nn.functional.elu,
}


def _model(sizes, acts, use_bias=True, dtype="float64", seed=0):
    sg.seed(seed)
    return nn.Sequential(
        [nn.Dense(n, activation=a, use_bias=use_bias, dtype=dtype) for n, a in zip(sizes, acts)]
    )


def _unfused(run):
    return without_fusion("dense_chain", run)


def _run(model, x, r):
    """(output, [each weight's gradient], the input's gradient, the first op) for Σ y·r."""
    model.zero_grad()
    xt = sg.Tensor(x, requires_grad=True)
    y = model(xt)
    op = y._ctx
    while op is not None and not isinstance(op, DenseChain) and op.parents[0] is not None:
        op = op.parents[0]._ctx  # (the last layer's own activation sits above the chain)
    (y * sg.Tensor(r)).sum().backward()
    grads = [None if p.grad is None else p.grad.copy() for p in model.weights]
    return y.numpy().copy(), grads, xt.grad.copy(), type(op)


def _torch(model, x, r):
    xt = to_torch(x)
    h, params = xt, []
    for layer in model.layers:
        w = to_torch(layer.kernel.data)
        b = to_torch(layer.bias.data) if layer.use_bias else None
        params += [w] if b is None else [w, b]
        h = _TORCH_ACTS[layer.activation_name](h @ w + (0 if b is None else b))
    (h * to_torch(r, False)).sum().backward()
    return h.detach().numpy(), [p.grad.numpy() for p in params], xt.grad.numpy()


@pytest.mark.parametrize(
    "sizes, acts, use_bias",
    [
        ((16, 1), ("relu", None), True),  # W5's MLP
        ((7, 5, 3), ("tanh", "sigmoid", "softmax"), True),  # probabilities out
        ((6, 4, 2), (None, "relu", "sigmoid"), False),
        ((5, 5, 5, 5), ("relu", "relu", "tanh", None), True),
    ],
)
def test_chain_matches_torch(sizes, acts, use_bias):
    rng = np.random.default_rng(0)
    model = _model(sizes, acts, use_bias)
    x = rng.standard_normal((9, 4))
    model(x)
    r = rng.standard_normal((9, sizes[-1]))
    y, grads, gx, op = _run(model, x, r)
    assert op is DenseChain
    yt, gt, gxt = _torch(model, x, r)
    assert_close(y, yt, what="forward")
    for ours, theirs in zip(grads, gt):
        assert_close(ours, theirs, what="dW/db")
    assert_close(gx, gxt, what="dx")


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(2, 4),
    width=st.integers(1, 9),
    batch=st.integers(1, 6),
    lead=st.sampled_from([(), (3,)]),
    inner=st.lists(st.sampled_from([None, "relu", "tanh", "sigmoid"]), min_size=3, max_size=3),
    last=st.sampled_from([None, "sigmoid", "softmax", "relu"]),
    use_bias=st.booleans(),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_chain_is_the_same_bits_as_the_layers_one_by_one(
    depth, width, batch, lead, inner, last, use_bias, dtype
):
    rng = np.random.default_rng(depth * 100 + width)
    sizes = [width + k for k in range(depth)]
    acts = [*inner[: depth - 1], last]
    model = _model(sizes, acts, use_bias, dtype)
    x = rng.standard_normal((batch, *lead, 5)).astype(dtype)
    x[0, ...] = 0.0  # pre-activations at exactly 0 (ReLU's gradient there is 0)
    model(x)
    r = rng.standard_normal((batch, *lead, sizes[-1])).astype(dtype)
    y, grads, gx, op = _run(model, x, r)
    assert op is DenseChain
    y1, grads1, gx1, op1 = _unfused(lambda: _run(model, x, r))
    assert op1 is not DenseChain
    np.testing.assert_array_equal(y, y1)
    for a, b in zip(grads, grads1):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(gx, gx1)


def test_sigmoid_output_still_reaches_the_loss_as_probabilities():
    model = _model((4, 1), ("relu", "sigmoid"))
    model(np.ones((2, 3)))  # the first call builds the layers (one by one)
    y = model(np.ones((2, 3)))
    assert isinstance(y, Probabilities) and isinstance(y.logits._ctx, DenseChain)


def test_training_follows_the_layers_one_by_one_bit_for_bit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 80)).astype(np.float32)  # W1 = 80·64 = 5,120: into the buffers
    y = rng.integers(0, 3, 64)

    def fit():
        model = _model((64, 32, 3), ("relu", "tanh", None), dtype="float32", seed=2)
        model.compile(optimizer="adam", loss="CrossEntropyLoss")
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0)
        return history.history["loss"], model.get_weights()

    (loss_f, w_f), (loss_p, w_p) = fit(), _unfused(fit)
    assert loss_f == loss_p
    for a, b in zip(w_f, w_p):
        np.testing.assert_array_equal(a, b)


def test_frozen_layers_get_no_gradient_and_the_rest_match():
    rng = np.random.default_rng(2)
    model = _model((6, 5, 2), ("relu", "relu", None))
    x = rng.standard_normal((4, 3))
    model(x)
    model.layers[0].trainable = False
    model.zero_grad()
    y = model(x)  # the input needs no gradient either: backward stops above layer 0
    assert isinstance(y._ctx, DenseChain)
    (y * y).sum().backward()
    assert model.layers[0].kernel.grad is None and model.layers[0].bias.grad is None
    fused = [model.layers[k].kernel.grad.copy() for k in (1, 2)]

    def one_by_one():
        model.zero_grad()
        (model(x) ** 2).sum().backward()
        return [model.layers[k].kernel.grad.copy() for k in (1, 2)]

    for a, b in zip(fused, _unfused(one_by_one)):
        np.testing.assert_array_equal(a, b)


def _ops(model, x):
    """The graph's op types, from the output down the first inputs."""
    out, node = [], model(x)
    while node._ctx is not None:
        out.append(type(node._ctx).__name__)
        node = node._ctx.parents[0]
    return out


def test_what_the_chain_covers():
    x = np.ones((2, 3))
    # elu ends a chain (its layer is the chain's last); a Dense alone before a Dropout is a
    # Linear; the two after it are a chain.
    model = nn.Sequential(
        [
            nn.Dense(4, activation="relu", dtype="float64"),
            nn.Dense(4, activation="elu", dtype="float64"),
            nn.Dense(4, dtype="float64"),
            nn.Dropout(0.5, dtype="float64"),
            nn.Dense(4, activation="tanh", dtype="float64"),
            nn.Dense(2, dtype="float64"),
        ]
    )
    model.eval()
    assert "DenseChain" not in _ops(model, x)  # the first call builds, one layer at a time
    assert _ops(model, x) == ["DenseChain", "Linear", "ELU", "DenseChain"]


@pytest.mark.parametrize("case", ["one Dense", "dtypes differ", "dp-sgd"])
def test_every_other_case_runs_the_layers_one_by_one(case):
    x = np.ones((2, 3))
    if case == "one Dense":
        model = nn.Sequential([nn.Dense(4, dtype="float64")])
    else:
        second = "float32" if case == "dtypes differ" else "float64"
        model = nn.Sequential([nn.Dense(4, dtype="float64"), nn.Dense(2, dtype=second)])
    model(x)
    if case == "dp-sgd":
        with per_example.recording():
            assert "DenseChain" not in _ops(model, x)
        return
    assert "DenseChain" not in _ops(model, x)


def test_wrong_input_gets_the_first_layers_error():
    model = _model((4, 2), ("relu", None))
    model(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"layer 'dense' \(Dense\) expects 3 features"):
        model(np.ones((2, 5)))
