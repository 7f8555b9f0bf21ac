"""#13 Gradient accumulation: one place, the batch cut in time into k micro-batches.

Each micro-batch's loss is weighted by n_j/B before backward, gradients add up, and one
optimizer step follows: k micro-batches normalised by the global count = one batch of B.
Nothing crosses a boundary; the point is memory (one micro-batch of activations at a time).
"""

from __future__ import annotations

import numpy as np

from .. import random as sg_random
from . import tools
from .base import Way
from .data_parallel import adopt


class GradientAccumulation(Way):
    """Σ_j (n_j/B)·∇loss(micro-batch j), one step per batch of B; crosses nothing."""

    name = "accumulation"

    def __init__(self, k: int = 4, places=None):
        super().__init__(places)
        if int(k) < 1:
            raise ValueError(f"GradientAccumulation: k must be >= 1, got {k}")
        self.k = int(k)

    def _setup(self, run):
        x_ref, y_ref = run.data_refs()
        # One replica: it continues the driver's random stream (dropout), on any place.
        run.gather([self.places.submit(0, "setup", "acc", self.places.put(tools.pack(run.model)),
                                       x_ref, y_ref, None, False, sg_random.get_state())],
                   ["place0"])

    def _step(self, run, step, index):
        micro = [m for m in np.array_split(index, self.k) if len(m)]
        return run.gather([self.places.submit(0, "accumulate", "acc", micro, len(index), step)],
                          ["place0"])[0]

    def _finish(self, run):
        adopt(run.model, self.places.gather([self.places.submit(0, "get_model", "acc")])[0])

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return 0
