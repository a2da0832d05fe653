"""Measured coverage of the interval methods on simulated paired deltas (issue 3).

The default method must cover the true mean of normal deltas within 2 points of 95% at n = 3..20;
the percentile bootstrap must be shown to undercover at n = 3 (why it is not the default).
"""

import numpy as np
import pytest

from analysis.stats import mean_intervals

N_EXPERIMENTS = 40_000  # Monte Carlo s.e. of a 95% coverage: sqrt(.95 * .05 / 40000) = 0.11 points


def coverage(X, true_mean, **kwargs):
    lo, hi = mean_intervals(X, level=0.95, **kwargs)
    return np.mean((lo <= true_mean) & (true_mean <= hi))


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_default_interval_covers_normal_deltas_within_two_points(n):
    rng = np.random.default_rng(n)
    X = rng.normal(0.01, 0.03, size=(N_EXPERIMENTS, n))
    assert abs(coverage(X, 0.01) - 0.95) <= 0.02


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_default_interval_on_skewed_deltas_degrades_but_stays_usable(n):
    # Exponential minus its mean: a long right tail. The t interval loses a few points at small n
    # (measured ~0.88 at n=3, ~0.92 at n=20) and approaches nominal as n grows.
    rng = np.random.default_rng(100 + n)
    X = rng.exponential(0.05, size=(N_EXPERIMENTS, n)) - 0.05
    assert 0.86 <= coverage(X, 0.0) <= 0.96


@pytest.mark.parametrize("dist", ["normal", "skewed"])
def test_bootstrap_intervals_undercover_at_three_seeds(dist):
    rng = np.random.default_rng(7)
    shape = (4000, 3)  # s.e. of coverage ~0.7 points: the gaps asserted are > 10 points
    X = rng.normal(0, 1, shape) if dist == "normal" else rng.exponential(1, shape) - 1
    percentile = coverage(X, 0.0, method="percentile", n_resamples=999, seed=1)
    bca = coverage(X, 0.0, method="bca", n_resamples=999, seed=2)
    t = coverage(X, 0.0)
    assert percentile < 0.85 and bca < 0.85  # nominal 0.95; measured ~0.75 (normal), ~0.69 (skewed)
    assert t > percentile + 0.1
