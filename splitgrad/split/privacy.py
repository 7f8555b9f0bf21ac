"""How much privacy DP-SGD spent: an ε for a chosen δ, by Rényi-DP accounting.

One DP-SGD step is the sampled Gaussian mechanism: each example is in the batch with
probability q, and the sum of clipped gradients gets Gaussian noise of σ times the clip bound.
For an integer order α ≥ 2 its Rényi divergence is (Mironov, Talwar & Zhang 2019, Poisson
sampling)

    ε_step(α) = log A_α / (α − 1),   A_α = Σ_k C(α, k) (1 − q)^(α−k) q^k exp((k² − k) / (2σ²)),

steps compose by adding, ε_RDP(α) = T · ε_step(α), and an RDP guarantee becomes (ε, δ)-DP with
ε = min over α of ε_RDP(α) + log(1/δ) / (α − 1) (Mironov 2017, Proposition 3).

splitgrad draws batches by shuffling, not by Poisson sampling; like the common DP libraries, the
report uses q = B / n as if it were Poisson sampling, which is the usual approximation.
"""

from __future__ import annotations

import math

ORDERS = tuple(range(2, 257))  # integer Rényi orders searched for the smallest ε


def rdp_step(q: float, sigma: float, order: int) -> float:
    """ε_step(α) of one sampled-Gaussian step: sample rate q, noise multiplier σ, order α."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"sample rate q must be in [0, 1], got {q!r}")
    if q == 0.0:
        return 0.0
    if sigma <= 0.0:
        return math.inf
    if q == 1.0:
        return order / (2.0 * sigma**2)  # the plain Gaussian mechanism
    # log A_α as a log-sum-exp of the binomial terms (the exp factor grows quickly with k).
    logs = [
        math.lgamma(order + 1)
        - math.lgamma(k + 1)
        - math.lgamma(order - k + 1)
        + (order - k) * math.log1p(-q)
        + k * math.log(q)
        + (k * k - k) / (2.0 * sigma**2)
        for k in range(order + 1)
    ]
    top = max(logs)
    log_a = top + math.log(sum(math.exp(v - top) for v in logs))
    return log_a / (order - 1)


def check_delta(delta: float, who: str = "privacy") -> float:
    """δ as a float, or a ValueError (naming `who`) when it is not a probability in (0, 1)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"{who}: delta must be in (0, 1), got {delta!r}")
    return float(delta)


def epsilon(q: float, sigma: float, steps: int, delta: float) -> tuple[float, int]:
    """(ε, the order α that gave it) for `steps` DP-SGD steps at sample rate q and noise σ."""
    check_delta(delta)
    if steps <= 0 or q == 0.0:
        return 0.0, ORDERS[0]
    best = (math.inf, ORDERS[0])
    for order in ORDERS:
        eps = steps * rdp_step(q, sigma, order) + math.log(1.0 / delta) / (order - 1)
        best = min(best, (eps, order))
    return best
