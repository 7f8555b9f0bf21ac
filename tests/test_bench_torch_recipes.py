"""The PyTorch mirror of benchmarks/time_to_accuracy.py (benchmarks/torch_recipes.py) starts from
splitgrad's initial weights: for every recipe it covers, the PyTorch network with the copied
weights gives the splitgrad model's logits on the same inputs (float32, ~1e-5), so the two runs
of a recipe differ only in rounding and speed. A layer the mirror has no layout for is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# benchmarks/ is a folder of scripts, not a package: import its modules from there.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import torch_recipes as tr

from splitgrad import nn, no_grad, recipes


@pytest.mark.parametrize("name", ["digits-cnn", "fashion-mlp", "fashion-cnn", "irish-lstm"])
def test_the_pytorch_mirror_starts_from_splitgrads_weights(name):
    recipe = recipes.get(name)
    settings = recipes.settings_for(recipe)
    data, _ = recipes.load_recipe_data(name, recipe, True, 0)
    sg_model = tr.built_model(name, recipe, settings, data, 0)
    torch_model = tr._model(name, torch.nn, data).float()  # (helpers.py sets float64)
    tr.copy_weights(torch, name, tr.torch_layouts(name, sg_model), torch_model)
    x = np.asarray(data.x_test[:5])
    with no_grad():
        ours = sg_model(x).numpy()
    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))
    with torch.no_grad():
        theirs = torch_model(inputs).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_the_initial_weights_file_holds_the_built_models_weights(tmp_path):
    path = tmp_path / "digits-cnn.safetensors"
    tr.save_initial("digits-cnn", path, 0)
    recipe = recipes.get("digits-cnn")
    data, _ = recipes.load_recipe_data("digits-cnn", recipe, False, 0)
    model = tr.built_model("digits-cnn", recipe, recipes.settings_for(recipe), data, 0)
    saved = tr.load_initial(path)
    expected = tr.torch_layouts("digits-cnn", model)
    assert len(saved) == len(expected) == 8
    for a, b in zip(saved, expected):
        np.testing.assert_array_equal(a, b)


def test_a_layer_without_a_pytorch_layout_is_named():
    model = nn.Sequential([nn.Dense(4), nn.BatchNormalization()])
    model(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="BatchNormalization"):
        tr.torch_layouts("fashion-mlp", model)
