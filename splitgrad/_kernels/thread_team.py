"""splitgrad's own thread team, for convolutional and recurrent models: their per-example work
and the products around it. (Not data parallelism: that is splitgrad/split/data_parallel.py.)

A recurrent layer's time loop runs best as one loop per slice of the batch, one per core (the
sequences of a batch never mix); a convolution or a pooling layer likewise gathers, multiplies
and pools one slice of the batch per core, where OpenBLAS would thread the GEMMs alone and leave
every other pass on one core. Worse, OpenBLAS's worker threads spin for about 0.1 s after each
threaded call, holding the other core: a loop that starts while they spin runs at half speed
(measured: 0.76 ms instead of 0.42 ms per step of the music model). So while such a model runs,
splitgrad does all the threading itself:

* `own_threads` sets the BLAS to one thread for its duration and remembers how many it had:
  that is the size of the team. A Model holding a layer that `wants_own_threads` (recurrent
  layers, Conv2D) enters it around its forward passes and training steps (decided once per
  model, model.py); each such primitive also enters it around its own forward and backward
  (`OnOwnThreads`), so a bare layer call or a hand-written loop runs right too.
* Inside it, `matmul` cuts a product of at least `_SPLIT_WORK` multiply-adds into row blocks, one
  per team member, and `run_pieces` runs such pieces on helper threads; `batch_groups` and
  `run_groups` cut a batch the same way. NumPy lets go of the GIL inside matmul (for results
  of ~500 elements or more: see `piece_product`) and ufunc loops, so the helpers really run in
  parallel. Outside it, `matmul` is plain np.matmul: for other models OpenBLAS's own threads
  are faster (they wake up sooner).
* A helper waits for its next piece by spinning for up to ~2 ms (spin_jit.py, without the
  GIL) before it sleeps on its lock: waking a sleeping thread cost 30-60 µs here, ten times a
  convolutional training step.

A place whose BLAS is set to one thread (a Ray worker) gets a team of one and runs everything in
order. Measured on the 2-core machine: the music model's training step 0.27 s → 0.19 s; the lab
CNN's (fashion-cnn) 8.5 → 6.8 ms.
"""

from __future__ import annotations

import os
import threading
from functools import partial

import numpy as np

_SPLIT_WORK = 1 << 21  # multiply-adds; below this a product runs as one single-thread call


class _Helper:
    """One daemon thread that runs the task it is handed and signals when it is done.

    Each signal is a flag (for a spinning waiter, see `_wait`) and a lock (for a sleeping
    one): plain locks used as binary semaphores, taken here and released to signal.
    """

    def __init__(self):
        self.task = None
        self.flags = np.zeros(2, np.int64)  # [task handed over, task done]
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        threading.Thread(target=self._loop, daemon=True, name="splitgrad-helper").start()

    def _loop(self):
        while True:
            _wait(self.flags, 0)
            self.go.acquire()
            self.flags[0] = 0
            try:
                self.task()
            finally:
                self.flags[1] = 1
                self.done.release()

    def hand(self, task):
        self.task = task
        self.flags[0] = 1
        self.go.release()

    def join(self):
        _wait(self.flags, 1)
        self.done.acquire()
        self.flags[1] = 0


_SPIN_ROUNDS = 80_000  # about 2 ms of polling (25 ns a round measured) before sleeping
_spin = []  # [wait_until or None], loaded at the first hand-off


def _wait(flags, index):
    """Spin until flags[index] is set, for up to about 2 ms, without the GIL (spin_jit.py);
    the caller then takes its lock, which no longer blocks if the flag came in time."""
    spin = _spinner()
    if spin is not None:
        spin(flags, index, 1, _SPIN_ROUNDS)


def _spinner():
    """spin_jit.wait_until, or None where numba is missing or the CPU is not x86."""
    if not _spin:
        try:
            from . import spin_jit

            wait_until = spin_jit.wait_until if spin_jit.X86 else None
            if wait_until is not None:
                wait_until(np.ones(1, np.int64), 0, 1, 0)  # compile (or load) it now
            _spin.append(wait_until)
        except ImportError:  # no numba here: sleeping on the lock is correct, only slower
            _spin.append(None)
    return _spin[0]


_helpers: list[_Helper] = []
_busy = threading.Lock()  # one parallel run at a time; a second caller works alone
_scope = threading.Lock()  # guards the three values below
_depth = 0  # how many `own_threads` blocks are open (nested layer calls, other threads)
_team = 0  # threads to split work over while a block is open
_saved: list[int] = []  # the BLAS thread counts to restore when the last block closes
_blas = None


def _forget_helpers():
    """After fork the child has none of the parent's threads: start afresh."""
    global _busy, _scope, _depth, _team
    _helpers.clear()
    _busy, _scope = threading.Lock(), threading.Lock()
    _depth, _team = 0, 0


os.register_at_fork(after_in_child=_forget_helpers)


def blas_libraries():
    global _blas
    if _blas is None:
        _spinner()  # numba's first compile may load another BLAS (SciPy's): scan after it
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


class _OwnThreads:
    """`with own_threads:` the BLAS is single-threaded and splitgrad splits the work itself."""

    def __enter__(self):
        global _depth, _team, _saved
        with _scope:
            _depth += 1
            if _depth == 1:
                libs = blas_libraries()
                _saved = [lib.get_num_threads() for lib in libs]
                _team = max(_saved, default=1)
                if _team > 1:
                    for lib in libs:
                        lib.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        global _depth, _team
        with _scope:
            _depth -= 1
            if _depth == 0:
                if _team > 1:
                    for lib, n in zip(blas_libraries(), _saved):
                        lib.set_num_threads(n)
                _team = 0
        return False


own_threads = _OwnThreads()


class OnOwnThreads:
    """A mixin for an op (a `Function`) whose `_forward` and `_backward` split their work over
    the team: each runs inside `own_threads` (a no-op within a model that already is), so a
    bare layer call or a hand-written training loop runs the same way as `fit`."""

    def forward(self, *args, **kwargs):
        with own_threads:
            return self._forward(*args, **kwargs)

    def backward(self, g):
        with own_threads:
            return self._backward(g)


def in_own_threads() -> bool:
    """True inside an `own_threads` block (so nested layers need not look again)."""
    return _depth > 0


def team_size() -> int:
    """Threads to split work over: the team inside `own_threads`, else the BLAS's count."""
    if _depth:
        return _team
    return max((lib.get_num_threads() for lib in blas_libraries()), default=1)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b with a 2-D `a` (b may be a stack of matrices); a big product is cut into row
    blocks of `a` that run on the team's threads."""
    if not _depth or _team < 2:  # (the common case first: a small model's step is mostly this)
        return np.matmul(a, b, out=out)
    m, k = a.shape
    n = b.shape[-1]
    if m * n * k * (b.size // max(1, k * n)) < _SPLIT_WORK or m < 2 * _team:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(b.shape[:-2] + (m, n), np.result_type(a, b))
    run_pieces(product(a[rows], b, out[..., rows, :]) for rows in row_groups(m))
    return out


def batch_groups(n: int) -> list[slice]:
    """Slices of a batch of n examples, one per team member inside `own_threads`, else one
    slice for the whole batch (a convolution or pooling splits its batch this way: examples
    never mix there)."""
    return row_groups(n) if n > 1 and _depth else [slice(0, n)]


def run_groups(piece, groups, parallel=True) -> None:
    """piece(k, group) for each of the slices `groups`: on the team's threads when `parallel`
    and there are several, else one after the other here. Each piece must write only its own
    rows; a sum over the batch (a weight gradient) is then summed from one part per piece with
    `sum_parts`, always in the same order: the same bits from run to run (a team of another
    size may round differently)."""
    if parallel and len(groups) > 1:
        run_pieces(partial(piece, k, group) for k, group in enumerate(groups))
    else:
        for k, group in enumerate(groups):
            piece(k, group)


def sum_parts(parts):
    """parts[0] + parts[1] + ... in that order (parts[0] itself when there is one)."""
    if len(parts) == 1:
        return parts[0]
    total = parts[0] + parts[1]
    for part in parts[2:]:
        total += part
    return total


def piece_product(a, b, out):
    """a @ b into out, letting go of the GIL, so that pieces on different threads multiply at
    the same time. np.matmul keeps the GIL for results of under ~500 elements (a small weight
    gradient: two pieces then ran one after the other, measured with NumPy 2.4); np.dot lets
    go for every size, but copies a transposed slice that np.matmul reads as it is."""
    if out.size < 4096:
        return np.dot(a, b, out=out)
    return np.matmul(a, b, out=out)


def product(a, b, out):
    """A piece for `run_pieces`: np.matmul(a, b, out=out)."""
    return lambda: np.matmul(a, b, out=out)


def row_groups(rows: int) -> list[slice]:
    """`rows` cut into one contiguous, nearly equal slice per team member (at most `rows`)."""
    n = max(1, min(team_size(), rows))
    return [slice(rows * i // n, rows * (i + 1) // n) for i in range(n)]


def run_pieces(pieces) -> None:
    """Calls every function in `pieces` (no arguments), one team member per piece at a time.

    Results must not depend on how pieces are grouped: give each piece its own output rows.
    """
    pieces = list(pieces)
    threads = min(len(pieces), team_size())
    if threads <= 1 or not _busy.acquire(blocking=False):
        for piece in pieces:
            piece()
        return
    try:
        with own_threads:  # a no-op inside a layer call; keeps OpenBLAS's own pool out
            while len(_helpers) < threads - 1:
                _helpers.append(_Helper())
            shares = [pieces[i::threads] for i in range(threads)]
            errors = []
            for helper, share in zip(_helpers, shares[1:]):
                helper.hand(_guarded(share, errors))
            try:
                for piece in shares[0]:
                    piece()
            finally:  # wait for every helper even if this thread's share failed
                for helper in _helpers[: threads - 1]:
                    helper.join()
            if errors:
                raise errors[0]
    finally:
        _busy.release()


def _guarded(share, errors):
    def task():
        try:
            for piece in share:
                piece()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    return task
