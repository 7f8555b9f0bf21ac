"""Many products of a few rows with one big weight, as in a recurrent layer's time loop.

A recurrent layer multiplies the batch's state by the same weight on every time step:
h (B, K) @ W (K, N), with B = 8 rows and W 1024 × 4096 in the course's music model. For every
call OpenBLAS first copies ("packs") all of W into its own blocked layout; with 8 rows that copy
costs more than the arithmetic, and it is repeated 100 times a sequence.

`PanelMatmul` copies W once, into panels of at most 1024 × 64 stored one after another. A panel
product is small enough for OpenBLAS's copy-free small-matrix kernel, so each step does only the
arithmetic. With K > 1024 the panels also split K, and the partial products are summed. One
PanelMatmul may be called from several threads at once (each with its own rows): they share the
panels, which then stay in the shared L3 cache.

Measured on this project's 2-core machine (OpenBLAS 0.3.31, float32, one thread): one
(8 × 1024)·(1024 × 4096) step takes 1.6 ms as one matmul (2 BLAS threads) and 0.7 ms over
panels; the backward (8 × 4096)·(4096 × 1024) likewise.

That small-matrix kernel is OpenBLAS's AVX-512 one (its SkylakeX family of kernels). Where
OpenBLAS runs another kernel (OPENBLAS_CORETYPE=Haswell, or an older CPU) a panel product goes
through the ordinary packing path, and the panels lose: 100 of those steps took 125 ms over
panels and 68 ms as plain matmuls (benchmarks/roofline.py). So panels are used only where the
BLAS reports an AVX-512 kernel (`small_kernel`).

Without panels, a big W is better split by columns than the batch by rows: when each of the
team's threads multiplies its own rows by all of W, each packs all of W, twice the copying of
one product. `ColumnSplit` has every thread multiply all the rows by its own block of W's
columns, so together they pack W once; the layer then runs one time loop (its elementwise gate
math on one thread, which costs less than the copy saved). Measured under
OPENBLAS_CORETYPE=Haswell, 100 steps of (8 × 1024)·(1024 × 4096) on 2 threads: 121-152 ms with
4 rows a thread, 66-73 ms with 2048 columns a thread; (8 × 4096)·(4096 × 1024) 121 → 76 ms;
(32 × 1024)·(1024 × 4096) 219 → 164 ms. With 64 rows or a W under 4 MiB (W3b's 256 × 1024)
the gain is gone, so `column_split` asks for ≤ 32 rows and ≥ 2^20 elements.
"""

from __future__ import annotations

import numpy as np

from .thread_team import product, row_groups, run_pieces, team_size
from .workspace import empty

_PANEL_K = 1024  # rows of W per panel (the largest that keeps the small kernel fast)
_PANEL_WIDTHS = (64, 32, 16)  # columns per panel, widest first
_MAX_ROWS = 16  # beyond this many rows the packing is paid back: one plain matmul wins
_MIN_WEIGHT = 1 << 18  # elements (1 MiB in float32); a smaller W packs cheaply
_COLUMN_MIN_WEIGHT = 1 << 20  # elements (4 MiB in float32) from which ColumnSplit pays
_COLUMN_MAX_ROWS = 32  # beyond this the one-thread gate math costs more than the copy saved


_SMALL_KERNEL_CORES = ("skylakex", "cooperlake", "sapphirerapids")  # OpenBLAS's AVX-512 cores
_small = []  # [bool], decided at the first PanelMatmul


def small_kernel() -> bool:
    """True when NumPy's BLAS is OpenBLAS running one of its AVX-512 kernels, which have the
    copy-free small-matrix path that panels rely on."""
    if not _small:
        from .thread_team import blas_libraries

        cores = [str(getattr(lib, "architecture", "")).lower() for lib in blas_libraries()]
        _small.append(bool(cores) and all(core in _SMALL_KERNEL_CORES for core in cores))
    return _small[0]


def plan(k: int, n: int, rows: int, dtype=np.float32, small=True):
    """(panel rows, panel columns) for h (rows, k) @ W (k, n), or None for one plain matmul.
    Only float32 was measured faster over panels, so other dtypes keep the plain product; and
    only with the BLAS's small-matrix kernel (`small`, see `small_kernel`)."""
    if not small or np.dtype(dtype) != np.float32 or rows > _MAX_ROWS or k * n < _MIN_WEIGHT:
        return None
    most = _PANEL_K if rows <= 8 else _PANEL_K // 2  # measured: more rows, shorter panels
    kc = k if k <= most else next((c for c in (1024, 512, 256) if c <= most and k % c == 0), None)
    width = next((w for w in _PANEL_WIDTHS if n % w == 0), None)
    if kc is None or width is None:
        return None
    return kc, width


class PanelMatmul:
    """x @ w for many x of `rows` rows and one fixed w (K, N); `w` may be a transposed view.

    `pm(x, out)` writes x @ w into `out` (rows, N) and returns it. The panels are a snapshot:
    build a new PanelMatmul after w changes (once per forward or backward pass); with a
    `workspace` the panel buffer is reused once the previous PanelMatmul is gone.
    """

    def __init__(self, w: np.ndarray, rows: int, workspace=None):
        k, n = w.shape
        self.layout = plan(k, n, rows, w.dtype, small_kernel())
        if self.layout is None:
            # One plain matmul per step; a transposed view is copied once, because the
            # per-step product runs about twice as fast on contiguous rows.
            self.w = np.ascontiguousarray(w)
            return
        kc, width = self.layout
        nk, nb = k // kc, n // width
        # panels[i, j] = w[i·kc:(i+1)·kc, j·width:(j+1)·width], each one contiguous.
        self.panels = empty(workspace, (nk, nb, kc, width), w.dtype)  # reused across steps
        src = w.reshape(nk, kc, nb, width).transpose(0, 2, 1, 3)
        if w.strides[0] < w.strides[1]:
            # w is a transposed view (W_hhᵀ for backward). NumPy copies a transposed array one
            # element at a time (13 ms for 1024 × 4096); a product with the identity lets BLAS's
            # packing routines do the same copy in 5 ms, and x·1 + 0·y is exactly x for finite y.
            eye = np.eye(width, dtype=w.dtype)
            run_pieces(product(src[:, cols], eye, self.panels[:, cols]) for cols in row_groups(nb))
        else:
            np.copyto(self.panels, src)

    def __call__(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.layout is None:
            return np.matmul(x, self.w, out=out)
        kc, width = self.layout
        nk, nb = self.panels.shape[:2]
        rows = x.shape[0]
        xk = x.reshape(rows, nk, kc).transpose(1, 0, 2)[:, None]  # (nk, 1, rows, kc)
        # out viewed panel by panel: (nb, rows, width), so results land without a copy.
        out_panels = out.reshape(rows, nb, width).transpose(1, 0, 2)
        if nk == 1:
            np.matmul(xk[0], self.panels[0], out=out_panels)
        else:
            partial = np.empty((nk, nb, rows, width), out.dtype)  # small: rows × N × nk
            np.matmul(xk, self.panels, out=partial)
            np.add.reduce(partial, axis=0, out=out_panels)
        return out


def column_split(w: np.ndarray, rows: int) -> bool:
    """True when h (rows, K) @ w should run as a `ColumnSplit` (one time loop over all rows):
    no panels for it, a team of two or more, a big w and few rows (the module docstring)."""
    k, n = w.shape
    return (
        plan(k, n, rows, w.dtype, small_kernel()) is None
        and team_size() > 1
        and k * n >= _COLUMN_MIN_WEIGHT
        and rows <= _COLUMN_MAX_ROWS
        and n >= 2 * team_size()
    )


class ColumnSplit:
    """x @ w for many x and one fixed w (K, N): each team member computes all of x's rows for
    its own block of w's columns (views: nothing is copied). `cs(x, out)` returns out."""

    def __init__(self, w: np.ndarray):
        self.w, self.blocks = w, row_groups(w.shape[1])

    def __call__(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        run_pieces(product(x, self.w[:, cols], out[:, cols]) for cols in self.blocks)
        return out
