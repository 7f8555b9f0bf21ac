"""`splitgrad compare-optimizers RECIPE`: one recipe, the same data, initial weights and batch
order, trained under six update rules, each at its usual learning rate; the loss curves in one
PNG and a table of final loss, test metrics and time.

Why these rates (PyTorch's other defaults, docs/semantics.md):
  SGD 0.01 and SGD with momentum 0.9 at 0.01: Keras's default rate, the textbook start for
    small networks (PyTorch has no meaningful default for SGD);
  Adagrad 0.01: Duchi et al.'s setting and PyTorch's default;
  Adadelta 1.0: Zeiler's rule has no learning rate at all (the update carries its own units);
    PyTorch's lr 1.0 is exactly that rule (Keras's 0.001 scales it down a thousandfold);
  RMSprop 0.001: Hinton's lecture (6e) and Keras's default (PyTorch's 0.01 is often too big);
  Adam 0.001: Kingma & Ba's suggested default, in PyTorch and Keras alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import optim, recipes
from ..callbacks import TerminateOnNaN
from ..plots import _pyplot
from ._runs import fit_recipe, fresh_model, setup

# (key for --optimizers, label, optimizer name, its arguments)
OPTIMIZERS = [
    ("sgd", "SGD", "sgd", {"learning_rate": 0.01}),
    ("momentum", "SGD + momentum 0.9", "sgd", {"learning_rate": 0.01, "momentum": 0.9}),
    ("adagrad", "Adagrad", "adagrad", {"learning_rate": 0.01}),
    ("adadelta", "Adadelta", "adadelta", {"learning_rate": 1.0}),
    ("rmsprop", "RMSprop", "rmsprop", {"learning_rate": 1e-3}),
    ("adam", "Adam", "adam", {"learning_rate": 1e-3}),
]


def compare_optimizers(
    name, quick=False, seed=0, epochs=None, batch_size=None, only=None, out=None, verbose=1
) -> dict:
    """Train recipe `name` once per optimizer (same data, initial weights and batch order);
    write optimizers.png (loss curves), optimizers.md (the table) and optimizers.json to `out`
    (runs/NAME-optimizers) and return {"rows": [...], "files": [...]}."""
    chosen = OPTIMIZERS
    if only:
        known = [key for key, *_ in OPTIMIZERS]
        unknown = [k for k in only if k not in known]
        if unknown:
            raise ValueError(f"--optimizers: unknown {unknown}; choose from {', '.join(known)}")
        chosen = [o for o in OPTIMIZERS if o[0] in only]
    recipe, settings, data = setup(name, quick, seed, epochs=epochs, batch_size=batch_size)
    rows = []
    for key, label, opt_name, kwargs in chosen:
        model = fresh_model(name, recipe, settings, data, seed)
        model.compile(
            optimizer=optim.get(opt_name, **kwargs),
            loss=model.loss,
            metrics=getattr(model, "metric_specs", None),
        )
        if verbose:
            print(f"{label}, learning rate {kwargs['learning_rate']:g}")
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            history = fit_recipe(model, recipe, data, settings, seed, [TerminateOnNaN()], verbose)
            seconds = time.perf_counter() - start
            test = recipes.recipe_metrics(recipe, model, data)
        rows.append(
            {
                "key": key,
                "optimizer": label,
                "learning_rate": kwargs["learning_rate"],
                "final_loss": history.history["loss"][-1],
                "test": test,
                "seconds": seconds,
                "history": history.history,
            }
        )
    out = Path(out or f"runs/{name}-optimizers")
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows)
    (out / "optimizers.md").write_text(table + "\n")
    (out / "optimizers.json").write_text(json.dumps(rows, indent=1, default=float))
    plot = plot_optimizers(
        rows, out / "optimizers.png", f"{name}: one recipe, {len(rows)} update rules"
    )
    return {"rows": rows, "table": table, "files": [out / "optimizers.md", plot]}


def format_table(rows) -> str:
    """A Markdown table: optimizer, rate, final training loss, test metrics, seconds."""
    names = list(rows[0]["test"])
    head = ["optimizer", "learning rate", "final train loss", *(f"test {n}" for n in names), "s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["optimizer"], f"{r['learning_rate']:g}", f"{r['final_loss']:.4f}"]
        cells += [f"{r['test'][n]:.4f}" for n in names] + [f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_optimizers(rows, path, title):
    """Training loss (and validation loss, when measured) per epoch, one line per optimizer."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = ["loss"] + (["val_loss"] if "val_loss" in rows[0]["history"] else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for r in rows:
            values = np.asarray(r["history"][key], dtype=np.float64)
            shown = np.where(np.isfinite(values), values, np.nan)  # a diverged run stops there
            epochs = np.arange(1, len(values) + 1)
            ax.plot(
                epochs, shown, marker="o", ms=3, label=f"{r['optimizer']} ({r['learning_rate']:g})"
            )
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss" if key == "val_loss" else "training loss")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
