"""analysis.sequential: alpha-spending boundaries against independent references (scipy's
multivariate normal, plain simulation of the t statistics)."""

import math

import numpy as np
import pytest
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.sequential import MIN_SEEDS, RHO, spent, t_boundaries, z_boundaries


def test_one_look_is_the_plain_quantile():
    a = 0.025
    for n, H in ((5, 20), (20, 20), (30, 20)):
        share = spent(min(n / H, 1.0), a)
        assert z_boundaries((n,), H, a)[0] == pytest.approx(stats.norm.isf(share), abs=1e-9)
        assert t_boundaries((n,), H, a)[0] == pytest.approx(stats.t.isf(share, n - 1), abs=1e-9)


def test_two_looks_match_the_bivariate_normal():
    a, H, looks = 0.05, 20, (8, 20)
    z1, z2 = z_boundaries(looks, H, a)
    rho = math.sqrt(looks[0] / looks[1])  # corr(Z_1, Z_2) of the canonical joint distribution
    mvn = stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])
    # P(Z1 < z1, Z2 >= z2) = P(Z1 < z1) - P(Z1 < z1, Z2 < z2)
    second = stats.norm.cdf(z1) - mvn.cdf([z1, z2])
    assert stats.norm.sf(z1) == pytest.approx(spent(looks[0] / H, a), rel=1e-6)
    assert second == pytest.approx(spent(1.0, a) - spent(looks[0] / H, a), abs=2e-5)


def test_t_boundaries_hold_the_error_over_all_looks_by_simulation():
    """Normal paths, independent of the calibration's: the share that ever crosses is a."""
    a, H = 0.025, 20
    looks = (3, 5, 7, 9, 11, 13, 15, 17, 19, 20)
    c = np.array(t_boundaries(looks, H, a))
    rng = np.random.default_rng(7)
    reps = 100_000
    x = rng.standard_normal((reps, H))
    n = np.array(looks)
    cs, cs2 = np.cumsum(x, 1)[:, n - 1], np.cumsum(x * x, 1)[:, n - 1]
    m = cs / n
    t = m / np.sqrt((cs2 - n * m * m) / (n - 1) / n)
    rate = (t >= c).any(axis=1).mean()
    assert abs(rate - a) < 4 * math.sqrt(a * (1 - a) / reps)


def test_adding_a_look_never_moves_an_earlier_boundary():
    a = 0.05
    full = t_boundaries((3, 6, 9, 12), 20, a)
    assert t_boundaries((3, 6, 9), 20, a) == full[:3]
    assert t_boundaries((3, 6), 20, a) == full[:2]


def test_looks_beyond_the_horizon_spend_nothing():
    c = t_boundaries((5, 10, 12), 10, 0.025)
    assert math.isfinite(c[0]) and math.isfinite(c[1]) and c[2] == math.inf


def test_spending_is_the_power_family():
    assert spent(0.5, 0.05, 2.0) == pytest.approx(0.0125)
    assert spent(2.0, 0.05) == pytest.approx(0.05)
    assert RHO > 0


@pytest.mark.parametrize("looks,H,a", [((2,), 20, 0.025), ((5, 5), 20, 0.025), ((5,), 2, 0.025),
                                       ((5,), 20, 0.7), ((6, 4), 20, 0.025)])
def test_bad_designs_are_refused(looks, H, a):
    with pytest.raises(AnalysisInputError):
        t_boundaries(looks, H, a)
    assert MIN_SEEDS == 3
