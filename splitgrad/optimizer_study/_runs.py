"""What both studies share: the recipe's data and a fresh model for a seed, `Model.fit` called
as `recipes.train` calls it, and runs of single-batch epochs whose every step is recorded."""

from __future__ import annotations

import math

import numpy as np

from .. import random as sg_random
from .. import recipes
from ..callbacks import Callback
from ..data import ArrayBatches
from ..model import Model


def setup(name, quick, seed, **overrides):
    """(the recipe module, its settings with `overrides`, its data for `quick` and `seed`)."""
    recipe = recipes.get(name)
    settings = recipes.settings_for(recipe, quick, **overrides)
    sg_random.seed(seed)
    data, _ = recipes.load_recipe_data(name, recipe, quick, seed)
    return recipe, settings, data


def fresh_model(name, recipe, settings, data, seed):
    """The recipe's model with its initial weights for `seed` (the same for every run)."""
    sg_random.seed(seed)
    model = recipe.build_model(settings["learning_rate"], data)
    if type(model).train_step is not Model.train_step:
        raise ValueError(
            f"recipe {name!r} trains with a step of its own ({type(model).__name__}."
            "train_step, e.g. several optimizers in turns); comparing one optimizer's update "
            "rule needs a recipe trained by the standard step, such as digits-cnn"
        )
    return model


def fit_recipe(model, recipe, data, settings, seed, callbacks, verbose):
    """`Model.fit` on the recipe's data as `recipes.train` calls it, without the recipe's own
    schedule and callbacks (fit_options), so that only the update rule differs."""
    return recipes.fit_recipe(
        recipe, model, data, settings, seed, verbose=verbose, callbacks=callbacks, options=False
    )


class StepLosses(Callback):
    """Records the learning rate and loss of every batch of a run made of one-batch epochs
    (`OneBatchPerEpoch`, so the loop's running loss is the batch's own loss). The run stops
    cleanly at a NaN or infinite loss, or, with `divergence`, once the smoothed loss
    (exponential average, `beta`, bias-corrected) exceeds `divergence` × its best so far, or
    climbs back above its first value after falling 10 % below it (a classifier that blows
    up often lands back at chance level, ln C, rather than at 4× its best)."""

    def __init__(self, divergence=None, beta=0.98, bar=None):
        self.divergence, self.beta, self.bar = divergence, beta, bar

    def on_train_begin(self, logs=None):
        self.rates, self.losses, self.smoothed = [], [], []
        self.diverged_at, self._average, self._best, self._rate = None, 0.0, math.inf, None

    def on_train_batch_begin(self, batch, logs=None):
        self._rate = float(self.model.optimizer.learning_rate)  # the rate of this step

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        self.rates.append(self._rate)
        self.losses.append(loss)
        if self.bar is not None:
            self.bar.update(1)
        if not math.isfinite(loss):
            self.smoothed.append(math.inf)
            self.diverged_at, self.model.stop_training = self._rate, True
            return
        self._average = self.beta * self._average + (1 - self.beta) * loss
        smooth = self._average / (1 - self.beta ** len(self.losses))
        self.smoothed.append(smooth)
        self._best = min(self._best, smooth)
        first = self.smoothed[0]
        lost_it_all = self._best < 0.9 * first and smooth > first
        if self.divergence is not None and (smooth > self.divergence * self._best or lost_it_all):
            self.diverged_at, self.model.stop_training = self._rate, True


class OneBatchPerEpoch:
    """A batch source whose every epoch is the next single batch of `source`, going through
    the source's own epochs in turn: `fit(..., epochs=steps)` then takes `steps` steps and
    every step's loss reaches the callbacks by itself (not in an epoch's running mean)."""

    def __init__(self, source):
        self.source, self._stream = source, None
        self.batch_size = getattr(source, "batch_size", 32)

    def __len__(self):
        return 1

    def _endless(self):
        epoch = 0
        while True:
            empty = True
            for batch in self.source.batches(epoch):
                empty = False
                yield batch
            if empty:
                raise ValueError("the recipe's batch source gave no batches")
            epoch += 1

    def batches(self, epoch):
        if self._stream is None:
            self._stream = self._endless()
        yield next(self._stream)


def steps_run(model, recipe, data, settings, seed, steps, record):
    """Train `steps` single-batch epochs of the recipe's batches with `record` attached."""
    if hasattr(recipe, "batches"):
        inner = recipe.batches(data, settings)
    else:
        inner = ArrayBatches(data.x_train, data.y_train, settings["batch_size"], True, seed)
    # Build first: fit would otherwise start the stream to find the input shape.
    model.build_from_sample(np.asarray(next(iter(inner.batches(0)))[0]))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is the point
        model.fit(OneBatchPerEpoch(inner), epochs=steps, verbose=0, callbacks=[record])
    return record
