"""splitgrad's own thread team, for recurrent models: their time loops and the products around
them. (Not data parallelism: that is splitgrad/split/data_parallel.py.)

A recurrent layer's time loop runs best as one loop per slice of the batch, one per core (the
sequences of a batch never mix). OpenBLAS cannot help there, and worse, its worker threads spin
for about 0.1 s after each threaded call, holding the other core: a loop that starts while they
spin runs at half speed (measured: 0.76 ms instead of 0.42 ms per step of the music model). So
while a model with a recurrent layer runs, splitgrad does all the threading itself:

* `own_threads` sets the BLAS to one thread for its duration and remembers how many it had:
  that is the size of the team. A Model holding a layer that `wants_own_threads` enters it
  around its forward passes and training steps (decided once per model, model.py); each
  recurrent primitive also enters it around its own forward and backward (ops/recurrent.py),
  so a bare layer call or a hand-written loop runs right too.
* Inside it, `matmul` cuts a product of at least `_SPLIT_WORK` multiply-adds into row blocks, one
  per team member, and `run_pieces` runs such pieces on helper threads. NumPy lets go of the GIL
  inside matmul and ufunc loops, so the helpers really run in parallel. Outside it, `matmul` is
  plain np.matmul: for other models OpenBLAS's own threads are faster (they wake up sooner).

A place whose BLAS is set to one thread (a Ray worker) gets a team of one and runs everything in
order. Measured on the 2-core machine: the music model's training step 0.27 s → 0.19 s.
"""

from __future__ import annotations

import os
import threading

import numpy as np

_SPLIT_WORK = 1 << 21  # multiply-adds; below this a product runs as one single-thread call


class _Helper:
    """One daemon thread that runs the task it is handed and signals when it is done."""

    def __init__(self):
        self.task = None
        self.go = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        threading.Thread(target=self._loop, daemon=True, name="splitgrad-helper").start()

    def _loop(self):
        while True:
            self.go.acquire()
            try:
                self.task()
            finally:
                self.done.release()


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


def _blas_libraries():
    global _blas
    if _blas is None:
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
                libs = _blas_libraries()
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
                    for lib, n in zip(_blas_libraries(), _saved):
                        lib.set_num_threads(n)
                _team = 0
        return False


own_threads = _OwnThreads()


def in_own_threads() -> bool:
    """True inside an `own_threads` block (so nested layers need not look again)."""
    return _depth > 0


def team_size() -> int:
    """Threads to split work over: the team inside `own_threads`, else the BLAS's count."""
    if _depth:
        return _team
    return max((lib.get_num_threads() for lib in _blas_libraries()), default=1)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b with a 2-D `a` (b may be a stack of matrices); a big product is cut into row
    blocks of `a` that run on the team's threads."""
    m, k = a.shape
    n = b.shape[-1]
    if out is None:
        out = np.empty(b.shape[:-2] + (m, n), np.result_type(a, b))
    work = m * n * k * (b.size // max(1, k * n))
    if not _depth or _team < 2 or work < _SPLIT_WORK or m < 2 * _team:
        return np.matmul(a, b, out=out)
    run_pieces(product(a[rows], b, out[..., rows, :]) for rows in row_groups(m))
    return out


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
                helper.task = _guarded(share, errors)
                helper.go.release()
            try:
                for piece in shares[0]:
                    piece()
            finally:  # wait for every helper even if this thread's share failed
                for helper in _helpers[: threads - 1]:
                    helper.done.acquire()
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
