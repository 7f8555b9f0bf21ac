"""Built-in recipes: one small readable module per recipe (data + model + training settings).

A recipe module defines DESCRIPTION, DEFAULTS (epochs, batch_size, learning_rate), QUICK
(overrides for a fast smoke run), TASK ("binary", "multiclass", "regression", "sequence"),
`load_data(quick, seed)` and `build_model(learning_rate, data)`. It may define
`fit(model, data, settings, verbose, way)` when it needs its own training loop (settings
then also hold the run's "seed"),
`saved_extra(data)` for JSON to keep with the saved model (e.g. a vocabulary), and keyword
options of `load_data` (e.g. `text=` for `--text FILE`), which are saved for `evaluate`.
`train(name, ...)` here runs any of them the same way and saves the result.
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
}


class UnknownRecipe(ValueError):
    """The recipe name is not in the registry."""


def compile_classifier(model, learning_rate):
    """Adam at `learning_rate`, cross-entropy on the model's logits and integer labels, accuracy:
    the training set-up the classifier recipes share. Returns the model."""
    from .. import losses, optim

    model.compile(optimizer=optim.Adam(learning_rate=learning_rate),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def get(name: str):
    """The recipe module for `name` (with a did-you-mean hint for typos)."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownRecipe(
            f"unknown recipe {name!r}.{hint} Run `splitgrad list` to see them all."
        )
    return importlib.import_module(RECIPES[name])


def settings_for(recipe, quick=False, **overrides) -> dict:
    """DEFAULTS, then QUICK when asked, then the user's non-None overrides."""
    settings = dict(recipe.DEFAULTS)
    if quick:
        settings.update(getattr(recipe, "QUICK", {}))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def test_metrics(recipe, model, data) -> dict:
    """The compiled loss and metrics on the test set, plus R² for regression."""
    out = model.evaluate(data.x_test, data.y_test, batch_size=256, return_dict=True)
    if getattr(recipe, "TASK", "") == "regression":
        pred = model.predict(data.x_test, batch_size=256).reshape(-1)
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


def train(name, epochs=None, batch_size=None, learning_rate=None, seed=0, out=None,
          quick=False, way=None, verbose=1, data_options=None) -> dict:
    """Train recipe `name`, save model + curves + metrics to `out`, return a summary."""
    from .. import random as sg_random
    from ..checkpoint import save_model
    from ..plots import plot_history

    recipe = get(name)
    settings = settings_for(recipe, quick, epochs=epochs, batch_size=batch_size,
                            learning_rate=learning_rate)
    sg_random.seed(seed)
    data, options = load_recipe_data(name, recipe, quick, seed, data_options)
    model = recipe.build_model(settings["learning_rate"], data)
    if hasattr(recipe, "fit"):
        history = recipe.fit(model, data, {**settings, "seed": seed}, verbose=verbose,
                             way=way)
    else:
        history = model.fit(data.x_train, data.y_train, batch_size=settings["batch_size"],
                            epochs=settings["epochs"], validation_split=0.1, seed=seed,
                            verbose=verbose, way=way)
    metrics = test_metrics(recipe, model, data)
    out = Path(out or f"runs/{name}")
    extra = {"recipe": name, "settings": settings, "seed": seed, "quick": quick,
             "test_metrics": metrics, "data_options": options}
    if hasattr(recipe, "saved_extra"):
        extra.update(recipe.saved_extra(data))
    save_model(model, out, extra=extra)
    (out / "history.json").write_text(json.dumps(history.history, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plot = plot_history(history.history, out / "curves.png", title=name)
    traffic = getattr(history, "traffic", None)
    return {"recipe": name, "out": str(out), "metrics": metrics, "plot": str(plot),
            "history": history.history, "traffic": traffic, "settings": settings}


def evaluate(path) -> dict:
    """Reload a saved recipe run and recompute its test metrics."""
    from ..checkpoint import CheckpointError, load_model

    model = load_model(path)
    extra = getattr(model, "saved_extra", {})
    if "recipe" not in extra:
        raise CheckpointError(f"{path}: this model was not saved by `splitgrad train`, so its "
                              "test data is unknown; evaluate it from Python instead")
    recipe = get(extra["recipe"])
    data, _ = load_recipe_data(extra["recipe"], recipe, extra.get("quick", False),
                               extra.get("seed", 0), extra.get("data_options"))
    return {"recipe": extra["recipe"], "metrics": test_metrics(recipe, model, data)}
