"""The landscape PNGs: a 1D curve (loss, and accuracy on a second axis), a 2D contour plot
(optionally with the training path drawn over it) and a 3D surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plots import _pyplot


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    _pyplot().close(fig)
    return path


def plot_curve(xs, values, names, path, title, xlabel, marks=None):
    """values[:, 0] (the loss) against xs, and an "accuracy" column on a right-hand axis;
    `marks` = {x: label} draws a dotted line at each x (the models)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot(xs, values[:, 0], color="tab:blue", marker=".", label=names[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(names[0], color="tab:blue")
    ax.grid(alpha=0.3)
    if "accuracy" in names:
        twin = ax.twinx()
        twin.plot(xs, values[:, names.index("accuracy")], color="tab:red", ls="--", marker=".")
        twin.set_ylabel("accuracy", color="tab:red")
        twin.set_ylim(-0.02, 1.02)
    for x, label in (marks or {}).items():
        ax.axvline(x, color="grey", ls=":", lw=1)
        ax.annotate(
            label,
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            ha="center",
            va="bottom",
        )
    ax.set_title(title, fontsize=10, pad=14 if marks else 6)
    return _save(fig, path)


def _levels(loss):
    """Contour levels spaced evenly in log(loss): dense near the minimum, where the shape is."""
    finite = loss[np.isfinite(loss)]
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return None
    lo = max(lo, hi * 1e-6, np.finfo(np.float64).tiny)
    return np.geomspace(lo, hi, 30)


def plot_contour(xs, ys, loss, path, title, xlabel, ylabel, path_xy=None):
    """Contour lines of loss[i, j] at (xs[j], ys[i]); the centre marked; `path_xy` (T, 2) drawn
    over it as the training path, from its first point (start) to its last."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    grid_x, grid_y = np.meshgrid(xs, ys)
    shown = np.where(np.isfinite(loss), loss, np.nanmax(np.where(np.isfinite(loss), loss, 0)))
    levels = _levels(shown)
    lines = ax.contour(grid_x, grid_y, shown, levels=levels, cmap="viridis", linewidths=0.8)
    fig.colorbar(lines, ax=ax, label="loss")
    ax.plot([0], [0], marker="*", color="black", ms=10, ls="none", label="trained model")
    if path_xy is not None:
        ax.plot(
            path_xy[:, 0],
            path_xy[:, 1],
            color="tab:red",
            marker="o",
            ms=3,
            lw=1.2,
            label="training path",
        )
        ax.plot(
            path_xy[:1, 0], path_xy[:1, 1], marker="s", color="tab:red", ls="none", label="start"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_surface(xs, ys, loss, path, title, xlabel="α", ylabel="β"):
    """The loss as a 3D surface over the grid."""
    plt = _pyplot()
    fig = plt.figure(figsize=(6.0, 4.8))
    ax = fig.add_subplot(projection="3d")
    grid_x, grid_y = np.meshgrid(xs, ys)
    finite = np.isfinite(loss)
    top = float(loss[finite].max()) if finite.any() else 1.0
    ax.plot_surface(
        grid_x, grid_y, np.where(finite, loss, top), cmap="viridis", linewidth=0, antialiased=True
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_zlabel("loss")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
