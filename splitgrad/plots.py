"""Plots a person would rather look at than read: training curves (matplotlib, no screen)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: these machines have no display
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: dict, path, title="training"):
    """One panel per quantity (loss, accuracy, ...), training and validation curves together.

    `path` is a file name or a binary file object (PNG either way); returns it. Quantities
    that never change (e.g. the clients taking part in every federated round) get no panel,
    unless nothing else is left to show."""
    plt = _pyplot()
    names = [k for k in history if not k.startswith("val_")]
    changing = [k for k in names if len(set(history[k])) > 1 or f"val_{k}" in history]
    names = changing or names
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    if not hasattr(path, "write"):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path
