"""analysis.shrinkage: the family variance prior (Smyth 2004) against simulations with known truth;
coverage and width of the borrowed-variance intervals; a family of one is today's t."""

import math

import numpy as np
import pytest
from scipy import special, stats

from analysis import sequential
from analysis import shrinkage as sh
from analysis.stats import mean_interval

LEVEL = 0.95


def test_trigamma_inverse_inverts_scipys_trigamma():
    y = np.array([0.01, 0.3, 1.0, 4.0, 50.0, 3000.0])
    assert sh.trigamma_inverse(special.polygamma(1, y)) == pytest.approx(y, rel=1e-6)


@pytest.mark.parametrize("d0,s0sq,d", [(8.0, 0.01, 4), (3.0, 2.0, 2), (20.0, 1e-4, 9)])
def test_fit_recovers_a_known_prior(d0, s0sq, d):
    """Variances drawn from the model itself (1/sigma^2 ~ chi2(d0) / (d0 s0^2), then s^2 ~ sigma^2
    chi2(d) / d): the moment estimator finds d0 and s0^2 again."""
    rng = np.random.default_rng(int(d0 * 10 + d))
    g = 20_000
    sig2 = s0sq * d0 / rng.chisquare(d0, g)
    s2 = sig2 * rng.chisquare(d, g) / d
    p = sh.fit_prior(s2, d)
    assert p.d0 == pytest.approx(d0, rel=0.15) and p.s0sq == pytest.approx(s0sq, rel=0.05)
    assert p.n_configs == g and p.df_total == g * d
    # the array version agrees with the scalar one
    a, b, tot = sh.fit_prior_rows(s2[None, :500], d)
    q = sh.fit_prior(s2[:500], d)
    assert a[0] == pytest.approx(q.d0) and b[0] == pytest.approx(q.s0sq) and tot[0] == 500 * d


def test_equal_variances_give_an_infinite_prior_and_a_family_of_one_is_todays_t():
    p = sh.fit_prior([1.0, 1.0, 1.0, 1.0], 2)
    assert math.isinf(p.d0) and p.s0sq == pytest.approx(math.exp(-special.digamma(1.0)), rel=1e-9)
    assert p.prior_df(2) == 6.0            # capped: the family has 8 df in all
    x = [0.01, 0.03, -0.02, 0.015]
    for prior in (None, sh.Prior.none(), sh.family_prior({"a": x}), sh.fit_prior([0.1, 0.2], 3)):
        lo, hi, df = sh.moderated_interval(x, prior)
        assert (lo, hi) == pytest.approx(mean_interval(x)) and df == 3
        assert sh.moderated_p(x, prior) == pytest.approx(stats.ttest_1samp(x, 0.0).pvalue)
    assert not sh.family_prior({"a": x, "b": x}).applies


def test_homogeneous_family_gains_many_df_heterogeneous_little(capsys):
    """2000 families of 10 configurations at 5 seeds: the prior df a configuration is given."""
    rng = np.random.default_rng(3)
    n, reps = 5, 2000
    sd = np.ones(10)
    S2_hom = (rng.normal(0, 1, (reps, 10, n)) * sd[None, :, None]).var(axis=2, ddof=1)
    sd[0] = 3.0
    S2_het = (rng.normal(0, 1, (reps, 10, n)) * sd[None, :, None]).var(axis=2, ddof=1)
    gains = {}
    for name, S2 in (("homogeneous", S2_hom), ("heterogeneous", S2_het)):
        d0, s0sq, tot = sh.family_priors_rows(S2, n - 1)
        _, df = sh.moderate_rows(S2, n - 1, d0, s0sq, tot[:, None])
        gains[name] = df - (n - 1)
    with capsys.disabled():
        print(f"\nprior df at n=5 in a family of 10 (capped at 36): homogeneous median "
              f"{np.median(gains['homogeneous']):.1f}, heterogeneous median "
              f"{np.median(gains['heterogeneous']):.1f} (the 3x one: "
              f"{np.mean(gains['heterogeneous'][:, 0] == 0):.0%} keep their own variance)")
    assert np.median(gains["homogeneous"]) >= 30
    assert np.median(gains["heterogeneous"]) < np.median(gains["homogeneous"]) / 2
    assert np.mean(gains["heterogeneous"][:, 0] == 0) > 0.8
    # one family by name: the scalar rule, and the vectorised one agree
    fam = {f"c{i}": S2_het[0, i] for i in range(10)}
    x = {k: np.array([-1.0, 1.0]) * math.sqrt(v / 2) for k, v in fam.items()}  # variance v, 1 df
    scalar = sh.family_priors(x)
    d0, _, _ = sh.family_priors_rows(S2_het[:1], 1)
    for j, k in enumerate(x):
        assert d0[0, j] == pytest.approx(scalar[k].d0 if scalar[k].applies else 0.0)
    flagged = [k for k, p in scalar.items() if p.outlier]
    assert all("out of line" in scalar[k].describe() for k in flagged)
    assert any("prior df" in p.describe() for p in scalar.values())


def _simulate(n, het, reps, rng, g=10):
    """Coverage per configuration and widths (today's t, borrowed) of a family of g configurations
    at true mean 0; in the heterogeneous family configuration 0 is 3x noisier."""
    sd = np.ones(g)
    if het:
        sd[0] = 3.0
    D = rng.normal(0.0, 1.0, (reps, g, n)) * sd[None, :, None]
    m, s2 = D.mean(axis=2), D.var(axis=2, ddof=1)
    d0, s0sq, tot = sh.family_priors_rows(s2, n - 1)
    post, df = sh.moderate_rows(s2, n - 1, d0, s0sq, tot[:, None])
    half = stats.t.isf((1 - LEVEL) / 2, df) * np.sqrt(post / n)
    today = stats.t.isf((1 - LEVEL) / 2, n - 1) * np.sqrt(s2 / n)
    return (np.abs(m) < half).mean(axis=0), today, half, post, df


@pytest.mark.parametrize("n", [3, 5, 10])
def test_coverage_at_nominal(n, capsys):
    rng = np.random.default_rng(n)
    reps = 6000
    mc = 3 * math.sqrt(LEVEL * (1 - LEVEL) / reps)
    cov_hom, *_ = _simulate(n, False, reps, rng)
    cov_het, *_ = _simulate(n, True, reps, rng)
    with capsys.disabled():
        print(f"\nn={n}: coverage (nominal {LEVEL}) homogeneous {cov_hom.mean():.3f} "
              f"[{cov_hom.min():.3f}-{cov_hom.max():.3f}]; heterogeneous: the 3x configuration "
              f"{cov_het[0]:.3f}, the others {cov_het[1:].mean():.3f}, family {cov_het.mean():.3f}")
    # every configuration of a homogeneous family, within Monte-Carlo error
    assert np.all(np.abs(cov_hom - LEVEL) < mc + 0.01)
    # a heterogeneous family on average; the others never below nominal
    assert cov_het.mean() > LEVEL - mc / math.sqrt(10) - 0.005
    assert np.all(cov_het[1:] > LEVEL - mc)
    # the noisy one: what the guard buys (unguarded: 0.75 at n = 3, 0.87 at n = 10)
    assert cov_het[0] > {3: 0.82, 5: 0.89, 10: 0.93}[n]


def test_width_at_three_seeds_in_a_homogeneous_family_of_ten(capsys):
    """The fixed 95% interval and the first look's repeated interval (the spending design's, with
    a horizon of 20), borrowed against today's own-variance t."""
    rng = np.random.default_rng(10)
    n, H = 3, 20
    _, today, half, post, df = _simulate(n, False, 4000, rng)
    fixed_ratio = today.mean() / half.mean()
    a = sequential.spent(n / H, 0.025)
    rep_today = stats.t.isf(a, n - 1) * np.sqrt(np.mean(today / stats.t.isf(0.025, n - 1)) ** 2)
    d0 = np.vectorize(sequential.prior_df_step)(df - (n - 1))
    c = np.array([sequential.t_boundaries((n,), H, 0.025, prior_df=float(x))[0] for x in d0.ravel()])
    rep_borrowed = (c.reshape(d0.shape) * np.sqrt(post / n)).mean()
    rep_ratio = rep_today / rep_borrowed
    with capsys.disabled():
        print(f"\nwidth ratio at n=3, family of 10 (today / borrowed): fixed 95% {fixed_ratio:.2f}x, "
              f"first look's repeated interval {rep_ratio:.2f}x; mean df {df.mean():.1f}")
    # The 95% ratio cannot reach 2x. Today's mean width is 2 t_2 E[s] / sqrt(3), E[s] = c4(3) sigma;
    # no valid 95% interval for the mean of 3 normal deltas is shorter on average than the one
    # with sigma known (2 z sigma / sqrt(3)), so 1.94x is the most any borrowing can give; pooling
    # the whole family's 20 degrees of freedom (exact under homogeneity) gives 1.85x.
    def c4(k):
        return math.sqrt(2.0 / (k - 1)) * math.exp(math.lgamma(k / 2) - math.lgamma((k - 1) / 2))
    today_mean = stats.t.isf(0.025, n - 1) * c4(n)
    oracle = today_mean / stats.norm.isf(0.025)
    pooled = today_mean / (stats.t.isf(0.025, 10 * (n - 1)) * c4(10 * (n - 1) + 1))
    with capsys.disabled():
        print(f"bounds: sigma known {oracle:.3f}x, the family's 20 df pooled {pooled:.3f}x")
    assert today.mean() / (stats.norm.isf(0.025) / math.sqrt(n)) == pytest.approx(oracle, rel=0.03)
    assert 1.93 < oracle < 1.95 and 1.84 < pooled < 1.86
    assert 1.5 < fixed_ratio < pooled
    assert rep_ratio > 3.0


def test_racing_with_a_family_prior_keeps_its_error_and_stops_sooner():
    """Racing (fsray.search.objective.race_decision) with the family prior: a candidate whose true
    mean equals the incumbent's bound is raced out at most (1 - level) / 2 of the time over its
    looks; a clearly worse one is stopped at its first look, where its own 2 df cannot."""
    from fsray.search.objective import race_decision
    from fsray.search.space import RacingSection

    racing = RacingSection(enabled=True, min_seeds=3, level=0.9)
    prior = sh.Prior(d0=40.0, s0sq=0.05 ** 2, n_configs=10, df_total=400.0)
    rng = np.random.default_rng(17)
    n_planned, reps = 8, 1500
    d = rng.normal(0.0, 0.05, (reps, n_planned))
    stopped = sum(any(race_decision(list(row[:n]), n_planned, 0.0, racing, prior=prior)
                      for n in range(3, n_planned)) for row in d)
    assert stopped / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    worse = [-0.15, -0.02, -0.10]
    assert race_decision(worse, n_planned, 0.0, racing) is None
    assert race_decision(worse, n_planned, 0.0, racing, prior=prior) is not None
