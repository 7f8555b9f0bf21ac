"""Learning rates and optimizers compared on a recipe: `splitgrad compare-optimizers` and
`splitgrad lr-sweep` (the LR range test).

    compare_optimizers("digits-cnn")   # the same recipe, data, initial weights and batch order
                                       # under six update rules; curves, a table of results
    lr_range_test("digits-cnn")        # lr grows exponentially over a short run; the loss at
                                       # each rate, too-small/good/divergent rates, a suggestion

Both build the recipe's data and model through the recipes API (`recipes.get`, `settings_for`,
`load_recipe_data`, `recipe.build_model`) and train through `Model.fit`, with a schedule and
callbacks, never a loop of their own. Where things are: _runs.py (what both share),
compare.py, sweep.py, cli.py.
"""

from .cli import add_cli as add_cli
from .compare import OPTIMIZERS as OPTIMIZERS
from .compare import compare_optimizers as compare_optimizers
from .sweep import lr_range_test as lr_range_test
