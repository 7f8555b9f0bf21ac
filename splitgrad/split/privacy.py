"""How much privacy DP-SGD spent: an ε for a chosen δ, by Rényi-DP accounting.

One DP-SGD step is the sampled Gaussian mechanism: each example is in the batch with
probability q, and the sum of clipped gradients gets Gaussian noise of σ times the clip bound.
For an integer order α ≥ 2 its Rényi divergence is (Mironov, Talwar & Zhang 2019, Poisson
sampling)

    ε_step(α) = log A_α / (α − 1),   A_α = Σ_k C(α, k) (1 − q)^(α−k) q^k exp((k² − k) / (2σ²)),

steps compose by adding, ε_RDP(α) = T · ε_step(α), and an RDP guarantee becomes (ε, δ)-DP with

    classic (Mironov 2017, Proposition 3):   ε = min_α ε_RDP(α) + log(1/δ) / (α − 1)
    tight (Balle et al. 2020, Theorem 21; what Opacus uses):
        ε = min_α ε_RDP(α) + log((α − 1)/α) − (log δ + log α) / (α − 1)

The tight one is never larger (about 15 % smaller in the usual settings); DP-SGD reports both.
`noise_for` inverts it: the smallest σ whose ε after the planned steps stays within a target.

The accountant assumes Poisson sampling (each example in a batch with probability q = B/n),
which is how DP-SGD draws its batches by default (dp_sgd.py); with `sampling="shuffle"` the
report uses the same q, the usual approximation.
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


def epsilon(
    q: float, sigma: float, steps: int, delta: float, conversion: str = "classic"
) -> tuple[float, int]:
    """(ε, the order α that gave it) for `steps` DP-SGD steps at sample rate q and noise σ;
    `conversion` "classic" (Mironov) or "tight" (Balle et al.)."""
    check_delta(delta)
    if conversion not in ("classic", "tight"):
        raise ValueError(f"conversion must be 'classic' or 'tight', got {conversion!r}")
    if steps <= 0 or q == 0.0:
        return 0.0, ORDERS[0]
    best = (math.inf, ORDERS[0])
    for order in ORDERS:
        rdp = steps * rdp_step(q, sigma, order)
        if conversion == "classic":
            eps = rdp + math.log(1.0 / delta) / (order - 1)
        else:
            eps = rdp + math.log1p(-1.0 / order) - (math.log(delta) + math.log(order)) / (order - 1)
        best = min(best, (max(eps, 0.0), order))
    return best


def noise_for(
    target_epsilon: float, q: float, steps: int, delta: float, conversion: str = "tight"
) -> float:
    """The smallest noise multiplier σ (to 0.1 %) whose ε after `steps` steps at sample rate q
    is at most `target_epsilon` (bisection: ε falls as σ grows)."""
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be > 0, got {target_epsilon!r}")
    if steps <= 0 or q == 0.0:
        return 0.0

    def eps(sigma):
        return epsilon(q, sigma, steps, delta, conversion)[0]

    low, high = 0.05, 1.0
    while eps(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(
                f"no noise multiplier below 1e4 reaches ε = {target_epsilon:g} "
                f"in {steps} steps at q = {q:g}; train fewer steps or allow more ε"
            )
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (low, mid) if eps(mid) <= target_epsilon else (mid, high)
    return high
