"""Every primitive's forward and gradient against PyTorch (float64) on hypothesis-drawn shapes.

Each check feeds a random upstream gradient to `backward(grad)` (a plain `.sum()` would hide
errors that only show with unequal output weights) and compares the output and every input's
gradient with torch's. Shapes are small and include broadcasting; array values come from a
NumPy generator seeded by hypothesis, which is much faster than drawing every element.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, to_torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitgrad import ops
from splitgrad.tensor import Tensor

seeds = st.integers(0, 2**32 - 1)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3)


def check(ours, theirs, arrays, seed=0, rtol=1e-7, atol=1e-9):
    """Run `ours` on splitgrad tensors and `theirs` on torch tensors; compare value and grads."""
    mine = [Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    ref = [to_torch(a) for a in arrays]
    out = ours(*mine)
    expected = theirs(*ref)
    assert out.shape == tuple(expected.shape), (out.shape, tuple(expected.shape))
    assert out.dtype == np.float64
    assert_close(out.data, expected, rtol, atol, "forward")
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    for i, (t, r) in enumerate(zip(mine, ref)):
        want = np.zeros(t.shape) if r.grad is None else r.grad.numpy()
        got = np.zeros(t.shape) if t.grad is None else t.grad
        assert got.shape == t.shape, f"grad {i} shape {got.shape} != {t.shape}"
        assert_close(got, want, rtol, atol, f"grad of input {i}")


def randn(seed, *shapes_):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes_]


def away_from_zero(seed, shape, lo=0.5, hi=2.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


# ----- elementwise binary ops with broadcasting ---------------------------------------------
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "maximum": (ops.maximum, torch.maximum),
    "minimum": (ops.minimum, torch.minimum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=pairs, seed=seeds)
def test_binary_broadcasting(name, shapes, seed):
    ours, theirs = BINARY[name]
    check(ours, theirs, randn(seed, *shapes.input_shapes), seed)


@given(shapes=pairs, seed=seeds)
def test_div(shapes, seed):
    a, _ = randn(seed, *shapes.input_shapes)
    b = away_from_zero(seed + 1, shapes.input_shapes[1])
    check(lambda x, y: x / y, lambda x, y: x / y, [a, b], seed)


@given(shapes=pairs, seed=seeds)
def test_pow_tensor_exponent(shapes, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.3, 2.0, shapes.input_shapes[0])
    b = rng.uniform(-2.0, 2.0, shapes.input_shapes[1])
    check(lambda x, y: x**y, torch.pow, [a, b], seed)


@given(shape=shapes, seed=seeds, exponent=st.sampled_from([0, 1, 2, 3, -1, 0.5, -1.5, 2.5]))
def test_pow_scalar_exponent(shape, seed, exponent):
    # Integer exponents are checked on bases of both signs; fractional ones need a > 0.
    a = away_from_zero(seed, shape, 0.3, 2.0)
    if exponent != int(exponent):
        a = np.abs(a)
    check(lambda x: x**exponent, lambda x: x**exponent, [a], seed)


@given(shape=shapes, seed=seeds, base=st.sampled_from([0.5, 2.0, np.e]))
def test_scalar_base_pow_and_reflected_ops(shape, seed, base):
    (a,) = randn(seed, shape)
    check(lambda x: base**x, lambda x: torch.pow(base, x), [a], seed)
    check(lambda x: 3.0 - x * 2.0 + 1.5, lambda x: 3.0 - x * 2.0 + 1.5, [a], seed)
    b = away_from_zero(seed, shape)
    check(lambda x: 2.0 / x, lambda x: 2.0 / x, [b], seed)


def test_pow_at_zero_base_matches_torch():
    # The plain formulas give 0 * inf = nan here; torch defines these gradients as finite.
    a = np.array([0.0, 0.0, 0.0, 1.5])
    b = np.array([0.0, 2.0, 0.5, 0.0])
    check(lambda x, y: x**y, torch.pow, [a, b])
    check(lambda x: x**0, lambda x: x**0, [a])


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
def test_where(shapes, seed):
    cshape, ashape, bshape = shapes.input_shapes
    cond = np.asarray(np.random.default_rng(seed).random(cshape) > 0.5)
    a, b = randn(seed, ashape, bshape)
    check(
        lambda x, y: ops.where(cond, x, y),
        lambda x, y: torch.where(torch.as_tensor(np.asarray(cond)), x, y),
        [a, b],
        seed,
    )


@given(shape=shapes, seed=seeds)
def test_where_with_a_scalar_branch(shape, seed):
    (a,) = randn(seed, shape)
    cond = a > 0
    check(
        lambda x: ops.where(cond, x, 0.0),
        lambda x: torch.where(torch.as_tensor(np.asarray(cond)), x, torch.zeros(())),
        [a],
        seed,
    )


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(shapes=pairs, seed=seeds)
def test_maximum_minimum_ties_split_evenly(name, shapes, seed):
    # Small integers make ties common; torch gives each tied input half the gradient.
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(-1, 2, s).astype(np.float64) for s in shapes.input_shapes)
    check(*BINARY[name], [a, b], seed)


# ----- unary maths and activations ------------------------------------------------------------
UNARY = {
    "neg": (lambda x: -x, lambda x: -x, None),
    "exp": (ops.exp, torch.exp, None),
    "log": (ops.log, torch.log, "positive"),
    "sqrt": (ops.sqrt, torch.sqrt, "positive"),
    "abs": (ops.abs, torch.abs, None),
    "relu": (ops.relu, torch.relu, None),
    "leaky_relu": (ops.leaky_relu, F.leaky_relu, None),
    "leaky_relu_0.2": (lambda x: ops.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2), None),
    "elu": (ops.elu, F.elu, None),
    "elu_0.5": (lambda x: ops.elu(x, 0.5), lambda x: F.elu(x, 0.5), None),
    "gelu": (ops.gelu, F.gelu, None),
    "gelu_tanh": (lambda x: ops.gelu(x, "tanh"), lambda x: F.gelu(x, approximate="tanh"), None),
    "sigmoid": (ops.sigmoid, torch.sigmoid, None),
    "tanh": (ops.tanh, torch.tanh, None),
    "softplus": (ops.softplus, F.softplus, None),
    "clip": (lambda x: ops.clip(x, -0.5, 0.7), lambda x: torch.clamp(x, -0.5, 0.7), None),
    "clip_lo": (lambda x: ops.clip(x, lo=0.1), lambda x: torch.clamp(x, min=0.1), None),
    "clip_hi": (lambda x: ops.clip(x, hi=0.1), lambda x: torch.clamp(x, max=0.1), None),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=shapes, seed=seeds, scale=st.sampled_from([1.0, 3.0]))
def test_unary(name, shape, seed, scale):
    ours, theirs, domain = UNARY[name]
    (a,) = randn(seed, shape)
    a = a * scale
    if domain == "positive":
        a = np.abs(a) + 0.1
    check(ours, theirs, [a], seed)


@pytest.mark.parametrize("name", ["relu", "abs", "leaky_relu", "elu", "clip"])
def test_kinks_follow_torch(name):
    # At the kink both libraries pick one subgradient; these are the values torch picks.
    a = np.array([-0.5, 0.0, 0.7, -0.0, 1.0])
    check(UNARY[name][0], UNARY[name][1], [a], 1)


def test_extreme_inputs_stay_finite():
    a = np.array([-800.0, -50.0, 0.0, 50.0, 800.0])
    for name in ("sigmoid", "tanh", "softplus", "relu", "elu", "gelu"):
        check(UNARY[name][0], UNARY[name][1], [a], 2)
    out = ops.relu(Tensor(np.array([-np.inf, np.inf])))
    np.testing.assert_array_equal(out.data, [0.0, np.inf])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_takes_the_stable_branch_for_each_sign(dtype):
    # 1 / (1 + e^−a) for a ≥ 0 and e^a / (1 + e^a) for a < 0, in the input's dtype: tiny
    # values keep their precision, inf and −inf give 1 and 0, a NaN stays NaN.
    from splitgrad.ops.activations import sigmoid_array

    a = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -30.0, -80.0, 3.5, -3.5], dtype)
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(a))
        want = np.where(a >= 0, dtype(1) / (1 + e), e / (1 + e))
    got = sigmoid_array(a)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want.astype(dtype))
    assert sigmoid_array(dtype(-15.0)) > 0 and sigmoid_array(np.array([2])).dtype == np.float64


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@given(shape=nonscalar_shapes, seed=seeds, data=st.data())
def test_softmax_any_axis(fn, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    (a,) = randn(seed, shape)
    a = a * 5  # exercises the max subtraction
    ours = getattr(ops, fn)
    theirs = getattr(torch, fn)
    check(lambda x: ours(x, axis=axis), lambda x: theirs(x, dim=axis), [a], seed)


@given(shape=shapes, seed=seeds)
def test_cast_roundtrip(shape, seed):
    # float64 -> float32 -> float64: the gradient comes back in the leaf's dtype.
    (a,) = randn(seed, shape)
    check(
        lambda x: x.astype(np.float32).astype(np.float64) * 2.0,
        lambda x: x.to(torch.float32).to(torch.float64) * 2.0,
        [a],
        seed,
        rtol=1e-6,
        atol=1e-6,
    )


# ----- linear algebra -------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    ba, bb = batch.input_shapes
    kind = draw(st.sampled_from(["1-1", "2-1", "1-2", "2-2", "N-N", "1-N", "N-1"]))
    return {
        "1-1": ((k,), (k,)),
        "2-1": ((n, k), (k,)),
        "1-2": ((k,), (k, m)),
        "2-2": ((n, k), (k, m)),
        "N-N": (ba + (n, k), bb + (k, m)),
        "1-N": ((k,), bb + (k, m)),
        "N-1": (ba + (n, k), (k,)),
    }[kind]


@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul(shapes, seed):
    check(lambda a, b: a @ b, torch.matmul, randn(seed, *shapes), seed)


def test_matmul_broadcast_batch():
    check(lambda a, b: a @ b, torch.matmul, randn(3, (2, 1, 3, 4), (5, 4, 2)), 3)


@given(
    seed=seeds,
    lead=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4),
    io=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    bias=st.booleans(),
)
def test_linear(seed, lead, io, bias):
    shapes_ = [lead + (io[0],), io] + ([(io[1],)] if bias else [])
    arrays = randn(seed, *shapes_)
    if bias:
        check(ops.linear, lambda x, w, b: x @ w + b, arrays, seed)
    else:
        check(ops.linear, lambda x, w: x @ w, arrays, seed)


# ----- reductions -------------------------------------------------------------------------------
@st.composite
def reduction_case(draw):
    shape = draw(shapes)
    nd = len(shape)
    axis = draw(
        st.one_of(
            st.none(),
            st.integers(-nd, nd - 1) if nd else st.none(),
            st.lists(st.integers(0, nd - 1), unique=True, max_size=nd).map(tuple)
            if nd
            else st.none(),
        )
    )
    return shape, axis, draw(st.booleans())


def torch_dims(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else axis


REDUCTIONS = {
    "sum": (ops.sum, torch.sum),
    "mean": (ops.mean, torch.mean),
    "max": (ops.max, torch.amax),
    "min": (ops.min, torch.amin),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(case=reduction_case(), seed=seeds, ties=st.booleans())
def test_reductions(name, case, seed, ties):
    shape, axis, keepdims = case
    ours, theirs = REDUCTIONS[name]
    (a,) = randn(seed, shape)
    if ties:  # amax/amin split the gradient evenly among tied extremes
        a = np.round(a)
    dims = torch_dims(axis, len(shape))

    def ref(x):
        # axis=() reduces nothing, as in NumPy; torch reads dim=() as "all dims".
        return theirs(x, dim=dims, keepdim=keepdims) if dims else x * 1.0

    check(lambda x: ours(x, axis=axis, keepdims=keepdims), ref, [a], seed)


def test_tensor_reduction_methods():
    (a,) = randn(4, (3, 4))
    check(
        lambda x: x.sum(axis=1) + x.mean(axis=0).sum() + x.max() - x.min(axis=-1, keepdims=True),
        lambda x: x.sum(1) + x.mean(0).sum() + x.amax() - x.amin(-1, keepdim=True),
        [a],
        4,
    )


# ----- shape ops ---------------------------------------------------------------------------------
@given(shape=shapes, seed=seeds, data=st.data())
def test_reshape(shape, seed, data):
    size = int(np.prod(shape))
    target = data.draw(
        st.sampled_from(
            [(-1,), (size, 1), (1, -1), tuple(reversed(shape)), ()]
            if size == 1
            else [(-1,), (size, 1), (1, -1), tuple(reversed(shape))]
        )
    )
    check(lambda x: x.reshape(target), lambda x: x.reshape(target), randn(seed, shape), seed)


@given(shape=shapes, seed=seeds, data=st.data())
def test_transpose(shape, seed, data):
    nd = len(shape)
    perm = data.draw(st.permutations(range(nd)))
    # Some axes negative: the inverse permutation must be taken after normalising them.
    signed = tuple(p - nd if data.draw(st.booleans()) else p for p in perm)
    check(lambda x: x.transpose(signed), lambda x: x.permute(tuple(perm)), randn(seed, shape), seed)
    check(lambda x: x.T, lambda x: x.permute(tuple(reversed(range(nd)))), randn(seed, shape), seed)


@given(target=shapes, seed=seeds, data=st.data())
def test_broadcast_to(target, seed, data):
    # A source that broadcasts *to* target: drop some leading dims, squash some sides to 1.
    kept = target[data.draw(st.integers(0, len(target))) :]
    source = tuple(1 if data.draw(st.booleans()) else n for n in kept)
    check(
        lambda x: ops.broadcast_to(x, target),
        lambda x: x.broadcast_to(target),
        randn(seed, source),
        seed,
    )


@st.composite
def basic_index(draw, shape):
    items = []
    for n in shape[: draw(st.integers(0, len(shape)))]:
        kind = draw(st.sampled_from(["int", "slice", "all"]))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-n, n)))
            stop = draw(st.one_of(st.none(), st.integers(-n, n)))
            step = draw(st.sampled_from([None, 1, 2, -1, -2]))
            items.append(slice(start, stop, step))
        else:
            items.append(slice(None))
    if draw(st.booleans()):
        items.insert(draw(st.integers(0, len(items))), None)
    if draw(st.booleans()):
        items.append(Ellipsis)
    return tuple(items)


def gather_like_numpy(x, shape, index):
    """torch reference for any NumPy index (torch lacks negative steps): gather flat positions."""
    flat = np.arange(int(np.prod(shape))).reshape(shape)[index]
    return x.reshape(-1)[torch.as_tensor(np.array(flat))]


@given(shape=nonscalar_shapes, seed=seeds, data=st.data())
def test_getitem_basic(shape, seed, data):
    index = data.draw(basic_index(shape))
    check(
        lambda x: x[index], lambda x: gather_like_numpy(x, shape, index), randn(seed, shape), seed
    )


@given(shape=nonscalar_shapes, seed=seeds, data=st.data())
def test_getitem_integer_array_repeats_scatter_add(shape, seed, data):
    n = shape[0]
    idx = np.array(data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6)))
    check(lambda x: x[idx], lambda x: x[torch.from_numpy(idx)], randn(seed, shape), seed)
    if len(shape) > 1:
        m = shape[1]
        idx2 = np.array(data.draw(st.lists(st.integers(0, m - 1), min_size=1, max_size=5)))
        check(
            lambda x: x[:, idx2], lambda x: x[:, torch.from_numpy(idx2)], randn(seed, shape), seed
        )
        # Paired index arrays pick elements; repeats among the pairs must add up.
        rows = np.resize(idx, 4)
        cols = np.resize(idx2, 4)
        check(
            lambda x: x[rows, cols],
            lambda x: x[torch.from_numpy(rows), torch.from_numpy(cols)],
            randn(seed, shape),
            seed,
        )


def test_getitem_list_and_tensor_indices():
    (a,) = randn(5, (4, 3))
    check(lambda x: x[[0, 0, 3]], lambda x: x[[0, 0, 3]], [a], 5)
    idx = Tensor(np.array([2, 2, 1]))
    check(lambda x: x[idx, 1:], lambda x: x[torch.tensor([2, 2, 1]), 1:], [a], 5)


@given(shape=nonscalar_shapes, seed=seeds, full=st.booleans())
def test_getitem_boolean_mask(shape, seed, full):
    (a,) = randn(seed, shape)
    mask = np.random.default_rng(seed + 1).random(shape if full else shape[:1]) > 0.4
    check(lambda x: x[mask], lambda x: x[torch.from_numpy(mask)], [a], seed)


@pytest.mark.parametrize("fn", ["concatenate", "stack"])
@given(shape=nonscalar_shapes, seed=seeds, count=st.integers(1, 3), data=st.data())
def test_concatenate_stack(fn, shape, seed, count, data):
    nd = len(shape) + (fn == "stack")
    axis = data.draw(st.integers(-nd, nd - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))
    ax = axis % len(shape) if fn == "concatenate" else None
    shapes_ = [shape[:ax] + (s,) + shape[ax + 1 :] if ax is not None else shape for s in sizes]
    ours = getattr(ops, fn)
    theirs = torch.cat if fn == "concatenate" else torch.stack
    check(
        lambda *xs: ours(list(xs), axis=axis),
        lambda *xs: theirs(list(xs), dim=axis),
        randn(seed, *shapes_),
        seed,
    )


# ----- composites: several ops sharing inputs ----------------------------------------------------
@given(seed=seeds)
def test_small_network_end_to_end(seed):
    # A two-layer net with a log-softmax loss: every gradient path through the engine at once.
    arrays = randn(seed, (5, 4), (4, 3), (3,), (3, 2))

    def ours(x, w, b, v):
        h = ops.tanh(ops.linear(x, w, b))
        logits = ops.matmul(h * h + h, v)
        return -(ops.log_softmax(logits, axis=-1)[np.arange(5), np.array([0, 1, 1, 0, 1])]).mean()

    def theirs(x, w, b, v):
        h = torch.tanh(x @ w + b)
        logits = (h * h + h) @ v
        return -(
            torch.log_softmax(logits, -1)[torch.arange(5), torch.tensor([0, 1, 1, 0, 1])]
        ).mean()

    check(ours, theirs, arrays, seed)
