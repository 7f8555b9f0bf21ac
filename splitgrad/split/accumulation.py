"""#13 Gradient accumulation: one place, the batch cut in time into k micro-batches.

Each micro-batch's loss is weighted by n_j/B before backward, gradients add up, and one
optimizer step follows: k micro-batches normalised by the global count = one batch of B.
Nothing crosses a boundary; the point is memory (one micro-batch of activations at a time).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import random as sg_random
from . import host as host_ops
from . import replicas
from .base import Way


# ----- place side ------------------------------------------------------------------------------
def accumulate(host, key, micro, total, step):
    """Place op: Σ_j (n_j/total)·∇loss_j over the micro-batches, then one optimizer step."""
    slot = host.slots[key]
    model = slot.model
    opt = model.optimizer
    opt.zero_grad()
    if not model.training:
        model.train()
    loss = 0.0
    with model.threads():
        for idx in micro:
            part = model.compute_loss(slot.x[idx], slot.y[idx])
            weight = len(idx) / total
            (part * model.dtype.type(weight)).backward(into=opt.grad_buffers())
            loss += float(part.data) * weight
    opt.step()
    slot.step = step
    return loss


# ----- driver side -----------------------------------------------------------------------------
class GradientAccumulation(Way):
    """Σ_j (n_j/B)·∇loss(micro-batch j), one step per batch of B; crosses nothing."""

    name = "accumulation"
    number, cut, crosses = 13, "the batch, in time", "nothing"
    formula = "0"
    checks = "k micro-batches = one batch of kB"
    options: ClassVar[dict] = {"k": 4}
    equivalent = True
    note = (
        "k micro-batches weighted by their share of the batch: the big batch up to float rounding"
    )

    def __init__(self, k: int = 4, places=None):
        super().__init__(places)
        if int(k) < 1:
            raise ValueError(f"GradientAccumulation: k must be >= 1, got {k}")
        self.k = int(k)

    @classmethod
    def from_options(cls, n, options, places=None):
        return cls(places=places, **cls.with_defaults(options))  # one place, whatever N

    def setup(self, run):
        x_ref, y_ref = run.data_refs()
        # One replica: it continues the driver's random stream (dropout), on any place.
        run.gather(
            [
                self.places.submit(
                    0,
                    host_ops.setup,
                    "acc",
                    self.places.put(run.spec()),
                    x_ref,
                    y_ref,
                    None,
                    sg_random.get_state(),
                )
            ],
            ["place0"],
        )

    def step(self, run, step, index):
        micro = [m for m in np.array_split(index, self.k) if len(m)]
        return run.gather(
            [self.places.submit(0, accumulate, "acc", micro, len(index), step)], ["place0"]
        )[0]

    def finish(self, run):
        replicas.adopt(
            run.model, self.places.gather([self.places.submit(0, host_ops.get_model, "acc")])[0]
        )

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return 0
