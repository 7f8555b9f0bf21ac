"""#6 Differential privacy: DP-SGD (Abadi et al. 2016) on top of synchronous data parallel.

Each example's gradient is clipped to L2 norm ≤ C, the clipped gradients are summed, Gaussian
noise N(0, (σC)²) is added once per step (by worker 0), and the sum is divided by the batch
size B; the workers then all-reduce and step as in #1. σ = 0 with no clipping = plain SGD.
Batches are drawn by Poisson sampling (each example with probability B/n), as the privacy
analysis assumes; `sampling="shuffle"` uses fit's batches instead. `target_epsilon` sets σ
for the planned run. The report includes the privacy spent, ε for the chosen δ, by Rényi-DP
accounting with both conversions (privacy.py).

Per-example gradients come from one batched pass when every trainable weight of the model sits
in a layer that offers the per-example hook (layers/per_example.py: Dense, Conv2D,
Conv2DTranspose, Embedding, SimpleRNN, LSTM, GRU and Bidirectional do) and the loss is a plain
mean; otherwise from a loop over the examples, which is exact for any model whose examples do
not mix.

A BatchNormalization layer in training mode normalises each example with its batch's
statistics, so one example's gradient depends on all the others: there is no per-example
gradient to clip, and DP-SGD refuses such a model (as Opacus does) instead of training it with
a privacy claim that does not hold. A frozen one (trainable=False) uses its moving statistics
and is accepted.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..layers import per_example
from ..layers.normalization import BatchNormalization
from ..losses import Loss
from ..model import Model
from . import replicas
from .data_parallel import DataParallel
from .privacy import check_delta, epsilon, noise_for

EPS = 1e-6  # Opacus' factor: the clipped norm is strictly below C


# ----- place side ------------------------------------------------------------------------------
def clipped_gradient(slot, job):
    """slot.vec = (Σ_i clip_C(∇ℓ_i) + N(0, noise_std²)) / denom; returns (loss share, largest
    clipped norm)."""
    index = np.asarray(job["shard"])
    with replicas.rng_scope(replicas.key_state(job["noise"])):
        total, loss_sum, largest = clipped_sum(
            slot.model, slot.x[index], slot.y[index], job["clip"]
        )
    if job["noise_std"]:
        rng = np.random.default_rng(job["noise_seed"])
        total = total + rng.normal(0.0, job["noise_std"], size=total.shape)
    slot.vec = (total / job["denom"]).astype(replicas.flat_dtype(slot.model))
    return loss_sum / job["denom"], largest


def clipped_sum(model, x, y, clip):
    """(Σ_i clip_C(∇ℓ_i) as a float64 flat vector, Σ_i ℓ_i, largest clipped norm).

    `clip=None` sums the unclipped gradients. One batched pass where the model allows.
    """
    check_examples_do_not_mix(model)
    if len(x) == 0:
        return np.zeros(replicas.count(model)), 0.0, 0.0
    if _plain_mean_loss(model):
        batched = _batched(model, x, y, clip)
        if batched is not None:
            return batched
    return _looped(model, x, y, clip)


def check_examples_do_not_mix(model):
    """Refuse a model with a layer that mixes the examples of a batch (BatchNormalization in
    training mode): per-example gradients, and so DP-SGD's guarantee, are not defined for it."""
    for path, layer in model.named_modules():
        if isinstance(layer, BatchNormalization) and layer.trainable:
            raise ValueError(
                f"DP-SGD: layer {layer.name!r} (BatchNormalization{', at ' + path if path else ''})"
                " normalises every example with the mean and variance of its whole batch, so "
                "one example's gradient depends on the other examples: there is no "
                "per-example gradient to clip, and the privacy guarantee would not hold. "
                "Remove the layer, or freeze it (layer.trainable = False, it then uses its "
                "moving statistics) before training with DP-SGD."
            )


def _plain_mean_loss(model) -> bool:
    """The batched pass reads ℓ_i off a loss that is the plain mean of per-example terms: the
    standard `compute_loss`, no regularizers, a Loss with reduction "mean" and no class
    weights or ignored rows."""
    loss = getattr(model, "loss", None)
    return (
        type(model).compute_loss is Model.compute_loss
        and isinstance(loss, Loss)
        and loss.reduction == "mean"
        and getattr(loss, "weight", None) is None
        and getattr(loss, "ignore_index", None) is None
        and not model.regularization_losses()
    )


def _looped(model, x, y, clip):
    total, loss_sum, largest = None, 0.0, 0.0
    for i in range(len(x)):
        loss_sum += replicas.backward(model, x[i : i + 1], y[i : i + 1])
        g = replicas.get_flat_grad(model).astype(np.float64)
        norm = float(np.sqrt(np.dot(g, g)))
        if clip is not None:
            g *= min(1.0, clip / (norm + EPS))
        largest = max(largest, float(np.sqrt(np.dot(g, g))))
        total = g if total is None else total + g
    return total, loss_sum, largest


def _batched(model, x, y, clip):
    """The batched pass, or None when some trainable weight is not at a linear site."""
    params = model.parameters()
    if not model.training:
        model.train()
    model.optimizer.zero_grad()
    with per_example.recording() as rec, model.threads():
        loss = model.loss(y, model(x))
    if not rec.covers(params):
        return None
    loss.backward()
    # The loss is a mean over the n examples, so ∂ℓ_i/∂pre_i = n · probe.grad[i].
    n = len(x)
    sq, weighted = rec.gradients(1.0 / n, params)
    norms = np.sqrt(np.broadcast_to(sq, (n,)))
    scale = np.ones(n) if clip is None else np.minimum(1.0, clip / (norms + EPS))
    grads = weighted(scale)
    total = np.concatenate([np.asarray(grads[id(p)]).ravel() for p in params])
    model.optimizer.zero_grad()  # the batched pass left mean gradients behind: nobody uses them
    return total, float(loss.data) * n, float(np.max(norms * scale))


# ----- driver side -----------------------------------------------------------------------------
class DPSGD(DataParallel):
    """g = (Σ_i clip_C(∇ℓ_i) + N(0, σ²C²))/B, then data parallel; reports σ, q = B/n, steps
    and the (ε, δ) spent (δ default 1e-5)."""

    name = "dp-sgd"
    number, cut, crosses = 6, "trust", "as #1, clipped and noised"
    formula = "as #1"
    checks = "sigma 0 and no clipping = SGD; clipped norms <= C"
    options: ClassVar[dict] = {
        "clip": 1.0,
        "noise": 1.0,
        "seed": 0,
        "delta": 1e-5,
        "sampling": "poisson",
        "target_epsilon": None,
    }
    equivalent = False
    note = "every example's gradient clipped to C=1 and Gaussian noise sigma*C added"

    def __init__(
        self,
        clip: float | None = 1.0,
        noise_multiplier: float = 1.0,
        workers: int = 1,
        seed: int = 0,
        places=None,
        delta: float = 1e-5,
        sampling: str = "poisson",
        target_epsilon: float | None = None,
    ):
        super().__init__(workers, places)
        self.delta = check_delta(delta, "DPSGD")
        if sampling not in ("poisson", "shuffle"):
            raise ValueError(f"DPSGD: sampling must be 'poisson' or 'shuffle', got {sampling!r}")
        if target_epsilon is not None and clip is None:
            raise ValueError("DPSGD: a target ε needs a clipping bound C")
        self.sampling, self.target_epsilon = sampling, target_epsilon
        if clip is not None and not clip > 0:
            raise ValueError(f"DPSGD: clip must be positive or None, got {clip!r}")
        if noise_multiplier < 0:
            raise ValueError(f"DPSGD: noise_multiplier must be >= 0, got {noise_multiplier!r}")
        if noise_multiplier > 0 and clip is None:
            raise ValueError("DPSGD: noise needs a clipping bound C (the noise std is σ·C)")
        self.clip, self.noise_multiplier, self.seed = clip, float(noise_multiplier), int(seed)
        self._largest = 0.0

    @classmethod
    def from_options(cls, n, options, places=None):
        o = cls.with_defaults(options)
        return cls(
            o["clip"],
            o["noise"],
            workers=n,
            seed=o["seed"],
            places=places,
            delta=o["delta"],
            sampling=o["sampling"],
            target_epsilon=o["target_epsilon"],
        )

    def expectation(self, model):
        return self.equivalent, self.note

    def batches(self, run, epoch):
        """Poisson sampling (what the accountant assumes): each of the n examples joins each
        batch with probability q = B/n, independently, so batch sizes vary around B; as many
        batches per epoch as shuffling would make. "shuffle": the batches of `fit`."""
        if self.sampling == "shuffle":
            return run.source.indices(epoch)
        n, q = len(run.x), run.batch_size / len(run.x)
        rng = np.random.default_rng([self.seed, 0x5A3E, epoch])
        return [np.flatnonzero(rng.random(n) < q) for _ in range(len(run.source))]

    def examples(self, batch):
        return max(len(batch), 1)  # an empty Poisson batch still took a (noise-only) step

    def _grad_job(self, run, step, rank, shard, total):
        std = self.noise_multiplier * (self.clip or 0.0)
        # With Poisson sampling the sum is divided by the EXPECTED batch size B (a
        # data-independent constant, as the privacy analysis needs), not by the one drawn.
        denom = run.batch_size if self.sampling == "poisson" else total
        return {
            **super()._grad_job(run, step, rank, shard, total),
            "clip": self.clip,
            "gradient": clipped_gradient,
            "noise_std": std if rank == 0 else 0.0,
            "noise_seed": [self.seed, step],
            "denom": denom,
        }

    def _loss(self, values):
        largest = max(v[1] for v in values)  # each worker's (loss share, largest clipped norm)
        self._largest = max(self._largest, largest)
        return float(sum(v[0] for v in values))

    def setup(self, run):
        check_examples_do_not_mix(run.model)  # here, before any place starts
        self._largest = 0.0
        if self.target_epsilon is not None:  # σ for the planned run: epochs × batches each
            steps = run.epochs * len(run.source)
            self.noise_multiplier = noise_for(
                self.target_epsilon, run.batch_size / len(run.x), steps, self.delta
            )
        super().setup(run)

    def report(self, run):
        out = super().report(run)
        rate = run.batch_size / len(run.x)
        # Without clipping a single example can move the sum without bound: no finite ε.
        spent = {
            conversion: (
                epsilon(rate, self.noise_multiplier, run.step, self.delta, conversion)[0]
                if self.clip is not None
                else float("inf")
            )
            for conversion in ("tight", "classic")
        }
        out.update(
            {
                "noise_multiplier": self.noise_multiplier,
                "clip": self.clip,
                "steps": run.step,
                "sample_rate": rate,
                "max_clipped_norm": float(self._largest),
                "epsilon": spent["tight"],
                "epsilon_classic": spent["classic"],
                "delta": self.delta,
                "sampling": self.sampling,
            }
        )
        return out
