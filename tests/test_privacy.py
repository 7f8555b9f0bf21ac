"""The Rényi-DP accountant behind DP-SGD's ε report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from splitgrad.split import privacy


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
@pytest.mark.parametrize("order", [2, 3, 8])
def test_full_batch_is_the_gaussian_mechanism(sigma, order):
    assert privacy.rdp_step(1.0, sigma, order) == pytest.approx(order / (2 * sigma**2))


@pytest.mark.parametrize("q, sigma", [(0.01, 1.0), (0.1, 0.8), (0.3, 2.0)])
@pytest.mark.parametrize("order", [2, 3, 5])
def test_binomial_sum_equals_the_renyi_integral(q, sigma, order):
    """A_α = E_Q[(P/Q)^α] for P = (1−q)·N(0, σ²) + q·N(1, σ²), Q = N(0, σ²), by quadrature."""

    def integrand(x):
        base = math.exp(-x * x / (2 * sigma**2))
        ratio = (1 - q) + q * math.exp((2 * x - 1) / (2 * sigma**2))
        return base / (sigma * math.sqrt(2 * math.pi)) * ratio**order

    a, _ = integrate.quad(integrand, -40 * sigma, 40 * sigma + 2, limit=400)
    assert privacy.rdp_step(q, sigma, order) == pytest.approx(math.log(a) / (order - 1), rel=1e-7)


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    q, delta = 256 / 60000, 1e-5
    eps = [privacy.epsilon(q, 1.1, steps, delta)[0] for steps in (100, 1000, 10000)]
    assert eps[0] < eps[1] < eps[2]
    noisy = [privacy.epsilon(q, sigma, 1000, delta)[0] for sigma in (0.8, 1.1, 2.0)]
    assert noisy[0] > noisy[1] > noisy[2] > 0
    assert privacy.epsilon(q, 1.1, 0, delta)[0] == 0.0
    assert privacy.epsilon(q, 0.0, 10, delta)[0] == math.inf


def test_epsilon_is_the_best_order():
    q, sigma, steps, delta = 0.01, 1.0, 500, 1e-5
    eps, order = privacy.epsilon(q, sigma, steps, delta)
    by_order = [
        steps * privacy.rdp_step(q, sigma, a) + math.log(1 / delta) / (a - 1)
        for a in privacy.ORDERS
    ]
    assert eps == pytest.approx(min(by_order)) and order == privacy.ORDERS[int(np.argmin(by_order))]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sample rate"):
        privacy.rdp_step(1.5, 1.0, 2)
    with pytest.raises(ValueError, match="delta"):
        privacy.epsilon(0.1, 1.0, 10, 0.0)


def test_published_mnist_figure():
    """TensorFlow Privacy's tutorial setting (q = 256/60000, σ = 1.1, 60 epochs = 14,062
    steps, δ = 1e-5) is reported there as ε = 3.01 at RDP order 9."""
    eps, order = privacy.epsilon(256 / 60000, 1.1, 60 * 60000 // 256, 1e-5)
    assert eps == pytest.approx(3.01, abs=0.005) and order == 9
