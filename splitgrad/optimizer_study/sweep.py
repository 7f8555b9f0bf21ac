"""`splitgrad lr-sweep RECIPE`: the LR range test (Smith 2017). The learning rate grows by the
same factor every step of a short run (an `ExponentialDecay` schedule with a rate above 1); a
callback records each step's loss and stops the run cleanly once it diverges. The plot shows
the loss against the rate, and runs at a rate too small, at the suggested one and at a
divergent one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import optim
from ..plots import _pyplot
from ..schedules import ExponentialDecay
from ._runs import StepLosses, fresh_model, setup, steps_run


def lr_range_test(
    name,
    quick=False,
    seed=0,
    start_lr=1e-7,
    end_lr=10.0,
    steps=100,
    optimizer=None,
    divergence=4.0,
    out=None,
    verbose=1,
) -> dict:
    """The LR range test (Smith 2017): lr grows from `start_lr` to `end_lr` by the same factor
    every step; the loss is recorded until it diverges: NaN, or the smoothed loss above
    `divergence` × its minimum or back above where it started (`StepLosses`). Suggested rate:
    a tenth of the rate at the minimum (never below `start_lr`), safely below the point of
    divergence. Then the recipe trains `steps` steps at a rate too small (the suggestion
    / 100), at the suggestion and at the divergent rate, for the plot. Writes lr_sweep.png
    and lr_sweep.json to `out` (runs/NAME-lr-sweep)."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr-sweep: need 0 < --start < --end, got {start_lr:g} and {end_lr:g}")
    if steps < 3:
        raise ValueError(f"lr-sweep: --steps must be at least 3, got {steps}")
    recipe, settings, data = setup(name, quick, seed)
    bar = _bar(steps, "LR range test", verbose)
    model = _model_for_sweep(name, recipe, settings, data, seed, optimizer)
    growth = (end_lr / start_lr) ** (1.0 / (steps - 1))
    model.optimizer.learning_rate = ExponentialDecay(start_lr, decay_steps=1, decay_rate=growth)
    # Smooth over about a tenth of the run: fastai's 0.98 suits 100s of steps but lags a
    # short sweep so far that a blow-up lasting a few steps goes unseen.
    beta = min(0.98, max(0.5, 1.0 - 10.0 / steps))
    record = StepLosses(divergence, beta, bar)
    sweep = steps_run(model, recipe, data, settings, seed, steps, record)
    bar.close()
    rates, smoothed = np.array(sweep.rates), np.array(sweep.smoothed)
    best = int(np.argmin(np.where(np.isfinite(smoothed), smoothed, np.inf)))
    suggestion = max(rates[0], rates[best] / 10.0)
    result = {
        "recipe": name,
        "optimizer": type(model.optimizer).__name__,
        "rates": sweep.rates,
        "losses": sweep.losses,
        "smoothed": sweep.smoothed,
        "minimum_at": float(rates[best]),
        "diverged_at": sweep.diverged_at,
        "suggestion": float(suggestion),
        "tested": [float(rates[0]), float(rates[-1])],  # up to where the run stopped
        "planned": [float(start_lr), float(end_lr)],
    }
    chosen = {
        "too small": max(start_lr, suggestion / 100.0),
        "good": suggestion,
        "too large": sweep.diverged_at if sweep.diverged_at is not None else end_lr,
    }
    result["runs"] = {}
    for label, rate in chosen.items():
        model = _model_for_sweep(name, recipe, settings, data, seed, optimizer)
        model.optimizer.learning_rate = float(rate)
        bar = _bar(steps, f"lr {rate:.3g} ({label})", verbose)
        run = steps_run(model, recipe, data, settings, seed, steps, StepLosses(bar=bar))
        bar.close()
        result["runs"][label] = {"rate": float(rate), "losses": run.losses}
    out = Path(out or f"runs/{name}-lr-sweep")
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_sweep.json").write_text(json.dumps(result, indent=1))
    result["files"] = [out / "lr_sweep.json", plot_sweep(result, out / "lr_sweep.png")]
    return result


def _model_for_sweep(name, recipe, settings, data, seed, optimizer):
    model = fresh_model(name, recipe, settings, data, seed)
    if optimizer is not None:
        specs = getattr(model, "metric_specs", None)
        model.compile(optimizer=optim.get(optimizer), loss=model.loss, metrics=specs)
    return model


def _bar(total, desc, verbose):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not verbose, dynamic_ncols=True)


def plot_sweep(result, path):
    """Left: loss against the growing rate, with the three rates marked and the divergent
    range shaded. Right: the loss of a run at each of the three rates, step by step."""
    plt = _pyplot()
    colors = {"too small": "tab:orange", "good": "tab:green", "too large": "tab:red"}
    rates = np.array(result["rates"])
    losses = np.array(result["losses"], dtype=np.float64)
    smoothed = np.array(result["smoothed"], dtype=np.float64)
    finite = losses[np.isfinite(losses)]
    top = 1.5 * max(finite[0], float(np.min(smoothed))) if finite.size else 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(
        rates,
        np.where(np.isfinite(losses), losses, np.nan),
        color="grey",
        alpha=0.4,
        label="loss of each step",
    )
    left.plot(
        rates, np.where(np.isfinite(smoothed), smoothed, np.nan), color="black", label="smoothed"
    )
    if result["diverged_at"] is not None:
        left.axvspan(
            result["diverged_at"],
            result["planned"][1],
            color="tab:red",
            alpha=0.1,
            label="diverges",
        )
    for label, run in result["runs"].items():
        left.axvline(run["rate"], color=colors[label], ls="--", label=f"{label}: {run['rate']:.2g}")
        steps = np.arange(1, len(run["losses"]) + 1)
        shown = np.where(np.isfinite(run["losses"]), run["losses"], np.nan)
        right.plot(steps, shown, color=colors[label], label=f"lr {run['rate']:.2g} ({label})")
    left.set_xscale("log")
    left.set_xlim(*result["planned"])
    left.set_ylim(0.0, top)
    left.set_xlabel("learning rate (grows every step)")
    left.set_ylabel("training loss")
    left.set_title(
        f"LR range test, {result['optimizer']}: suggested {result['suggestion']:.2g}", fontsize=10
    )
    left.legend(fontsize=7)
    right.set_ylim(0.0, top)
    right.set_xlabel("step")
    right.set_ylabel("training loss")
    right.set_title("training at a fixed rate: too small, good, too large", fontsize=10)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(result["recipe"])
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
