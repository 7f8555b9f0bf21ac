"""Per-example gradients in one batched pass, through hooks that the layers with weights call.

DP-SGD needs every example's gradient, not only their mean. Looping over the examples costs
one forward and backward pass each. For a layer whose weights enter as pre = a·W + b, one
batched pass is enough, because the per-example gradient is an outer product:

    ∂ℓ_i/∂W = Σ_t a_i,tᵀ δ_i,t,   ∂ℓ_i/∂b = Σ_t δ_i,t     (a = the layer's input, δ = ∂ℓ_i/∂pre)

over the positions t of example i (one for Dense on 2-D input, the output pixels of a
convolution, the time steps of a recurrent layer). So ‖∂ℓ_i/∂W‖² = ‖a_i‖²·‖δ_i‖² for one
position, and Σ_{t,s} (a_t·a_s)(δ_t·δ_s) for many (the "ghost norm" of Goodfellow 2015 / Li et
al. 2022) unless building each example's a_iᵀδ_i is cheaper (in·out ≤ positions·(in + out)); a
weighted sum over examples Σ_i c_i ∂ℓ_i/∂W is one product aᵀ(c ⊙ δ). An embedding table is the
same with one-hot rows as a: ∂ℓ_i/∂E = Σ_t e_{id_t} δ_tᵀ, whose norm is Σ over pairs of equal
ids of δ_t·δ_s (computed by grouping, never as an N×V×D array).

The hooks (each returns its input unchanged outside `recording()`):
- `linear_site(x, pre, kernel, bias)`: Dense, and Conv2D with its receptive fields as x. δ is
  read off a zero "probe" added to `pre`: its gradient is exactly ∂loss/∂pre.
- `embedding_site(ids, out, table)`: Embedding, with a probe on the looked-up rows.
- `transposed_site(x, out, kernel, bias, fields)`: Conv2DTranspose. A transposed convolution
  is the adjoint of a convolution, so its kernel gradient correlates δ with the input the other
  way round: ∂ℓ_i/∂W = Σ_p fields(δ_i)_pᵀ x_i,p over the input pixels p, where fields(δ) are
  the receptive fields of the output gradient at each input pixel (the im2col matrix its own
  backward multiplies by x). That is a linear site with the roles swapped: fields(δ) as "a"
  (known only after backward) and x as "δ". The bias, added at every output pixel, is a
  separate site: ∂ℓ_i/∂b = Σ_t δ_i,t over the output pixels t.
- `fused_sites(pairs)`: a fused op (SimpleRNN, LSTM, GRU) whose pre-activations never exist
  as Tensors. It returns a `fill` callable that the op calls from its own backward with the
  inputs and δ of every (kernel, bias) pair, time-major: x·W_ih + b_ih and h_{t−1}·W_hh + b_hh.

A layer that calls none of them is not covered, and `Recorder.covers(params)` tells the caller
(DP-SGD) to fall back to the per-example loop. Nothing is recorded while gradients are off (the
first forward of a `Recompute` block keeps no graph): such weights are not covered either.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .._kernels.thread_team import matmul, own_threads, product, row_groups, run_pieces
from ..tensor import Tensor, is_grad_enabled

_local = threading.local()


def _recorder():
    recorder = getattr(_local, "recorder", None)
    return recorder if recorder is not None and is_grad_enabled() else None


def recording_now() -> bool:
    """True inside `recording()`: a layer with a fused fast path (Conv2D) then takes the plain
    path that exposes its pre-activation and inputs."""
    return _recorder() is not None


def _probe(like: Tensor) -> Tensor:
    """A zero added to `like`: its gradient is ∂loss/∂like."""
    return Tensor(np.zeros(like.shape, like.dtype), requires_grad=True)


def linear_site(x, pre: Tensor, kernel, bias) -> Tensor:
    """`pre` = x·kernel + bias (x: a Tensor or array of shape (n, ..., in), kernel read as an
    (in, out) matrix), with a probe added while per-example gradients are recorded. A
    convolution passes its receptive fields as x: (n, positions, kh·kw·in)."""
    recorder = _recorder()
    if recorder is None:
        return pre
    probe = _probe(pre)
    a = x.data if isinstance(x, Tensor) else x
    recorder.sites.append(_Linear(kernel, bias, a, lambda: probe.grad))
    return pre + probe


def embedding_site(ids, out: Tensor, table) -> Tensor:
    """`out` = table[ids] (ids: an integer array (n, ...)), with a probe while recording."""
    recorder = _recorder()
    if recorder is None:
        return out
    probe = _probe(out)
    recorder.sites.append(_Embedding(table, np.asarray(ids), lambda: probe.grad))
    return out + probe


def transposed_site(x, out: Tensor, kernel, bias, fields) -> Tensor:
    """`out` = conv2dᵀ(x, kernel) + bias (x: (n, h, w, in), kernel (kh, kw, out, in)), with a
    probe while recording. `fields(δ)` gives the receptive fields of an output gradient δ at
    each of the h·w input pixels: (n, h·w, kh·kw·out), rows in the kernel's (kh, kw, out)
    order. They are built once, after backward, when the norms or sums first need them."""
    recorder = _recorder()
    if recorder is None:
        return out
    probe = _probe(out)
    a = x.data if isinstance(x, Tensor) else np.asarray(x)
    built = []

    def delta_fields():
        if not built:
            built.append(None if probe.grad is None else fields(probe.grad))
        return built[0]

    # kernel gradient: fields(δ)ᵀ·x per example, a linear site with "a" = fields(δ), "δ" = x
    recorder.sites.append(_Linear(kernel, None, delta_fields, lambda: a))
    if bias is not None:
        recorder.sites.append(_Bias(bias, lambda: probe.grad))
    return out + probe


def fused_sites(pairs):
    """None outside `recording()`; inside, one site per (kernel, bias) pair and a function
    `fill(arrays)` to call from the op's backward with [(a, δ), ...] in the same order, each
    (positions, n, ·): time-major, as the recurrent ops keep them. A fill that never comes
    (nothing needed a gradient) leaves the sites at zero."""
    recorder = _recorder()
    if recorder is None:
        return None
    sites = [_Linear(kernel, bias, None, None, batch_axis=1) for kernel, bias in pairs]
    recorder.sites.extend(sites)

    def fill(arrays):
        for site, (a, d) in zip(sites, arrays):
            site.a, site.delta = a, (lambda d=d: d)

    return fill


@contextlib.contextmanager
def recording():
    """`with recording() as rec:` run a forward pass; `rec` then holds every site."""
    recorder = Recorder()
    _local.recorder = recorder
    try:
        yield recorder
    finally:
        _local.recorder = None


class Recorder:
    """The sites of one forward pass (`_Linear`, `_Bias` and `_Embedding` records)."""

    def __init__(self):
        self.sites = []

    def covers(self, params) -> bool:
        """True when every parameter in `params` is the kernel or bias of exactly one recorded
        site (a weight used twice has cross terms in its norm that the sites do not see)."""
        seen = [id(p) for site in self.sites for p in site.params() if p is not None]
        return len(seen) == len(set(seen)) and {id(p) for p in params} <= set(seen)

    def gradients(self, scale: float, params=None):
        """(per-example squared norms (n,), and a function that, given per-example weights
        c (n,), returns {id(param): Σ_i c_i·∂ℓ_i/∂param}), after backward of a loss whose
        per-example terms are `scale`·ℓ_i (so δ_i = probe.grad_i / scale). Only the weights in
        `params` (default: all) count: a frozen one is neither clipped nor returned.

        The products run in the model's precision, as its own backward does (float32 for a
        float32 model, like Opacus), and the results are returned as float64."""
        wanted = None if params is None else {id(p) for p in params}
        for site in self.sites:
            site.wanted = [
                p is not None and (wanted is None or id(p) in wanted) for p in site.params()
            ]
        shared = {}  # δ arrays seen by several sites (an LSTM's W_ih and W_hh): their Gram once
        sq = 0.0
        with own_threads:  # see _stacked
            for site in self.sites:
                sq = sq + site.sq_norms(shared)
        sq = np.asarray(sq, np.float64) / (scale * scale)

        def weighted(c):
            c = np.asarray(c, np.float64) / scale
            out = {}
            with own_threads:
                for site in self.sites:
                    for key, grad in site.weighted(c):
                        out[key] = out.get(key, 0) + grad
            return out

        return sq, weighted


def _stacked(x, y):
    """np.matmul(x, y) over a stack of examples, split into groups of examples on splitgrad's
    thread team with a single-threaded BLAS (inside `own_threads`). These products are small
    (positions × positions): OpenBLAS's own threads, waking and spinning for each one, made
    them up to 50 times slower on the shared 2-core machine (measured)."""
    out = np.empty(x.shape[:-1] + y.shape[-1:], np.result_type(x, y))
    run_pieces(product(x[rows], y[rows], out[rows]) for rows in row_groups(len(x)))
    return out


def _sum_sq(arr, axes):
    """Σ arr² over `axes`, accumulated in float64."""
    return (arr * arr).sum(axis=axes, dtype=np.float64)


class _Linear:
    """pre = a·kernel + bias at `positions` places per example; a and δ are 3-D (n, P, ·), or
    (P, n, ·) with batch_axis=1. `delta()` gives ∂loss/∂pre (None: no gradient reached it);
    `a` is an array, or a function giving one (None: no gradient) for a site whose "a" side
    only exists after backward (Conv2DTranspose's receptive fields of δ)."""

    wanted = (True, True)  # (kernel, bias) in the gradient; set by Recorder.gradients

    def __init__(self, kernel, bias, a, delta, batch_axis=0):
        self.kernel, self.bias, self.batch_axis = kernel, bias, batch_axis
        self.a, self.delta = a, delta

    def params(self):
        return (self.kernel, self.bias)

    def _arrays(self, shared=None):
        """(a, δ, memo) as 3-D arrays in their own layout, or None when δ is absent; memo
        holds δ's Gram matrices once computed (shared by sites with the same δ)."""
        raw = None if self.delta is None else self.delta()
        a = self.a() if callable(self.a) else self.a
        if raw is None or a is None:
            return None
        a = np.asarray(a)
        d = raw
        if self.batch_axis == 0:
            a = a.reshape(a.shape[0], -1, a.shape[-1])
            d = raw.reshape(a.shape[0], -1, raw.shape[-1])
        dtype = np.result_type(a.dtype, d.dtype)
        a, d = a.astype(dtype, copy=False), d.astype(dtype, copy=False)
        if shared is None:
            return a, d, [None, raw]
        # [its Gram matrices once needed, and `raw` itself so that its id stays unique]
        memo = shared.setdefault(id(raw), [None, raw])
        return a, d, memo

    def _batch_major(self, arr):
        # A copy, not a view: NumPy's stacked matmul runs its own slow loop instead of BLAS on
        # a (positions, n, ·) array read batch-first (float32: 20 times slower, measured).
        return arr if self.batch_axis == 0 else np.ascontiguousarray(arr.transpose(1, 0, 2))

    def sq_norms(self, shared):
        got = self._arrays(shared)
        if got is None:
            return 0.0
        a, d, memo = got
        if len(memo) < 3:  # δ's batch-major copy, shared too
            memo.append(self._batch_major(d))
        a, d = self._batch_major(a), memo[2]
        s = 0.0
        if self.wanted[1]:
            s = _sum_sq(d.sum(axis=1), 1)
        if not self.wanted[0]:
            return s
        positions, k, o = a.shape[1], a.shape[2], d.shape[2]
        if positions == 1:  # one position per example: the outer product's norm factorises
            return s + _sum_sq(a, (1, 2)) * _sum_sq(d, (1, 2))
        if k * o <= positions * (k + o):  # cheaper to build each example's gradient
            per = _stacked(a.transpose(0, 2, 1), d)  # (n, in, out), batched GEMM
            return s + _sum_sq(per, (1, 2))
        # the ghost norm: Σ_{t,s} (a_t·a_s)(δ_t·δ_s) from two Gram matrices
        gram_a = _stacked(a, a.transpose(0, 2, 1))
        if memo[0] is None:
            memo[0] = _stacked(d, d.transpose(0, 2, 1))
        return s + (gram_a * memo[0]).sum(axis=(1, 2), dtype=np.float64)

    def weighted(self, c):
        got = self._arrays()
        if got is None:  # no gradient reached this site: every example's gradient is zero
            return [(id(p), np.zeros(p.shape)) for p, on in zip(self.params(), self.wanted) if on]
        a, d, _ = got
        c = c.astype(d.dtype)
        w = d * (c[:, None, None] if self.batch_axis == 0 else c[None, :, None])
        out = []
        if self.wanted[0]:
            k, o = a.shape[2], w.shape[2]
            grad = matmul(a.reshape(-1, k).T, w.reshape(-1, o))  # Σ_i c_i a_iᵀδ_i: one GEMM
            out.append((id(self.kernel), grad.reshape(self.kernel.shape).astype(np.float64)))
        if self.wanted[1]:
            out.append((id(self.bias), w.sum(axis=(0, 1), dtype=np.float64)))
        return out


class _Bias:
    """out = … + bias at every position: ∂ℓ_i/∂bias = Σ_t δ_i,t (δ: (n, ..., out)), for a site
    whose kernel part is recorded elsewhere (Conv2DTranspose's kernel site)."""

    wanted = (True,)

    def __init__(self, bias, delta):
        self.bias, self.delta = bias, delta

    def params(self):
        return (self.bias,)

    def _sums(self):
        """Σ_t δ_i,t per example (n, out), or None without a gradient."""
        d = self.delta()
        return None if d is None else d.reshape(d.shape[0], -1, d.shape[-1]).sum(axis=1)

    def sq_norms(self, shared):
        sums = self._sums() if self.wanted[0] else None
        return 0.0 if sums is None else _sum_sq(sums, 1)

    def weighted(self, c):
        if not self.wanted[0]:
            return []
        sums = self._sums()
        if sums is None:
            return [(id(self.bias), np.zeros(self.bias.shape))]
        c = c.astype(sums.dtype)
        return [(id(self.bias), (sums * c[:, None]).sum(axis=0, dtype=np.float64))]


class _Embedding:
    """out = table[ids]; ∂ℓ_i/∂table = Σ_t e_{id_i,t} δ_i,tᵀ, handled by grouping equal
    (id, example) pairs: one sort, one segmented sum, never an (n, V, D) array."""

    wanted = (True,)

    def __init__(self, table, ids, delta):
        self.table, self.ids, self.delta = table, ids, delta
        self._sums = None

    def params(self):
        return (self.table,)

    def _segments(self):
        """(S: Σ of δ over each (id, example) group (m, D), the group's example (m,), its id
        (m,)), groups sorted by id; or None without a gradient."""
        if self._sums is not None:
            return self._sums
        d = self.delta()
        if d is None:
            return None
        n = self.ids.shape[0]
        rows = d.reshape(-1, d.shape[-1])
        ids = self.ids.reshape(n, -1).astype(np.int64)
        example = np.broadcast_to(np.arange(n)[:, None], ids.shape)
        keys = (ids * n + example).ravel()  # sorted by id, then by example
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        sums = np.add.reduceat(rows[order], starts, axis=0) if len(order) else rows[:0]
        self._sums = sums, ordered[starts] % n, ordered[starts] // n
        return self._sums

    def sq_norms(self, shared):
        got = self._segments() if self.wanted[0] else None
        if got is None:
            return 0.0
        sums, example, _ = got
        return np.bincount(example, _sum_sq(sums, 1), minlength=self.ids.shape[0])

    def weighted(self, c):
        if not self.wanted[0]:
            return []
        out = np.zeros(self.table.shape)
        got = self._segments()
        if got is not None and len(got[0]):
            sums, example, ids = got
            weighted = sums * c[example][:, None]
            # Groups are sorted by id: one more segmented sum gives each table row.
            first = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
            out[ids[first]] = np.add.reduceat(weighted, first, axis=0)
        return [(id(self.table), out)]
