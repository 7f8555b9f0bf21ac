"""The foundation's built-in recipes at full size reach their accuracy bars, and the recipe
contract (DEFAULTS, QUICK, settings, the saved run) holds.
"""

from __future__ import annotations

import json

import pytest

from splitgrad import recipes
from splitgrad.checkpoint import load_model

# (recipe, metric, bar): the targets on the fixed, seeded test split.
BARS = [
    ("perceptron", "accuracy", 0.95),
    ("digits-mlp", "accuracy", 0.96),
    ("regression", "r2", 0.4),
]


@pytest.mark.parametrize("name, metric, bar", BARS)
def test_full_recipe_reaches_its_bar(tmp_path, name, metric, bar):
    result = recipes.train(name, out=tmp_path / name, verbose=0)
    assert result["metrics"][metric] >= bar, result["metrics"]
    settings = recipes.get(name).DEFAULTS
    assert result["settings"] == settings
    assert len(result["history"]["loss"]) == settings["epochs"]
    assert json.loads((tmp_path / name / "metrics.json").read_text()) == result["metrics"]


def test_a_seeded_recipe_run_is_reproducible_and_reloads(tmp_path):
    first = recipes.train("perceptron", out=tmp_path / "a", verbose=0, seed=3)
    second = recipes.train("perceptron", out=tmp_path / "b", verbose=0, seed=3)
    assert first["history"] == second["history"]
    assert first["metrics"] == second["metrics"]
    assert recipes.evaluate(tmp_path / "a")["metrics"] == first["metrics"]
    loaded = load_model(tmp_path / "a")
    assert loaded.saved_extra["test_metrics"] == first["metrics"]


@pytest.mark.parametrize("name", [b[0] for b in BARS])
def test_recipe_module_contract(name):
    module = recipes.get(name)
    assert module.__doc__ and module.DESCRIPTION
    assert set(module.DEFAULTS) == {"epochs", "batch_size", "learning_rate"}
    assert module.QUICK["epochs"] < module.DEFAULTS["epochs"]
    assert module.TASK in ("binary", "multiclass", "regression")


def test_settings_merge_defaults_quick_and_overrides():
    module = recipes.get("digits-mlp")
    assert recipes.settings_for(module) == module.DEFAULTS
    quick = recipes.settings_for(module, quick=True, batch_size=None, learning_rate=0.5)
    assert quick == {**module.DEFAULTS, **module.QUICK, "learning_rate": 0.5}


def test_unknown_recipe_suggests_the_closest_name():
    with pytest.raises(recipes.UnknownRecipe, match="Did you mean 'digits-mlp'"):
        recipes.get("digit-mlp")
