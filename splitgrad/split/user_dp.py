"""User-level differential privacy for federated averaging (DP-FedAvg, McMahan et al. 2018),
with adaptive clipping (Andrew et al. 2021).

Each round, every sampled client's update is clipped to L2 norm ≤ C, the server adds Gaussian
noise N(0, (zC)²) to their sum and divides by the expected number of clients m (a constant, as
the privacy analysis needs):

    Δ = (Σ_k Δ_k · min(1, C/‖Δ_k‖) + N(0, z²C²)) / m

A client's whole contribution to a round is one clipped update, so the guarantee is about a
user (all of a client's rows), and rounds are steps of the sampled Gaussian mechanism with
q = the fraction of clients sampled: privacy.py's accountant gives ε for a δ.

Adaptive clipping tracks a quantile γ of the update norms instead of fixing C: each client
also reports the bit b_k = 1[‖Δ_k‖ ≤ C], the server averages the bits with noise N(0, σ_b²)/m
and moves C ← C·exp(−η_C·(b̄ − γ)). The bits cost privacy too: the update noise is raised to
z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) so that the pair spends what z alone would (Andrew et al. §3).

With C = ∞ and z = 0 the round is the plain mean of the updates (FedAvg when the clients hold
equally many rows).
"""

from __future__ import annotations

import math

import numpy as np

from .privacy import check_delta, epsilon


class UserLevelDP:
    """The server side of DP-FedAvg; `aggregate(deltas, round)` replaces the weighted mean."""

    def __init__(
        self,
        clip=None,
        noise=0.0,
        expected_clients=1,
        sample_rate=1.0,
        seed=0,
        target_quantile=None,
        clip_lr=0.2,
        bit_noise=None,
        delta=1e-5,
    ):
        if clip is not None and not clip > 0:
            raise ValueError(f"DP-FedAvg: the clip bound must be positive or None, got {clip!r}")
        if noise < 0 or (noise > 0 and clip is None):
            raise ValueError("DP-FedAvg: noise must be >= 0 and needs a clip bound C")
        if target_quantile is not None and not 0.0 < target_quantile < 1.0:
            raise ValueError(
                f"DP-FedAvg: target_quantile must be in (0, 1), got {target_quantile!r}"
            )
        self.clip, self.noise, self.seed = clip, float(noise), int(seed)
        self.m, self.q = max(1, int(expected_clients)), float(sample_rate)
        self.target_quantile, self.clip_lr = target_quantile, float(clip_lr)
        self.delta = check_delta(delta, "DP-FedAvg")
        # Andrew et al.'s default: bit noise m/20, so the noisy fraction is accurate to ~5 %;
        # at least z, so that paying for the bits raises the update noise by at most 15 %.
        self.bit_noise = max(self.m / 20.0, self.noise) if bit_noise is None else float(bit_noise)
        self.update_noise = self._update_noise()
        self.rounds, self.clips = 0, []

    def _update_noise(self) -> float:
        """z_Δ: the update noise multiplier once the clipped-bits' share is paid for."""
        if self.target_quantile is None or self.noise == 0.0:
            return self.noise
        left = self.noise**-2 - (2.0 * self.bit_noise) ** -2
        if left <= 0:
            raise ValueError(
                f"DP-FedAvg: noise {self.noise:g} is too small to also pay for adaptive "
                f"clipping with bit noise {self.bit_noise:g}; raise the noise or the bit noise"
            )
        return left**-0.5

    def aggregate(self, deltas: np.ndarray, round_: int) -> np.ndarray:
        """The round's update from the clients' (K, P) updates, in their dtype."""
        d = deltas.astype(np.float64)
        norms = np.sqrt((d * d).sum(axis=1))
        clip = math.inf if self.clip is None else self.clip
        scale = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
        total = (d * scale[:, None]).sum(axis=0)
        rng = np.random.default_rng([self.seed, 0xD9, round_])
        if self.update_noise:
            total += rng.normal(0.0, self.update_noise * clip, size=total.shape)
        self.clips.append(clip)
        if self.target_quantile is not None and self.clip is not None:
            below = float((norms <= clip).sum()) + rng.normal(0.0, self.bit_noise)
            self.clip = clip * math.exp(-self.clip_lr * (below / self.m - self.target_quantile))
        self.rounds += 1
        return (total / self.m).astype(deltas.dtype)

    def report(self) -> dict:
        eps = (
            epsilon(self.q, self.noise, self.rounds, self.delta, "tight")[0]
            if self.clip is not None
            else math.inf
        )
        return {
            "user_epsilon": eps,
            "user_delta": self.delta,
            "user_noise": self.noise,
            "clip_bounds": self.clips,
        }
