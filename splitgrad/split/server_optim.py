"""Server optimizers for federated learning (Reddi et al. 2021, "Adaptive Federated Optimization").

Each round the server treats the aggregated client update Δ (Σ n_k Δ_k / Σ n_k, or a robust
aggregate) as a pseudo-gradient and takes one step of its own optimizer, in float64:

    fedavg     w ← w + Δ                                       (plain averaging)
    fedavgm    m ← β·m + Δ;                  w ← w + η·m
    fedadagrad v ← v + Δ²;                   w ← w + η·Δ / (√v + τ)
    fedadam    m ← β₁·m + (1−β₁)·Δ;  v ← β₂·v + (1−β₂)·Δ²;            w ← w + η·m / (√v + τ)
    fedyogi    m as fedadam;  v ← v − (1−β₂)·Δ²·sign(v − Δ²);           w ← w + η·m / (√v + τ)

m and v start at 0; there is no bias correction (as in the paper). Neutral settings equal
FedAvg: fedavgm with momentum 0 and lr 1; fedadam and fedyogi with β₁ = 0, β₂ = 1, τ = 1 and
lr 1 (v stays 0, so the step is Δ/τ = Δ); fedadagrad only approximately (τ = lr very large).
"""

from __future__ import annotations

import numpy as np

RULES = ("fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi")


class ServerOptimizer:
    """One of `RULES`, stepping the global weights with the round's aggregated update."""

    def __init__(
        self,
        rule: str = "fedavg",
        lr: float = 1.0,
        momentum: float = 0.9,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ):
        if rule not in RULES:
            raise ValueError(f"server optimizer must be one of {RULES}, got {rule!r}")
        if not lr > 0 or not tau > 0:
            raise ValueError(f"server optimizer: lr and tau must be > 0, got {lr!r}, {tau!r}")
        for name, value in (("momentum", momentum), ("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"server optimizer: {name} must be in [0, 1], got {value!r}")
        self.rule, self.lr, self.momentum = rule, float(lr), float(momentum)
        self.beta_1, self.beta_2, self.tau = float(beta_1), float(beta_2), float(tau)
        self.m = self.v = None

    def step(self, weights: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """The new global weights (in the weights' dtype) after the update `delta`."""
        if self.rule == "fedavg":
            return weights + delta
        d = delta.astype(np.float64)
        if self.m is None:
            self.m, self.v = np.zeros_like(d), np.zeros_like(d)
        if self.rule == "fedavgm":
            self.m = self.momentum * self.m + d
            return (weights + self.lr * self.m).astype(weights.dtype)
        if self.rule == "fedadagrad":
            self.v = self.v + d * d
            return (weights + self.lr * d / (np.sqrt(self.v) + self.tau)).astype(weights.dtype)
        self.m = self.beta_1 * self.m + (1.0 - self.beta_1) * d
        if self.rule == "fedadam":
            self.v = self.beta_2 * self.v + (1.0 - self.beta_2) * d * d
        else:  # fedyogi: v moves towards Δ² by at most (1 − β₂)·Δ² per round
            self.v = self.v - (1.0 - self.beta_2) * d * d * np.sign(self.v - d * d)
        step = self.lr * self.m / (np.sqrt(self.v) + self.tau)
        return (weights + step).astype(weights.dtype)

    def state(self) -> dict:
        """What the server keeps between rounds (its moments), for reports and checkpoints."""
        return {"m": self.m, "v": self.v}
