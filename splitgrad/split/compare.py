"""`compare`: one recipe trained on one place and then under every registered way, side by side.

For each run it sets loss/accuracy, the optimizer steps (or federated rounds) it took, wall
time, measured bytes next to the way's formula, and the largest weight difference from the
single-place run next to what the way says to expect (`Way.expectation`: equivalent or not, and
why). Writes compare.md and compare.png.

By default every run gets the same epochs, which is not the same work: a federated round is
one step per epoch. A budget makes rows compare like with like: `budget_steps=N` trains every
run for N optimizer steps (N rounds for federated ways), `target_accuracy=A` trains each until
its test accuracy reaches A (or `max_epochs`) and reports the steps and time it took.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .base import NotApplicable
from .registry import WAYS, make_way

SINGLE_NOTE = "the reference run"


def _recipe(recipe):
    """(build(quick, seed) -> (model, data), settings) for a recipe name, module or function."""
    if callable(recipe):
        return recipe, {}
    if isinstance(recipe, str):
        from .. import recipes

        module = recipes.get(recipe)
    else:
        module = recipe
    if hasattr(module, "build"):
        return module.build, getattr(module, "DEFAULTS", {})

    def build(quick, seed):
        from .. import random as sg_random
        from .. import recipes

        settings = recipes.settings_for(module, quick)
        sg_random.seed(seed)
        data = module.load_data(quick=quick, seed=seed)
        return module.build_model(settings["learning_rate"], data), data

    from .. import recipes as recipes_mod

    return build, recipes_mod.settings_for(module, True)


def compare(
    recipe,
    places: int = 2,
    quick: bool = True,
    seed: int = 0,
    out="runs/compare",
    ways=None,
    ray: bool = False,
    epochs=None,
    batch_size=None,
    verbose=True,
    budget_steps=None,
    target_accuracy=None,
    max_epochs=50,
) -> list:
    """Train `recipe` on one place, then under each implemented way; print and save a table.

    Returns the rows (dicts). Writes `out/compare.md` and `out/compare.png`.
    """
    build, settings = _recipe(recipe)
    epochs = epochs or settings.get("epochs", 2)
    batch_size = batch_size or settings.get("batch_size", 32)
    where = None
    if ray:
        from .places import RayPlaces, actors_for

        where = RayPlaces(actors_for(places))
    # The ways that train on a dataset (not the acting way, which needs an environment).
    names = ways or [n for n, c in WAYS.items() if c.trains_on == "arrays"]
    rows, skipped = [], []
    baseline = None
    for name in [None, *names]:
        model, data = build(quick, seed)
        way = None if name is None else make_way(name, places, where=where)
        budget = _Budget(budget_steps, target_accuracy)
        steps_per_epoch = -(-len(data.x_train) // batch_size)
        if budget_steps:  # enough epochs for the budget whatever a way counts as a step
            run_epochs = max(1, budget_steps)
        else:
            run_epochs = max_epochs if target_accuracy else epochs
        start = time.perf_counter()
        try:
            history = model.fit(
                data.x_train,
                data.y_train,
                batch_size=batch_size,
                epochs=run_epochs,
                seed=seed,
                verbose=0,
                way=way,
                shuffle=True,
                callbacks=[budget],
                validation_data=(data.x_test, data.y_test) if target_accuracy else None,
            )
        except NotApplicable as reason:
            skipped.append((name, str(reason)))
            if verbose:
                print(f"{name:<18} not applicable to this model: {reason}", flush=True)
            continue
        wall = time.perf_counter() - start
        scores = model.evaluate(data.x_test, data.y_test, batch_size=256, return_dict=True)
        weights = model.get_weights()
        if baseline is None:
            baseline = weights
        traffic = getattr(history, "traffic", None) or {}
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, baseline))
        steps = traffic.get("steps", budget.steps)
        unit = getattr(way, "unit", "step")
        should_match, note = (True, SINGLE_NOTE) if way is None else way.expectation(model)
        rows.append(
            {
                "way": name or "single place",
                "loss": float(scores.get("loss", np.nan)),
                "accuracy": float(scores.get("accuracy", np.nan)),
                "wall_s": wall,
                "steps": int(steps),
                "unit": unit,
                "epochs": len(history.epoch),
                "reached": budget.reached if target_accuracy else None,
                "bytes": traffic.get("total_bytes", 0),
                "textbook": traffic.get("textbook_bytes", 0),
                "max_weight_diff": diff,
                "should_match": should_match,
                "note": note,
            }
        )
        if verbose:
            print(_format_row(rows[-1]), flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = _title(recipe, places, ray, budget_steps, target_accuracy, epochs, steps_per_epoch)
    text = markdown(rows, title)
    if skipped:
        text += "\nNot applicable to this model:\n\n" + "".join(
            f"- {name}: {reason}\n" for name, reason in skipped
        )
    (out / "compare.md").write_text(text)
    plot(rows, out / "compare.png", title)
    if verbose:
        print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")
    return rows


class _Budget:
    """Counts a run's steps (rounds for a federated way) and stops it at the step budget or
    once its validation accuracy reaches the target."""

    def __init__(self, steps=None, accuracy=None):
        self.limit, self.accuracy = steps, accuracy
        self.steps, self.reached = 0, False

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.limit and self.steps >= self.limit:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.accuracy and (logs or {}).get("val_accuracy", 0.0) >= self.accuracy:
            self.reached = True
            self.model.stop_training = True


def _title(recipe, places, ray, budget_steps, target_accuracy, epochs, steps_per_epoch):
    name = recipe if isinstance(recipe, str) else getattr(recipe, "__name__", "recipe")
    where = f"{places} places ({'Ray' if ray else 'inline'})"
    if budget_steps:
        budget = f"{budget_steps} optimizer steps each (rounds for federated ways)"
    elif target_accuracy:
        budget = f"each trained until test accuracy {target_accuracy:g}"
    else:
        budget = (
            f"{epochs} epochs each ({epochs * steps_per_epoch} steps one place, "
            f"{epochs} rounds federated: not the same work)"
        )
    return f"{name}: every way, {where}, {budget}"


def _format_row(r):
    book = "-" if r["textbook"] is None else f"{int(r['textbook']):,}"
    match = f"{r['max_weight_diff']:.2e}" + (" (should be ~0)" if r["should_match"] else "")
    reached = "" if r.get("reached") is None else ("  reached" if r["reached"] else "  NOT reached")
    return (
        f"{r['way']:<18} loss {r['loss']:.4f}  acc {r['accuracy']:.4f}  "
        f"{r['steps']:>5} {r['unit']}s{reached}  "
        f"{r['wall_s']:6.2f} s  bytes {r['bytes']:>14,} (formula {book:>14})  "
        f"max |dw| {match}" + (f"\n{'':<18} {r['note']}" if r.get("note") else "")
    )


def markdown(rows, title) -> str:
    lines = [
        f"# {title}",
        "",
        (
            "| way | loss | accuracy | steps | wall s | bytes measured | bytes formula | "
            "max weight diff | should match | why |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        book = "-" if r["textbook"] is None else f"{int(r['textbook']):,}"
        steps = f"{r['steps']} {r['unit']}s" + (
            "" if r.get("reached") is None else (" (reached)" if r["reached"] else " (not reached)")
        )
        lines.append(
            f"| {r['way']} | {r['loss']:.4f} | {r['accuracy']:.4f} | {steps} | "
            f"{r['wall_s']:.2f} | {r['bytes']:,} | {book} | "
            f"{r['max_weight_diff']:.2e} | {'yes' if r['should_match'] else 'no'} | "
            f"{r.get('note', '')} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path, title=""):
    """Three panels per way: MB crossed (measured next to the formula), test accuracy, wall
    time; the title says what budget every run had."""
    from ..plots import _pyplot

    plt = _pyplot()
    names = [r["way"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    x = np.arange(len(rows))
    axes[0].bar(x - 0.2, [r["bytes"] / 1e6 for r in rows], 0.4, label="measured")
    axes[0].bar(x + 0.2, [(r["textbook"] or 0) / 1e6 for r in rows], 0.4, label="formula")
    axes[0].set_ylabel("MB crossed")
    axes[0].legend()
    axes[1].bar(x, [r["accuracy"] for r in rows])
    axes[1].set_ylabel("test accuracy")
    axes[2].bar(x, [r["wall_s"] for r in rows])
    axes[2].set_ylabel("wall time (s)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=45, ha="right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
