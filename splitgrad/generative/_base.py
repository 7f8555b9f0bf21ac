"""What the generative models share: the parts of their loss reported as metrics, batched
inference, and the check that a reconstruction target looks like the reconstruction."""

from __future__ import annotations

import numpy as np

from .. import validate as check
from ..model import Model
from ..tensor import no_grad
from . import _blocks
from .objectives import Tracker


class GenerativeModel(Model):
    """A Model whose loss has named parts (`TRACKED`, e.g. "kl"): `compile` adds a `Tracker`
    for each to the metrics, and `record(count, name=value, ...)` fills them, so the parts
    appear in the progress bar, in History (and as val_* after validation) and in `evaluate`,
    all through the one training loop."""

    TRACKED: tuple = ()

    def compile(self, optimizer="adam", loss=None, metrics=None):
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics)
        self._add_trackers()

    def _add_trackers(self):
        self.trackers = {name: Tracker(name) for name in self.TRACKED}
        self.metrics = [*self.metrics, *self.trackers.values()]

    def _set_architecture(self, latent_dim, kind, hidden, filters):
        """Check and keep the settings every generative model's networks are built from."""
        who = type(self).__name__
        self.latent_dim = check.positive_int(latent_dim, f"{who}: latent_dim")
        self.kind = _blocks.check_kind(kind, who)
        self.hidden = _blocks.sizes(hidden, who, "hidden")
        self.filters = _blocks.sizes(filters, who, "filters")
        return who

    def record(self, count, **values):
        """Add a batch of `count` examples' loss parts to their trackers (no-op uncompiled)."""
        trackers = getattr(self, "trackers", {})
        for name, value in values.items():
            if name in trackers:
                trackers[name].record(value, count)

    def infer(self, fn, x, batch_size=256) -> np.ndarray:
        """fn(batch) for batches of x, in inference mode without a graph, as one array."""
        batch_size = check.positive_int(batch_size, f"{type(self).__name__}: batch_size")
        x = check.numeric_array(x, "x")
        was = self.training
        self.eval()
        try:
            with no_grad():
                outs = [fn(x[i : i + batch_size]).data for i in range(0, len(x), batch_size)]
        finally:
            self.train(was)
        return np.concatenate(outs) if outs else np.zeros((0,), self.dtype)


def check_targets(model, y, out_shape):
    """A clear error when the targets are not shaped like the reconstructions (the usual slip:
    class labels passed as y instead of the images)."""
    shape = tuple(np.shape(y))
    if shape != tuple(out_shape):
        raise ValueError(
            f"{type(model).__name__} {model.name!r}: the targets y must be shaped like the "
            f"reconstructions {tuple(out_shape)}, got {shape}. An autoencoder learns to give "
            "back its input: train with fit(x, x) (or fit(noisy_x, x) to denoise)"
        )
