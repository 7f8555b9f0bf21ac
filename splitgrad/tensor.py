"""The autograd engine: `Tensor`, the `Function` base for primitives, and `no_grad`.

A Tensor wraps a NumPy array. When it is produced by a primitive op while gradients are
enabled, it remembers the op (its "context"), and the op remembers its input tensors. Calling
`backward()` on a scalar walks that graph in reverse topological order and accumulates `.grad`
on every leaf that has `requires_grad=True`.

The sort is iterative (an explicit stack, no recursion), so a graph tens of thousands of nodes
deep, such as an unrolled RNN, works.

`activation_meter()` measures the bytes of live activations that graph nodes hold (peak and
current); it costs nothing while off (see `ActivationMeter`).
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import weakref

import numpy as np

_FLOAT_KINDS = "f"


class _GradState(threading.local):
    # A class attribute gives every thread the default without a getattr fallback on the
    # hot path (Function.apply reads this once per op).
    grad_enabled = True


_state = _GradState()


def is_grad_enabled() -> bool:
    """True unless inside a `no_grad()` block (per thread)."""
    return _state.grad_enabled


@contextlib.contextmanager
def no_grad():
    """Context manager that records no graph: ops inside it produce constants."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


def as_array(value, dtype=None) -> np.ndarray:
    """Turn a Python number, list or array into an ndarray (float32 for Python floats)."""
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.ndarray):
        return value if dtype is None or value.dtype == dtype else value.astype(dtype)
    arr = np.asarray(value)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype == np.float64:
        # Python floats and lists default to float32 like the rest of the library.
        return arr.astype(np.float32)
    return arr


def _free_buffer(parent, parents, into, pending):
    """`parent`'s buffer in `into` if its gradient may be written there directly: a leaf with
    no gradient yet, none pending from another op in this pass (which would be added), and
    only once among the op's inputs (x @ x would write both gradients into one buffer)."""
    if parent is None or parent._ctx is not None or parent.grad is not None:
        return None
    if parent in pending or sum(p is parent for p in parents) > 1:
        return None
    return into.get(parent)


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` over the axes that broadcasting added or stretched, so it matches `shape`.

    This is the one place where broadcasting is undone: every elementwise primitive calls it.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Function:
    """Base class of a primitive op: `forward` on arrays and `backward` on the output gradient.

    Subclasses implement `forward(self, *arrays, **kwargs) -> ndarray` and
    `backward(self, grad) -> tuple` (one gradient or None per input). The instance itself is
    the context: forward stores on `self` whatever backward needs. `self.needs[i]` says
    whether input i wants a gradient, so backward can skip work.

    A subclass with `writes_grads = True` may also write a weight's gradient straight into
    that weight's gradient buffer: during `backward(into=...)`, `self.grad_out(i, shape,
    dtype)` is the buffer of input i when it is a leaf whose gradient would be copied there
    anyway and it has that shape and dtype (else None). Returning that array saves the copy
    (Linear's weight gradient, for example).
    """

    writes_grads = False
    _into = None  # (buffers, pending gradients) while backward(into=...) runs this op
    _SMALL = 4096  # elements: a smaller gradient is cheaper to copy than to look up

    def grad_out(self, i, shape, dtype):
        """Input i's gradient buffer to write its gradient (of `shape` and `dtype`) into, or
        None (see above)."""
        if self._into is None or math.prod(shape) < self._SMALL:
            return None
        buf = _free_buffer(self.parents[i], self.parents, *self._into)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            return None
        return buf

    @classmethod
    def apply(cls, *inputs, **kwargs) -> Tensor:
        ctx = cls()
        arrays = []
        parents = []
        needs = []
        track = False
        grad_on = _state.grad_enabled
        for x in inputs:
            if isinstance(x, Tensor):
                arrays.append(x.data)
                parents.append(x)
                need = grad_on and x.requires_grad
                needs.append(need)
                track = track or need
            else:
                arrays.append(x)
                parents.append(None)
                needs.append(False)
        data = ctx.forward(*arrays, **kwargs) if kwargs else ctx.forward(*arrays)
        if type(data) is not np.ndarray and isinstance(data, np.generic):
            # 0-d arithmetic yields NumPy scalars; np.asarray keeps their dtype, whereas the
            # Tensor constructor would treat a float64 scalar as a Python float (-> float32).
            data = np.asarray(data)
        out = _wrap(data)
        # An integer result (e.g. a cast) cannot carry a gradient, as in PyTorch.
        if track and data.dtype.kind in "fc":
            ctx.parents = parents
            ctx.needs = needs
            out._ctx = ctx
            out.requires_grad = True
        return out

    def forward(self, *arrays, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    def name(self) -> str:
        """The op's name, e.g. "MatMul" (what PyTorch's `grad_fn.name()` gives)."""
        return type(self).__name__

    def __repr__(self):
        return f"<{type(self).__name__} backward>"


class Tensor:
    """An n-dimensional array with a gradient.

    `Tensor(data, requires_grad=False, dtype=None)`. Python numbers and lists become float32;
    NumPy arrays keep their dtype (float64 is allowed, e.g. for gradient checks).
    `t.grad` is a NumPy array of the same shape once `backward()` has reached `t`.
    """

    __slots__ = ("__weakref__", "_ctx", "data", "grad", "name", "requires_grad")
    __array_priority__ = 100  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, name=None, _copy=False):
        arr = data if dtype is None and type(data) is np.ndarray else as_array(data, dtype)
        if _copy:
            arr = arr.copy()
        if requires_grad and arr.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(
                f"Tensor{' ' + name if name else ''}: only floating-point tensors can require "
                f"gradients, got dtype {arr.dtype}; convert with .astype('float32') first."
            )
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self.name = name

    # ----- basic properties -------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def T(self):
        return self.transpose()

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{grad})"

    def numpy(self) -> np.ndarray:
        """The underlying array (not a copy)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> Tensor:
        """A tensor sharing the same data but cut from the graph."""
        return Tensor(self.data, _copy=False)

    def astype(self, dtype) -> Tensor:
        return _ops.cast(self, dtype)

    def zero_grad(self):
        self.grad = None

    # ----- the backward pass ------------------------------------------------------------
    def backward(self, grad=None, *, into=None):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad.

        `grad` defaults to 1 for a scalar. Gradients add up across calls until zeroed.
        `into` ({leaf: array}, optional) names preallocated arrays: a leaf whose `.grad` is
        None gets its gradient copied into its array, which becomes its `.grad` and is added
        to in place afterwards. Optimizers offer theirs (`Optimizer.grad_buffers()`) so that
        one flat update covers every parameter without gathering the gradients first.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() called on a tensor that does not require grad: no input of the "
                "computation had requires_grad=True (or it ran inside no_grad())."
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without an argument needs a scalar, got shape {self.shape}; "
                    "reduce it first (e.g. .mean()) or pass the output gradient."
                )
            grad = np.ones(self.data.shape, self.data.dtype)
        else:
            grad = as_array(grad, self.data.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad): grad shape {grad.shape} != {self.shape}")
        # Tensors hash by identity (C-level object hash), so they key the dicts directly.
        grads = {self: grad}
        pop = grads.pop
        get = grads.get
        for node in reversed(_topological_order(self)):
            g = pop(node, None)
            if g is None:
                continue
            ctx = node._ctx
            if ctx is None:
                node._accumulate(g, None if into is None else into.get(node))
                continue
            if into and ctx.writes_grads:
                ctx._into = (into, grads)
                try:
                    pgs = ctx.backward(g)
                finally:
                    ctx._into = None
            else:
                pgs = ctx.backward(g)
            for parent, need, pg in zip(ctx.parents, ctx.needs, pgs):
                if need and pg is not None:
                    prev = get(parent)
                    # Out of place: `prev` may be an array that another node also holds.
                    grads[parent] = pg if prev is None else prev + pg

    def _accumulate(self, g: np.ndarray, buf=None):
        if g.dtype != self.data.dtype:
            g = g.astype(self.data.dtype)
        if g.shape != self.data.shape:
            g = np.broadcast_to(g, self.data.shape)
        if self.grad is None:
            if buf is not None:
                if g is not buf:  # (an op may have written it there already: grad_out)
                    np.copyto(buf, g)
                self.grad = buf
            else:
                self.grad = np.array(g, copy=True)
        elif buf is not None and self.grad is buf:
            self.grad += g
        else:
            self.grad = self.grad + g

    # ----- operators (implemented in ops.py) ---------------------------------------------
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.sub(self, other)

    def __rsub__(self, other):
        return _ops.sub(other, self)

    def __mul__(self, other):
        return _ops.mul(self, other)

    def __rmul__(self, other):
        return _ops.mul(other, self)

    def __truediv__(self, other):
        return _ops.div(self, other)

    def __rtruediv__(self, other):
        return _ops.div(other, self)

    def __neg__(self):
        return _ops.neg(self)

    def __pow__(self, exponent):
        return _ops.pow(self, exponent)

    def __rpow__(self, base):
        return _ops.pow(base, self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    def __abs__(self):
        return _ops.abs(self)

    # Comparisons give plain boolean arrays (no gradient flows through them).
    def __lt__(self, other):
        return self.data < as_array(other)

    def __le__(self, other):
        return self.data <= as_array(other)

    def __gt__(self, other):
        return self.data > as_array(other)

    def __ge__(self, other):
        return self.data >= as_array(other)

    __hash__ = object.__hash__

    # ----- PyTorch's names for the graph ----------------------------------------------
    @property
    def is_leaf(self) -> bool:
        """True unless an op recorded this tensor in the graph (PyTorch's rule: every tensor
        that does not require grad is a leaf, and so is one the user made with it)."""
        return self._ctx is None

    @property
    def grad_fn(self):
        """The Function that made this tensor (its `name()` says which), None for a leaf."""
        return self._ctx

    def requires_grad_(self, requires_grad=True) -> Tensor:
        """Set `requires_grad` in place and return self (PyTorch's in-place spelling)."""
        if not requires_grad and self._ctx is not None:
            raise RuntimeError(
                f"requires_grad_(False) on a tensor made by {self._ctx.name()}: only a leaf "
                "can change its flag; use .detach() for a copy outside the graph."
            )
        if requires_grad and self.data.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(
                f"requires_grad_(): only floating-point tensors can require gradients, got "
                f"dtype {self.data.dtype}; convert with .astype('float32') first."
            )
        self.requires_grad = bool(requires_grad)
        return self

    # ----- method versions of common ops ------------------------------------------------
    # Reductions take NumPy/Keras's axis= and keepdims= or PyTorch's dim= and keepdim=; the
    # PyTorch names cost nothing unless used (one `is None` test each).
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_axis("sum", axis, keepdims, dim, keepdim)
        return _ops.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_axis("mean", axis, keepdims, dim, keepdim)
        return _ops.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The largest values over `axis`. With PyTorch's `dim=`, PyTorch's result: the pair
        (values, indices), as `torch.max(x, dim)` returns it."""
        if dim is None and keepdim is None:
            return _ops.max(self, axis, keepdims)
        axis, keepdims = _torch_axis("max", axis, keepdims, dim, keepdim)
        return _with_indices(self, _ops.max(self, axis, keepdims), np.argmax, axis, keepdims, dim)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The smallest values over `axis`; with `dim=`, (values, indices) as in PyTorch."""
        if dim is None and keepdim is None:
            return _ops.min(self, axis, keepdims)
        axis, keepdims = _torch_axis("min", axis, keepdims, dim, keepdim)
        return _with_indices(self, _ops.min(self, axis, keepdims), np.argmin, axis, keepdims, dim)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops.transpose(self, axes or None)

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def sqrt(self):
        return _ops.sqrt(self)

    def relu(self):
        return _ops.relu(self)

    def sigmoid(self):
        return _ops.sigmoid(self)

    def tanh(self):
        return _ops.tanh(self)

    def abs(self):
        return _ops.abs(self)

    def clip(self, lo=None, hi=None):
        return _ops.clip(self, lo, hi)

    def softmax(self, axis=-1, *, dim=None):
        if dim is not None:
            axis, _ = _torch_axis("softmax", None if axis == -1 else axis, False, dim, None)
        return _ops.softmax(self, axis)

    def log_softmax(self, axis=-1, *, dim=None):
        if dim is not None:
            axis, _ = _torch_axis("log_softmax", None if axis == -1 else axis, False, dim, None)
        return _ops.log_softmax(self, axis)


ValuesIndices = collections.namedtuple("ValuesIndices", "values indices")
ValuesIndices.__doc__ = "What `t.max(dim=...)` / `t.min(dim=...)` return, as in PyTorch."


def _torch_axis(method, axis, keepdims, dim, keepdim):
    """(axis, keepdims) from PyTorch's dim=/keepdim=, refusing both spellings of one."""
    if dim is not None and axis is not None:
        raise TypeError(
            f"Tensor.{method}: got axis={axis!r} and dim={dim!r}; they are the same argument "
            "(NumPy/Keras's and PyTorch's name): give one."
        )
    if keepdim is not None and keepdims:
        raise TypeError(
            f"Tensor.{method}: got keepdims={keepdims!r} and keepdim={keepdim!r}; they are the "
            "same argument (NumPy/Keras's and PyTorch's name): give one."
        )
    return (axis if dim is None else dim), bool(keepdims if keepdim is None else keepdim)


def _with_indices(x, values, arg, axis, keepdims, dim):
    """(values, indices) for a reduction over one `dim` (PyTorch's max/min along a dim)."""
    if dim is None or not isinstance(axis, (int, np.integer)):
        raise TypeError(
            "Tensor.max/min with keepdim= but no single dim: PyTorch's (values, indices) form "
            "needs dim=<int>; for a reduction over several axes use axis= and keepdims=."
        )
    idx = arg(x.data, axis=axis)
    if keepdims:
        idx = np.expand_dims(idx, axis)
    return ValuesIndices(values, _wrap(np.asarray(idx, dtype=np.int64)))


def _wrap(arr: np.ndarray) -> Tensor:
    """A constant Tensor around `arr` without the constructor's checks (arr is an ndarray)."""
    t = _new_object(Tensor)
    t.data = arr
    t.grad = None
    t.requires_grad = False
    t._ctx = None
    t.name = None
    return t


_new_object = object.__new__


def _topological_order(root: Tensor) -> list:
    """Nodes reachable from `root` that require grad, parents before children (iterative DFS).

    backward() walks it in reverse, so a node is reached only after every node that feeds a
    gradient into it. A 1-tuple on the stack marks "all parents of this node are done".
    """
    post = []
    finish = post.append
    visited = set()
    mark = visited.add
    stack = [root]
    push = stack.append
    pop = stack.pop
    while stack:
        node = pop()
        if type(node) is tuple:
            finish(node[0])
            continue
        # Marked when popped, not when pushed: a node pushed early but reached again through a
        # deeper path must still finish after that path, so duplicates on the stack are fine.
        if node in visited:
            continue
        mark(node)
        ctx = node._ctx
        if ctx is None:
            finish(node)  # a leaf has no parents to wait for
            continue
        push((node,))
        for parent, need in zip(ctx.parents, ctx.needs):
            if need and parent not in visited:
                push(parent)
    return post


def tensor(data, requires_grad=False, dtype=None) -> Tensor:
    """Shorthand for `Tensor(data, ...)` that always copies the data."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, _copy=True)


# ----- the engine's own memory accounting --------------------------------------------------
class ActivationMeter:
    """Bytes of live activations: the distinct array buffers that graph nodes hold.

    A node (the context of an op recorded while the meter is on) holds the arrays it keeps for
    its backward and its non-leaf inputs; the leaves' own data (weights, the input batch) are
    not activations and are left out. A buffer counts once however many nodes (or views) hold
    it, from the first node that holds it until the last one is freed. `live` is the current
    total, `peak` the highest seen, `nodes` how many nodes were recorded.
    """

    def __init__(self):
        self.live = self.peak = self.nodes = 0
        self._held = {}  # id(root buffer) -> [bytes, nodes holding it]
        # Re-entrant: a garbage collection inside `_track` may run `_release` in this thread.
        self._lock = threading.RLock()

    def _track(self, ctx):
        bufs = _buffers_held(ctx)
        with self._lock:
            self.nodes += 1
            for key, size in bufs.items():
                entry = self._held.get(key)
                if entry is None:
                    self._held[key] = [size, 1]
                    self.live += size
                else:
                    entry[1] += 1
            self.peak = max(self.peak, self.live)
        weakref.finalize(ctx, self._release, tuple(bufs))

    def _release(self, keys):
        with self._lock:
            for key in keys:
                entry = self._held[key]
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[key]
                    self.live -= entry[0]


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns the memory a view looks into."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _buffers_held(ctx) -> dict:
    """{id(root buffer): bytes} of what a graph node keeps alive, leaves' data excluded."""
    leaves = {id(_root(p.data)) for p in ctx.parents if p is not None and p._ctx is None}
    out = {}

    def add(a):
        if isinstance(a, np.ndarray):
            root = _root(a)
            if id(root) not in leaves:
                out[id(root)] = root.nbytes

    for p in ctx.parents:
        if p is not None and p._ctx is not None:
            add(p.data)
    for key, value in vars(ctx).items():
        if key in ("parents", "needs"):
            continue
        if isinstance(value, (tuple, list)):
            for item in value:
                add(item)
        else:
            add(value)
    return out


_meters: list = []  # the meters switched on, innermost last
_plain_apply = Function.__dict__["apply"]


def _metered_apply(cls, *inputs, **kwargs):
    out = _plain_apply.__func__(cls, *inputs, **kwargs)
    if out._ctx is not None:
        for meter in _meters:
            meter._track(out._ctx)
    return out


@contextlib.contextmanager
def activation_meter():
    """`with activation_meter() as m:` counts the live activation bytes of every graph node
    recorded inside the block (in any thread); `m.peak` is the peak.

    Function.apply is the hottest path of the library, so the meter costs nothing while off:
    switching it on swaps in a counting `apply`, and the plain one comes back when the last
    meter is switched off. Nodes recorded inside stay counted until they are freed, also
    after the block, so a meter opened later starts from zero.
    """
    meter = ActivationMeter()
    _meters.append(meter)
    if len(_meters) == 1:
        Function.apply = classmethod(_metered_apply)
    try:
        yield meter
    finally:
        _meters.remove(meter)
        if not _meters:
            Function.apply = _plain_apply


# ops.py imports this module, so this import must come last (it is used only inside methods).
from . import ops as _ops
