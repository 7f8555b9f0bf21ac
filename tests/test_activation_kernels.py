"""The compiled activation passes (_kernels/activation_jit.py: bias + ReLU, ReLU's mask, the
sigmoid and its gradient) give NumPy's bits: on special values (NaN, ±0, ±inf, tiny and huge
inputs) and on arrays of any shape and layout, through the Sigmoid op and a Dense stack."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import compiled_and_numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitgrad import Tensor, nn
from splitgrad.ops.activations import Sigmoid, sigmoid_array

numba = pytest.importorskip("numba")

SPECIAL = [np.nan, -0.0, 0.0, -1.0, 2.0, np.inf, -np.inf, 1e-30, -1e-30, 88.0, -88.0, 104.0]
SPECIAL += [-104.0, 1e4, -1e4, 0.5, -0.5, 17.0, -17.0, 3e-8, -3e-8, 710.0, -746.0]


def bits(arrays):
    """Each array's bit patterns (so that NaN, −0 and +0 are told apart)."""
    return [a.view(f"u{a.itemsize}") for a in arrays]


def assert_same_bits(got, want):
    for a, b in zip(bits(got), bits(want)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_relu_and_mask_keep_nan_and_signed_zero_as_numpy(dtype):
    # Bit patterns, not values: NaN survives, −0 turns into +0 under ReLU, g·0 keeps g's sign.
    from splitgrad._kernels import activation_jit

    special = np.array([np.nan, -0.0, 0.0, -1.0, 2.0, np.inf, -np.inf, 1e-30], dtype)
    out = np.tile(special, (3, 1))
    b = np.array([0, -0.0, 0, 0.5, -3, 1, 1, -1e-30], dtype)
    for add_bias in (False, True):
        want = out + b if add_bias else out.copy()
        np.maximum(want, 0, out=want)
        got = out.copy()
        activation_jit.bias_relu(got, b, add_bias, True)
        assert_same_bits([got], [want])
    g = np.tile(np.array([-1.0, 1.0, np.nan, -np.inf, 3.0, -0.0, 5.0, -2.0], dtype), 3)
    mask_of = out.reshape(-1)
    with np.errstate(invalid="ignore"):  # inf·0
        want = g * np.greater(mask_of, 0)
    got = np.empty_like(g)
    activation_jit.relu_mask(g, mask_of, got)
    assert_same_bits([got], [want])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_and_its_gradient_keep_numpys_bits_on_special_values(dtype):
    a = np.array(SPECIAL, dtype)
    g = np.array(SPECIAL[::-1], dtype)

    def run():
        with np.errstate(over="ignore", invalid="ignore"):
            z = sigmoid_array(a)
            return [z, Sigmoid.output_grad(g, z), Sigmoid.output_grad(g, a)]

    compiled, numpy = compiled_and_numpy(run)
    assert_same_bits(compiled, numpy)
    assert np.isnan(compiled[0][0]) and compiled[0][5] == 1 and compiled[0][6] == 0


def _through_the_op(a, g):
    """The Sigmoid op forward and backward: z and dz/da · g."""
    x = Tensor(a, requires_grad=True)
    z = x.sigmoid()
    z.backward(g)
    return [z.data, x.grad]


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=7),
    transposed=st.booleans(),
    data=st.data(),
)
def test_sigmoid_op_gives_numpys_bits_for_any_shape_and_layout(dtype, shape, transposed, data):
    values = st.floats(-120, 120, width=np.dtype(dtype).itemsize * 8)
    a = data.draw(hnp.arrays(dtype, shape, elements=values))
    g = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-4, 4, width=a.itemsize * 8)))
    if transposed:  # a non-contiguous view takes the NumPy lines: still the same numbers
        a, g = a.T, g.T
    compiled, numpy = compiled_and_numpy(lambda: _through_the_op(a, g))
    assert_same_bits(compiled, numpy)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("inner", ["relu", "sigmoid", "tanh"])
def test_a_dense_stack_gives_the_same_bits_compiled_and_numpy(dtype, inner):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 6)).astype(dtype)
    model = nn.Sequential(
        [nn.Dense(7, activation=inner), nn.Dense(5, activation=inner), nn.Dense(2)],
        dtype=dtype,
    )
    model.build_from_sample(x)

    def run():
        xt = Tensor(x, requires_grad=True)
        out = model(xt)
        (out * out).sum().backward()
        grads = [xt.grad] + [w.grad for w in model.trainable_weights]
        for w in model.trainable_weights:
            w.grad = None
        return [out.data, *grads]

    compiled, numpy = compiled_and_numpy(run)
    assert_same_bits(compiled, numpy)
