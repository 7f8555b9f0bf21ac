"""The autograd engine itself: graph traversal, gradient bookkeeping, errors and dtypes."""

from __future__ import annotations

import sys
import threading
from typing import ClassVar

import numpy as np
import pytest

from splitgrad import ops
from splitgrad.tensor import Function, Tensor, _topological_order, is_grad_enabled, no_grad, tensor


def leaf(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


# ----- graph traversal -----------------------------------------------------------------------
def test_deep_chain_backpropagates_without_recursion():
    # 10,000 ops deep (an unrolled RNN is this deep): a recursive sort would overflow the stack.
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    assert sys.getrecursionlimit() < 10_000 * 2
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001**10_000), rtol=1e-9)


def test_deep_chain_with_a_skip_connection_at_every_step():
    # y_{k+1} = 0.001·y_k + y_k: two edges per step, so the order (not just reachability) matters.
    x = leaf([1.0])
    y = x
    for _ in range(2_000):
        y = y * 0.001 + y
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad, [1.001**2_000], rtol=1e-9)


def test_order_puts_every_consumer_before_its_inputs():
    # A parent reached first through a short path and again through a longer one must still be
    # processed after the longer path (a classic bug in iterative DFS with early marking).
    x = leaf([2.0])
    a = x * 3.0
    b = a * a
    out = ops.add(a, b)  # out's parents: a first, b (which also depends on a) second
    order = _topological_order(out)
    pos = {id(n): i for i, n in enumerate(order)}
    assert order[-1] is out and len(order) == 4
    for node in order:
        if node._ctx is None:
            continue
        for parent, need in zip(node._ctx.parents, node._ctx.needs):
            if need:
                assert pos[id(parent)] < pos[id(node)]
    out.backward()
    np.testing.assert_allclose(x.grad, [3.0 + 2 * 6.0 * 3.0])  # d(3x + 9x²)/dx at 2


def test_diamond_graph_sums_the_gradient_of_a_reused_tensor():
    x = leaf([1.0, -2.0, 3.0])
    y = x * 2.0
    out = (y * y + ops.exp(y) + y.sum() + y[np.array([0, 0])].sum()).sum()
    out.backward()
    y_ = 2 * np.array([1.0, -2.0, 3.0])
    expected = 2.0 * (2 * y_ + np.exp(y_) + 3 + np.array([6.0, 0, 0]))
    np.testing.assert_allclose(x.grad, expected)


def test_same_tensor_as_both_inputs():
    x = leaf([3.0, -1.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, -2.0])
    x.zero_grad()
    (x - x).sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.0])


# ----- recording the graph -------------------------------------------------------------------
def test_no_grad_records_no_graph():
    x = leaf([1.0, 2.0])
    with no_grad():
        assert not is_grad_enabled()
        y = ops.tanh(x * 2.0).sum()
    assert is_grad_enabled()
    assert y._ctx is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_restores_state_after_an_exception_and_nests():
    with pytest.raises(ValueError), no_grad():
        raise ValueError
    assert is_grad_enabled()
    with no_grad():
        with no_grad():
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()


def test_no_grad_is_per_thread():
    seen = []
    with no_grad():
        t = threading.Thread(target=lambda: seen.append(is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_detach_cuts_the_graph_and_shares_data():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    d = y.detach()
    assert d._ctx is None and not d.requires_grad
    assert np.shares_memory(d.data, y.data)
    out = (d * x).sum()
    out.backward()
    np.testing.assert_allclose(x.grad, [3.0, 6.0])  # only the direct path, not through d


def test_constants_get_no_gradient():
    x = leaf([1.0, 2.0])
    c = Tensor(np.array([5.0, 7.0]))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, [5.0, 7.0])


def test_intermediate_tensors_keep_no_grad():
    x = leaf([1.0])
    y = x * 2.0
    (y * y).sum().backward()
    assert y.grad is None
    np.testing.assert_allclose(x.grad, [8.0])  # d(4x²)/dx at 1


# ----- gradient bookkeeping ------------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls_and_zero_grad_resets():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    loss.backward()  # the graph is kept, so a second call works and adds
    np.testing.assert_allclose(x.grad, [4.0, 8.0])
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [7.0, 11.0])
    x.zero_grad()
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_grad_is_a_private_copy():
    # The upstream array or a shared view must not become .grad itself (later in-place updates
    # of .grad would corrupt it).
    x = leaf([1.0, 2.0])
    g = np.array([1.0, 1.0])
    (x + 0.0).backward(g)
    assert x.grad is not g and not np.shares_memory(x.grad, g)
    x.grad += 1.0
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_backward_into_a_preallocated_buffer_fills_it_in_place():
    x = leaf(np.ones((2, 3)))
    buf = np.full((2, 3), 99.0)
    (x * 2.0).sum().backward(into={x: buf})
    assert x.grad is buf
    np.testing.assert_array_equal(buf, np.full((2, 3), 2.0))
    (x * 3.0).sum().backward(into={x: buf})  # accumulates in place into the same buffer
    assert x.grad is buf
    np.testing.assert_array_equal(buf, np.full((2, 3), 5.0))
    (x * 1.0).sum().backward()  # without `into`, out of place: the buffer keeps its values
    assert x.grad is not buf
    np.testing.assert_array_equal(buf, np.full((2, 3), 5.0))
    x.zero_grad()
    (x * 1.0).sum().backward(into={x: buf})  # overwrites (not adds to) the stale contents
    assert x.grad is buf
    np.testing.assert_array_equal(buf, np.ones((2, 3)))


def test_backward_into_a_buffer_receives_a_broadcast_gradient_in_its_dtype():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    buf = np.zeros(3, np.float32)
    x.sum().backward(into={x: buf})
    assert x.grad is buf and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, np.ones(3))


def _grads_with_and_without_buffers(loss_of, params):
    """Each parameter's gradient from backward(into=buffers) (ops may write into the buffers
    directly: Function.grad_out) and from a plain backward; buffers start as garbage."""
    bufs = {p: np.full(p.shape, 7.0) for p in params}
    for p in params:
        p.zero_grad()
    loss_of().backward(into=bufs)
    got = [p.grad.copy() for p in params]
    assert all(p.grad is bufs[p] for p in params)
    for p in params:
        p.zero_grad()
    loss_of().backward()
    return got, [p.grad for p in params]


def test_ops_write_weight_gradients_into_the_buffers_only_where_nothing_else_adds(monkeypatch):
    monkeypatch.setattr(Function, "_SMALL", 0)  # these weights are small: write them anyway
    written = []
    real = Function.grad_out
    monkeypatch.setattr(Function, "grad_out", lambda *a: written.append(real(*a)) or written[-1])
    rng = np.random.default_rng(3)
    x, x2 = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    w, b = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal(3))
    square = leaf(rng.standard_normal((4, 4)))
    cases = [
        (lambda: (ops.linear(Tensor(x), w, b) ** 2).sum(), [w, b]),  # straight in
        # w in two ops: the second op's gradient is added to the first's
        (lambda: (ops.linear(Tensor(x), w, b) * ops.linear(Tensor(x2), w)).sum(), [w, b]),
        (lambda: ((square @ square) ** 2).sum(), [square]),  # one leaf, both operands
        (lambda: ((Tensor(x) @ square) ** 2).sum() + (square**3).sum(), [square]),
    ]
    for k, (loss_of, params) in enumerate(cases):
        written.clear()
        got, want = _grads_with_and_without_buffers(loss_of, params)
        direct = [w for w in written if w is not None]
        assert len(direct) == [2, 2, 0, 1][k], k  # W, b; the first op W, b; none; W
        for g, g0 in zip(got, want):
            np.testing.assert_allclose(g, g0, rtol=1e-13, atol=1e-13)
    # a gradient already there (no zero_grad between passes) is added to, not overwritten
    bufs = {w: np.zeros((4, 3)), b: np.zeros(3)}
    w.zero_grad()
    b.zero_grad()
    for _ in range(2):
        (ops.linear(Tensor(x), w, b) ** 2).sum().backward(into=bufs)
    w.zero_grad()
    (ops.linear(Tensor(x), w, b) ** 2).sum().backward()
    np.testing.assert_allclose(bufs[w], 2 * w.grad, rtol=1e-13)


def test_backward_with_explicit_gradient_of_any_shape():
    x = leaf(np.arange(6.0).reshape(2, 3))
    y = x * 2.0
    y.backward(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(x.grad, 2 * np.arange(6.0).reshape(2, 3))


# ----- errors --------------------------------------------------------------------------------
def test_backward_on_non_scalar_without_grad_is_a_clear_error():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError, match=r"needs a scalar, got shape \(2,\)"):
        y.backward()


def test_backward_grad_of_wrong_shape_is_a_clear_error():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(ValueError, match=r"grad shape \(3,\) != \(2,\)"):
        y.backward(np.ones(3))


def test_requires_grad_on_int_tensor_is_a_clear_error():
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(TypeError, match="int64"):
        Tensor([1, 2], requires_grad=True)


def test_cast_to_int_leaves_the_graph():
    x = leaf([1.5, 2.5])
    i = x.astype(np.int64)
    assert i.dtype == np.int64 and not i.requires_grad and i._ctx is None


# ----- dtypes --------------------------------------------------------------------------------
def _float_ops(x, y):
    """A tour of the primitives with Python scalars mixed in; yields (name, output)."""
    yield "add", x + 1
    yield "radd", 2.5 + x
    yield "sub", x - 0.1
    yield "rsub", 1 - x
    yield "mul", x * 3.0
    yield "rmul", 0.5 * x
    yield "div", x / 7.0
    yield "rdiv", 1.0 / (x + 5.0)
    yield "pow", x**2
    yield "rpow", 2.0**x
    yield "neg", -x
    yield "tensor_pair", x * y + y / (y * y + 1.0)
    yield "exp", ops.exp(x)
    yield "log", ops.log(x * x + 1.0)
    yield "sqrt", ops.sqrt(x * x + 1.0)
    yield "abs", abs(x)
    yield "maximum", ops.maximum(x, 0.3)
    yield "minimum", ops.minimum(x, y)
    yield "where", ops.where(x.data > 0, x, 0.0)
    yield "clip", ops.clip(x, -0.5, 0.5)
    yield "relu", ops.relu(x)
    yield "leaky_relu", ops.leaky_relu(x)
    yield "elu", ops.elu(x)
    yield "gelu", ops.gelu(x)
    yield "gelu_tanh", ops.gelu(x, "tanh")
    yield "sigmoid", ops.sigmoid(x)
    yield "tanh", ops.tanh(x)
    yield "softplus", ops.softplus(x)
    yield "softmax", ops.softmax(x)
    yield "log_softmax", ops.log_softmax(x, axis=0)
    yield "matmul", x @ y.T
    yield "linear", ops.linear(x, y.T, y[0, :2])
    yield "sum", x.sum(axis=0)
    yield "mean", x.mean()
    yield "max", x.max(axis=1)
    yield "min", x.min()
    yield "reshape", x.reshape(-1)
    yield "transpose", x.T
    yield "broadcast_to", ops.broadcast_to(x, (2, 2, 3))
    yield "getitem", x[np.array([0, 0]), 1:]
    yield "concatenate", ops.concatenate([x, y], axis=1)
    yield "stack", ops.stack([x, y])


class Spy(Function):
    """Identity that records the dtype of the gradient flowing back through it."""

    seen: ClassVar[list] = []

    def forward(self, a):
        return a

    def backward(self, g):
        Spy.seen.append(g.dtype)
        return (g,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_through_every_op_and_its_gradient(dtype):
    rng = np.random.default_rng(0)
    x0 = Tensor(rng.standard_normal((2, 3)).astype(dtype), requires_grad=True)
    y0 = Tensor(rng.standard_normal((2, 3)).astype(dtype), requires_grad=True)
    # The spies check gradients *between* ops too: the leaves would cast a drifted dtype back.
    x, y = Spy.apply(x0), Spy.apply(y0)
    for name, out in _float_ops(x, y):
        assert out.dtype == dtype, f"{name}: {out.dtype}"
        x0.zero_grad()
        y0.zero_grad()
        Spy.seen = []
        out.backward(np.ones(out.shape, dtype))
        assert Spy.seen and set(Spy.seen) == {np.dtype(dtype)}, f"{name} grads: {Spy.seen}"
        for t in (x0, y0):
            assert t.grad is None or t.grad.dtype == dtype, f"{name} grad: {t.grad.dtype}"


def test_python_numbers_become_float32_and_arrays_keep_their_dtype():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    assert Tensor(np.zeros(2, np.float32), dtype=np.float64).dtype == np.float64
    assert Tensor([1, 2]).dtype.kind == "i"


def test_zero_dim_float64_stays_float64():
    # 0-d arithmetic returns a NumPy scalar; it must not be re-read as a Python float (float32).
    x = Tensor(np.array(2.0), requires_grad=True)
    y = x * 3.0 + x
    assert y.dtype == np.float64 and y.shape == ()
    y.backward()
    assert x.grad.dtype == np.float64 and x.grad == 4.0


def test_tensor_copies_and_constructor_shares():
    a = np.zeros(3)
    assert Tensor(a).data is a
    t = tensor(a)
    assert t.data is not a and not np.shares_memory(t.data, a)


def test_custom_function_contract():
    # A primitive sees arrays, says per input whether a gradient is needed, and may return None.
    class Scale(Function):
        def forward(self, a, b, k=1.0):
            self.k, self.b = k, b
            return a * b * k

        def backward(self, g):
            assert self.needs == [True, False]
            return g * self.b * self.k, None

    x = leaf([1.0, 2.0])
    out = Scale.apply(x, Tensor(np.array([3.0, 4.0])), k=2.0)
    out.sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 8.0])
    with no_grad():
        assert Scale.apply(x, np.array([1.0, 1.0]))._ctx is None
