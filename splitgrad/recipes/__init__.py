"""Built-in recipes: one small readable module per recipe (data + model + training settings).

A recipe module defines DESCRIPTION, DEFAULTS (epochs, batch_size, learning_rate), QUICK
(overrides for a fast smoke run), TASK ("binary", "multiclass", "regression", "sequence",
"generative", "reinforcement"),
`load_data(quick, seed)` and `build_model(learning_rate, data)`. It may define
`batches(data, settings)`, a batch source for `Model.fit` when it does not train on the arrays
data.x_train, data.y_train (the language models draw random text windows and validate on
data.x_test, data.y_test when the data has them), `fit_options(model, data, settings)`, which
may set the optimizer's schedule and returns extra keyword arguments for `Model.fit`
(callbacks), `evaluate(model, data)` for test metrics other than the compiled loss and
metrics on data.x_test (e.g. the mean return of a policy), `attachments(model, data, history)`
for more files to keep in the run folder ({name: bytes}, e.g. PNG grids of samples),
`saved_extra(data)` for JSON to keep with the saved model (e.g. a
vocabulary), and keyword options of `load_data` (e.g. `text=` for `--text FILE`), which are
saved for `evaluate`. `train(name, ...)` here runs any of them through the same `Model.fit`
and saves the result.
"""

from __future__ import annotations

import difflib
import importlib
import json
from pathlib import Path

import numpy as np

RECIPES = {
    "perceptron": "splitgrad.recipes.perceptron",
    "regression": "splitgrad.recipes.regression",
    "digits-mlp": "splitgrad.recipes.digits_mlp",
    "digits-cnn": "splitgrad.recipes.digits_cnn",
    "fashion-mlp": "splitgrad.recipes.fashion_mlp",
    "fashion-cnn": "splitgrad.recipes.fashion_cnn",
    "irish-lstm": "splitgrad.recipes.irish_lstm",
    "next-word": "splitgrad.recipes.next_word",
    "autoencoder": "splitgrad.recipes.autoencoder",
    "vae": "splitgrad.recipes.vae",
    "gan": "splitgrad.recipes.gan",
    "cartpole-pg": "splitgrad.recipes.cartpole_pg",
    "cartpole-dqn": "splitgrad.recipes.cartpole_dqn",
}


class UnknownRecipe(ValueError):
    """The recipe name is not in the registry."""


def compile_classifier(model, learning_rate):
    """Adam at `learning_rate`, cross-entropy on the model's logits and integer labels, accuracy:
    the training set-up the classifier recipes share. Returns the model."""
    from .. import losses, optim

    model.compile(
        optimizer=optim.Adam(learning_rate=learning_rate),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def get(name: str):
    """The recipe module for `name` (with a did-you-mean hint for typos)."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownRecipe(f"unknown recipe {name!r}.{hint} Run `splitgrad list` to see them all.")
    return importlib.import_module(RECIPES[name])


def settings_for(recipe, quick=False, **overrides) -> dict:
    """DEFAULTS, then QUICK when asked, then the user's non-None overrides."""
    settings = dict(recipe.DEFAULTS)
    if quick:
        settings.update(getattr(recipe, "QUICK", {}))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def eval_batch(recipe) -> int:
    """How many held-out examples `recipe`'s model evaluates at once (validation and test): its
    training batch, so that those passes reuse the training step's buffers instead of adding
    their own. In batches of 256, fashion-cnn's test pass added 55 MB to the peak memory, and
    the music model's held about 0.8 GB of LSTM activations."""
    return getattr(recipe, "DEFAULTS", {}).get("batch_size", 32)


def test_metrics(recipe, model, data) -> dict:
    """The compiled loss and metrics on the test set, plus R² for regression."""
    batch = eval_batch(recipe)
    out = model.evaluate(data.x_test, data.y_test, batch_size=batch, return_dict=True)
    if getattr(recipe, "TASK", "") == "regression":
        pred = model.predict(data.x_test, batch_size=batch).reshape(-1)
        y = np.asarray(data.y_test, dtype=np.float64).reshape(-1)
        out["r2"] = float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return {k: float(v) for k, v in out.items()}


def load_recipe_data(name, recipe, quick, seed, options=None):
    """recipe.load_data(quick, seed, **options); options it does not take are a clear error."""
    import inspect

    options = {k: v for k, v in (options or {}).items() if v is not None}
    accepted = inspect.signature(recipe.load_data).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ValueError(f"recipe {name!r} does not take {flags}")
    return recipe.load_data(quick=quick, seed=seed, **options), options


def fit_recipe(
    recipe, model, data, settings, seed, verbose=0, way=None, callbacks=(), options=True
):
    """`Model.fit` on a recipe's data, the one way every command trains a recipe: its batch
    source (or x_train with the last 10 % for validation), its settings and seed, its
    `fit_options` (schedule, callbacks) unless `options=False`, plus `callbacks`."""
    fit_kw = (
        recipe.fit_options(model, data, settings)
        if options and hasattr(recipe, "fit_options")
        else {}
    )
    fit_kw["callbacks"] = [*fit_kw.get("callbacks", []), *callbacks]
    if hasattr(recipe, "batches"):
        held_out = getattr(data, "x_test", None)
        return model.fit(
            recipe.batches(data, settings),
            epochs=settings["epochs"],
            validation_data=None if held_out is None else (held_out, data.y_test),
            verbose=verbose,
            validation_batch_size=eval_batch(recipe),
            way=way,
            **fit_kw,
        )
    return model.fit(
        data.x_train,
        data.y_train,
        batch_size=settings["batch_size"],
        epochs=settings["epochs"],
        validation_split=0.1,
        seed=seed,
        verbose=verbose,
        way=way,
        **fit_kw,
    )


def out_folder(name, out=None) -> Path:
    """Where `train` saves recipe `name`: `out`, or runs/NAME."""
    return Path(out or f"runs/{name}")


def train(
    name,
    epochs=None,
    batch_size=None,
    learning_rate=None,
    seed=0,
    out=None,
    quick=False,
    way=None,
    verbose=1,
    data_options=None,
    overwrite=False,
    tensorboard=None,
) -> dict:
    """Train recipe `name`; save the model with its history.json, metrics.json and curves.png
    to `out` (one checkpoint, replaced atomically); return a summary. A folder at `out` that
    holds anything else is refused before training unless `overwrite=True`. `tensorboard`: a
    folder for TensorBoard event files (the TensorBoard callback, histograms every epoch)."""
    import io

    from .. import random as sg_random
    from ..checkpoint import check_target, save_model
    from ..plots import plot_history

    recipe = get(name)
    settings = settings_for(
        recipe, quick, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate
    )
    out = out_folder(name, out)
    check_target(out, overwrite=overwrite)
    sg_random.seed(seed)
    data, options = load_recipe_data(name, recipe, quick, seed, data_options)
    model = recipe.build_model(settings["learning_rate"], data)
    watch = ()
    if tensorboard:
        from ..callbacks import TensorBoard

        watch = (TensorBoard(tensorboard, histogram_freq=1),)
    history = fit_recipe(
        recipe, model, data, settings, seed, verbose=verbose, way=way, callbacks=watch
    )
    metrics = recipe_metrics(recipe, model, data)
    extra = {
        "recipe": name,
        "settings": settings,
        "seed": seed,
        "quick": quick,
        "test_metrics": metrics,
        "data_options": options,
    }
    if hasattr(recipe, "saved_extra"):
        extra.update(recipe.saved_extra(data))
    curves = io.BytesIO()
    plot_history(history.history, curves, title=name)
    traffic = getattr(history, "traffic", None)
    if traffic is not None:  # a split run: what crossed, its formula, recoveries, privacy
        metrics = {**metrics, "split": _split_summary(traffic)}
    files = {
        "history.json": json.dumps(history.history, indent=1).encode(),
        "metrics.json": json.dumps(metrics, indent=1, default=float).encode(),
        "curves.png": curves.getvalue(),
    }
    if hasattr(recipe, "attachments"):
        files.update(recipe.attachments(model, data, history))
    save_model(model, out, extra=extra, overwrite=overwrite, attachments=files)
    return {
        "recipe": name,
        "out": str(out),
        "metrics": metrics,
        "plot": str(out / "curves.png"),
        "history": history.history,
        "traffic": traffic,
        "settings": settings,
    }


def evaluate(path) -> dict:
    """Reload a saved recipe run and recompute its test metrics."""
    from ..checkpoint import CheckpointError, load_model, saved_extra

    extra = saved_extra(path)
    if "recipe" not in extra:
        raise CheckpointError(
            f"{path}: this model was not saved by `splitgrad train`, so its "
            "test data is unknown; evaluate it from Python instead"
        )
    recipe = get(extra["recipe"])  # imported first: it registers the model classes it uses
    model = load_model(path)
    data, _ = load_recipe_data(
        extra["recipe"],
        recipe,
        extra.get("quick", False),
        extra.get("seed", 0),
        extra.get("data_options"),
    )
    return {"recipe": extra["recipe"], "metrics": recipe_metrics(recipe, model, data)}


def _split_summary(report: dict) -> dict:
    """What metrics.json keeps of a split run's traffic report: its numbers and names, the
    per-kind tallies, and the recoveries and elastic events (not per-round details)."""

    def small(v):
        return isinstance(v, (int, float, str)) or (
            isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values())
        )

    return {k: v for k, v in report.items() if small(v) or k in ("recoveries", "elastic")}


def recipe_metrics(recipe, model, data) -> dict:
    """The recipe's own `evaluate(model, data)` if it has one, else `test_metrics`."""
    if hasattr(recipe, "evaluate"):
        return {k: float(v) for k, v in recipe.evaluate(model, data).items()}
    return test_metrics(recipe, model, data)
