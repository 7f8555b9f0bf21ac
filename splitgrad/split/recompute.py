"""#15 Activation checkpointing (recompute): memory traded for compute, at one place.

The model's blocks are wrapped in `Recompute` layers (layers/recompute.py): in training each
block keeps only its input, and its activations are computed again during the backward pass
(ops/checkpointing.py). The weights, the losses and the gradients are bitwise those of the
plain model (the recomputed forward draws the same dropout masks and sees the same running
statistics); what changes is the peak memory of live activations, measured by the engine's
own meter (tensor.activation_meter) on the first step, with and without, and the time of one
more forward of each wrapped block. Nothing crosses a boundary.

Which blocks (`blocks=`): "auto" wraps each layer that holds weights together with the
weight-free layers after it (conv + pool, ...), all but the output layer; "0-2,2-5" wraps
layers[0:2] and layers[2:5] (half-open ranges of layer indices).
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

from .. import random as sg_random
from ..layers.recompute import Recompute
from ..model import Sequential
from ..tensor import activation_meter
from . import blocks, replicas
from . import host as host_ops
from .base import Way


def ranges(model, spec="auto") -> list:
    """The (lo, hi) layer ranges to wrap: "auto" or "lo-hi,lo-hi" (see the module docstring)."""
    layers = blocks.layers_of(model)
    n = len(layers)
    if spec in (None, "auto"):
        heavy = [i for i, la in enumerate(layers) if la.parameters()]
        starts = heavy[:-1]  # the last layer with weights is the head: left as it is
        return [
            (lo, starts[k + 1] if k + 1 < len(starts) else heavy[-1]) for k, lo in enumerate(starts)
        ]
    out = []
    for item in str(spec).replace(" ", "").split(","):
        lo, sep, hi = item.partition("-")
        try:
            out.append((int(lo), int(hi)))
        except ValueError:
            raise ValueError(
                f"recompute: blocks must be 'auto' or ranges like '0-2,2-5', got {spec!r}"
            ) from None
        if not sep:
            raise ValueError(f"recompute: block {item!r} needs the form lo-hi, e.g. 0-2")
    for (lo, hi), nxt in zip(out, [*out[1:], (n, n)]):
        if not 0 <= lo < hi <= nxt[0] or hi > n:
            raise ValueError(
                f"recompute: blocks {spec!r} must be rising, non-empty, non-overlapping ranges "
                f"of the {n} layers (0-{n})"
            )
    return out


def wrapped(model, spans) -> Sequential:
    """A Sequential running the model's own layers, with layers[lo:hi] inside a Recompute for
    each (lo, hi) in `spans`; it shares the layers, the optimizer and the loss."""
    layers = blocks.layers_of(model)
    out, i = [], 0
    for lo, hi in spans:
        out += layers[i:lo]
        block = blocks.block_of(model, layers[lo:hi], f"recomputed{lo}_{hi}")
        out.append(Recompute(block, name=f"recompute{lo}_{hi}"))
        i = hi
    out += layers[i:]
    twin = blocks.block_of(model, out, model.name)
    twin.optimizer, twin.loss = model.optimizer, model.loss
    twin.metrics = []
    return twin


# ----- place side ------------------------------------------------------------------------------
def setup(host, key, spec, x, y, stream, spans):
    """Place op: the replica (continuing the driver's stream) and its wrapped twin."""
    host_ops.setup(host, key, spec, x, y, None, stream)
    slot = host.slots[key]
    slot.state["twin"] = wrapped(slot.model, spans)


def train(host, key, index, step, measure):
    """Place op: one optimizer step of the wrapped model on rows `index`; with `measure`, the
    peak live activation bytes of this step, and of the plain model on the same batch (run
    first and undone: gradients, random draws and running statistics put back)."""
    slot = host.slots[key]
    x, y = slot.x[index], slot.y[index]
    peaks = {}
    if measure:
        kept = replicas.export_state(slot.model)
        with activation_meter() as meter:
            replicas.backward(slot.model, x, y)
        peaks["plain"] = meter.peak
        replicas.import_state(slot.model, kept)
        slot.model.optimizer.zero_grad()
    with activation_meter() if measure else contextlib.nullcontext() as meter:
        loss = replicas.backward(slot.state["twin"], x, y)
    if measure:
        peaks["recompute"] = meter.peak
    slot.model.optimizer.step()
    slot.step = step
    return loss, peaks


# ----- driver side -----------------------------------------------------------------------------
class ActivationCheckpointing(Way):
    """Blocks recomputed on backward instead of stored; crosses nothing, one place."""

    name = "recompute"
    number, cut, crosses = 15, "memory vs compute", "nothing"
    formula = "0"
    checks = "gradients bitwise equal with and without recompute"
    options: ClassVar[dict] = {"blocks": "auto"}
    equivalent = True
    note = "the recomputed forward sees the same inputs and random draws: bitwise the one place"

    def __init__(self, blocks: str = "auto", places=None):
        super().__init__(places)
        self.blocks = blocks

    @classmethod
    def from_options(cls, n, options, places=None):
        return cls(places=places, **cls.with_defaults(options))  # one place, whatever N

    def setup(self, run):
        self.spans = ranges(run.model, self.blocks)
        if not self.spans:
            raise ValueError(
                f"recompute: nothing to wrap in model {run.model.name!r} (it needs a layer "
                "with weights before its output layer, or blocks='lo-hi')"
            )
        check = wrapped(run.model, self.spans)  # a block ending in softmax fails here, clearly
        check.build_from_sample(run.x[:1])
        x_ref, y_ref = run.data_refs()
        spec = self.places.put(run.spec())
        stream = sg_random.get_state()
        run.gather(
            [self.places.submit(0, setup, "rc", spec, x_ref, y_ref, stream, self.spans)],
            ["place0"],
        )
        self.peaks = None

    def step(self, run, step, index):
        measure = self.peaks is None
        loss, peaks = run.gather(
            [self.places.submit(0, train, "rc", index, step, measure)], ["place0"]
        )[0]
        if measure:
            self.peaks = peaks
        return loss

    def finish(self, run):
        replicas.adopt(
            run.model, self.places.gather([self.places.submit(0, host_ops.get_model, "rc")])[0]
        )

    def textbook_bytes(self, n_params, steps, itemsize=4):
        return 0

    def report(self, run):
        peaks = self.peaks or {}
        return {
            "blocks": [list(s) for s in self.spans],
            "peak_activation_bytes": peaks.get("recompute"),
            "peak_activation_bytes_plain": peaks.get("plain"),
        }
