"""Finite-difference gradient checks of every primitive (float64), independent of PyTorch.

For each op we compare the engine's gradient of Σ(G ⊙ op(inputs)), with a fixed random G, to
central differences from tests/helpers.numeric_grad. Inputs are drawn away from kinks (0 for
relu/abs, ties for max/min, the bounds of clip) so the difference quotient is meaningful.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, numeric_grad
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitgrad import ops
from splitgrad.tensor import Tensor, no_grad

seeds = st.integers(0, 2**32 - 1)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3)


def gradcheck(fn, arrays, seed=0, rtol=1e-5, atol=1e-7):
    """Analytic gradient of Σ(G·fn(*inputs)) vs central differences, for every input."""
    tensors = [Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)

    def scalar():
        with no_grad():
            return float(np.sum(fn(*tensors).data * upstream))

    for i, t in enumerate(tensors):
        # numeric_grad perturbs t.data in place, which `scalar` reads through the tensor.
        want = numeric_grad(scalar, t.data)
        got = np.zeros(t.shape) if t.grad is None else t.grad
        assert_close(got, want, rtol, atol, f"input {i}")


def rng_for(seed):
    return np.random.default_rng(seed)


def away_from_zero(rng, shape, lo=0.2, hi=2.0):
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def distinct(rng, shape):
    """Values at least 0.1 apart, so no two elements tie (max/min have kinks at ties)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.1 - n * 0.05 + rng.uniform(-0.02, 0.02, n)).reshape(shape)


# ----- elementwise --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
@given(shapes=pairs, seed=seeds)
def test_arithmetic(name, shapes, seed):
    rng = rng_for(seed)
    sa, sb = shapes.input_shapes
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    if name == "div":
        b = away_from_zero(rng, sb)
    if name == "pow":
        a, b = rng.uniform(0.3, 2.0, sa), rng.uniform(-2.0, 2.0, sb)
    fn = {"add": ops.add, "sub": ops.sub, "mul": ops.mul, "div": ops.div, "pow": ops.pow}[name]
    gradcheck(fn, [a, b], seed)


@given(shape=shapes, seed=seeds, exponent=st.sampled_from([2, 3, -1, 0.5, -1.5]))
def test_pow_scalar_exponent_and_base(shape, seed, exponent):
    a = rng_for(seed).uniform(0.3, 2.0, shape)
    gradcheck(lambda x: x**exponent, [a], seed)
    gradcheck(lambda x: 1.7**x, [a], seed)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(shapes=pairs, seed=seeds)
def test_maximum_minimum(name, shapes, seed):
    rng = rng_for(seed)
    sa, sb = shapes.input_shapes
    # a on the grid k/2 + 1/4 and b on the grid k/2: every pair differs by at least 1/4, so no
    # broadcast pair ties (the kink) whatever the shapes.
    a = rng.integers(-4, 4, sa) / 2 + 0.25
    b = rng.integers(-4, 4, sb) / 2 + 0.0
    gradcheck(getattr(ops, name), [a, b], seed)


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
def test_where(shapes, seed):
    rng = rng_for(seed)
    sc, sa, sb = shapes.input_shapes
    cond = np.asarray(rng.random(sc) > 0.5)
    gradcheck(
        lambda x, y: ops.where(cond, x, y), [rng.standard_normal(sa), rng.standard_normal(sb)], seed
    )


UNARY = {
    "neg": (ops.neg, "any"),
    "exp": (ops.exp, "any"),
    "log": (ops.log, "positive"),
    "sqrt": (ops.sqrt, "positive"),
    "abs": (ops.abs, "nonzero"),
    "relu": (ops.relu, "nonzero"),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.1), "nonzero"),
    "elu": (lambda x: ops.elu(x, 0.7), "nonzero"),
    "gelu": (ops.gelu, "any"),
    "gelu_tanh": (lambda x: ops.gelu(x, "tanh"), "any"),
    "sigmoid": (ops.sigmoid, "any"),
    "tanh": (ops.tanh, "any"),
    "softplus": (ops.softplus, "any"),
    "clip": (lambda x: ops.clip(x, -1.05, 1.05), "nonzero"),  # |x| ∈ [0.2, 2] misses ±1.05 mostly
    "cast": (lambda x: x.astype(np.float64) * 1.0, "any"),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=shapes, seed=seeds)
def test_unary(name, shape, seed):
    fn, domain = UNARY[name]
    rng = rng_for(seed)
    if domain == "positive":
        a = rng.uniform(0.2, 3.0, shape)
    elif domain == "nonzero":
        a = away_from_zero(rng, shape)
        if name == "clip":
            a = np.where(np.abs(np.abs(a) - 1.05) < 0.01, a + 0.05, a)
    else:
        a = rng.standard_normal(shape) * 2
    gradcheck(fn, [a], seed)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), seed=seeds, data=st.data())
def test_softmax(name, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    gradcheck(
        lambda x: getattr(ops, name)(x, axis=axis), [rng_for(seed).standard_normal(shape)], seed
    )


# ----- linear algebra ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shapes_",
    [
        ((3,), (3,)),
        ((2, 3), (3,)),
        ((3,), (3, 2)),
        ((2, 3), (3, 4)),
        ((2, 2, 3), (2, 3, 2)),
        ((2, 1, 2, 3), (3, 3, 2)),
        ((3,), (2, 3, 2)),
        ((2, 2, 3), (3,)),
    ],
)
def test_matmul(shapes_):
    rng = rng_for(len(shapes_[0]) * 10 + len(shapes_[1]))
    gradcheck(ops.matmul, [rng.standard_normal(s) for s in shapes_])


@pytest.mark.parametrize("xshape", [(4, 3), (2, 2, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(xshape, bias):
    rng = rng_for(7)
    arrays = [rng.standard_normal(xshape), rng.standard_normal((3, 2))]
    if bias:
        arrays.append(rng.standard_normal(2))
    gradcheck(ops.linear, arrays)


# ----- reductions ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@given(shape=shapes, seed=seeds, keepdims=st.booleans(), data=st.data())
def test_reductions(name, shape, seed, keepdims, data):
    nd = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-nd, nd - 1)) if nd else st.none())
    if nd > 1 and data.draw(st.booleans()):
        axis = tuple(data.draw(st.lists(st.integers(0, nd - 1), unique=True, max_size=nd)))
    gradcheck(
        lambda x: getattr(ops, name)(x, axis=axis, keepdims=keepdims),
        [distinct(rng_for(seed), shape)],
        seed,
    )


# ----- shape ops -----------------------------------------------------------------------------
@given(shape=shapes, seed=seeds, data=st.data())
def test_reshape_transpose_broadcast(shape, seed, data):
    a = rng_for(seed).standard_normal(shape)
    gradcheck(lambda x: x.reshape(-1), [a], seed)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    gradcheck(lambda x: x.transpose(tuple(p - len(shape) for p in perm)), [a], seed)
    gradcheck(lambda x: ops.broadcast_to(x, (2,) + shape), [a], seed)


@pytest.mark.parametrize(
    "index",
    [
        (slice(None), 1),
        (slice(None, None, -1),),
        (0, slice(1, None)),
        (Ellipsis, None, 2),
        (np.array([0, 2, 0, 0]),),
        (slice(None), np.array([2, 2, 1])),
        (np.array([1, 1]), np.array([0, 0])),
        (np.array([True, False, True]),),
        (np.array([[True, False, True, False]] * 3),),
    ],
)
def test_getitem(index):
    gradcheck(lambda x: x[index], [rng_for(9).standard_normal((3, 4))])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_stack(axis):
    rng = rng_for(11)
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))]
    gradcheck(lambda *xs: ops.stack(xs, axis=axis), arrays)
    gradcheck(lambda *xs: ops.concatenate(xs, axis=axis), arrays)
