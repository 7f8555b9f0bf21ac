"""#6 Differential privacy: DP-SGD (Abadi et al. 2016) on top of synchronous data parallel.

Each example's gradient is clipped to L2 norm ≤ C, the clipped gradients are summed, Gaussian
noise N(0, (σC)²) is added once per step (by worker 0), and the sum is divided by the batch
size B; the workers then all-reduce and step as in #1. σ = 0 with no clipping = plain SGD.
Per-example gradients come from one batched pass where the model allows (per_example.py).
The report includes the privacy spent, ε for the chosen δ, by Rényi-DP accounting (privacy.py).
"""

from __future__ import annotations

from .data_parallel import DataParallel
from .privacy import check_delta, epsilon


class DPSGD(DataParallel):
    """g = (Σ_i clip_C(∇ℓ_i) + N(0, σ²C²))/B, then data parallel; reports σ, q = B/n, steps
    and the (ε, δ) spent (δ default 1e-5)."""

    name = "dp-sgd"

    def __init__(self, clip: float | None = 1.0, noise_multiplier: float = 1.0, workers: int = 1,
                 seed: int = 0, places=None, delta: float = 1e-5):
        super().__init__(workers, places)
        self.delta = check_delta(delta, "DPSGD")
        if clip is not None and not clip > 0:
            raise ValueError(f"DPSGD: clip must be positive or None, got {clip!r}")
        if noise_multiplier < 0:
            raise ValueError(f"DPSGD: noise_multiplier must be >= 0, got {noise_multiplier!r}")
        if noise_multiplier > 0 and clip is None:
            raise ValueError("DPSGD: noise needs a clipping bound C (the noise std is σ·C)")
        self.clip, self.noise_multiplier, self.seed = clip, float(noise_multiplier), int(seed)

    def _grad_job(self, run, step, rank, shard, total):
        std = self.noise_multiplier * (self.clip or 0.0)
        return {**super()._grad_job(run, step, rank, shard, total), "clip": self.clip,
                "noise_std": std if rank == 0 else 0.0, "noise_seed": [self.seed, step],
                "denom": total}

    def _loss(self, values):
        largest = max(v[1] for v in values)  # each worker's (loss share, largest clipped norm)
        self._largest = max(getattr(self, "_largest", 0.0), largest)
        return float(sum(v[0] for v in values))

    def _setup(self, run):
        self._largest = 0.0
        super()._setup(run)

    def _report(self, run):
        out = super()._report(run)
        rate = run.batch_size / len(run.x)
        # Without clipping a single example can move the sum without bound: no finite ε.
        eps = (epsilon(rate, self.noise_multiplier, run.step, self.delta)[0]
               if self.clip is not None else float("inf"))
        out.update({"noise_multiplier": self.noise_multiplier, "clip": self.clip,
                    "steps": run.step, "sample_rate": rate,
                    "max_clipped_norm": float(self._largest),
                    "epsilon": eps, "delta": self.delta})
        return out
