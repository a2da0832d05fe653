"""analysis.stopped: the stopping-aware (median-unbiased) estimate and interval of a settled
configuration, against the t interval where nothing stops early and against simulated truth."""

import numpy as np
import pytest
from scipy import stats

from analysis.shrinkage import Prior
from analysis.stopped import schedule_after, stopped_estimate
from analysis.verdict import Design, verdict


def test_a_single_look_gives_the_t_interval():
    """One look at the horizon: nothing stops early, so the interval is the t interval (up to the
    simulation's error) and the estimate the plain mean."""
    n, m, sd = 6, 0.02, 0.01
    design = Design(delta=0.01, horizon=n, kind="spending")
    est, lo, hi = stopped_estimate(m, sd, [n], design, reps=20_000)
    half = stats.t.isf(0.025, n - 1) * sd / np.sqrt(n)
    assert est == pytest.approx(m, abs=0.05 * half)
    assert (lo, hi) == pytest.approx((m - half, m + half), abs=0.06 * half)


def test_schedule_continues_by_the_last_round():
    assert schedule_after([3, 5, 7], 12) == (3, 5, 7, 9, 11, 12)
    assert schedule_after([3], 8) == (3, 5, 7, 8)
    assert schedule_after([3, 4, 20], 20) == (3, 4, 20)


def _settle(x, prior=None):
    """A look after every seed: the replay over all 20 finds the stop; the estimate at it."""
    n = verdict(x, Design(delta=0.01), looks=range(3, x.size), prior=prior).decided_at or x.size
    return verdict(x[:n], Design(delta=0.01), looks=range(3, n), prior=prior, estimate=True)


@pytest.mark.parametrize("prior", [Prior(d0=np.inf, s0sq=1e-4, n_configs=10, df_total=np.inf), None])
def test_coverage_of_settled_configurations(prior, capsys):
    """Configurations settled by the SPRT (a look after every seed) at true means 0, 0.015 and
    0.03 (sd 0.01): the interval covers the truth about 95% of the time, with a known (borrowed)
    variance and on each configuration's own."""
    rng = np.random.default_rng(3)
    hit, shrink = [], []
    for mu in (0.0, 0.015, 0.03):
        for _ in range(25):
            v = _settle(rng.normal(mu, 0.01, 20), prior)
            hit.append(v.est_lo < mu < v.est_hi)
            if v.decided_at == 3 and v.verdict == "helps":
                shrink.append(v.estimate < v.mean)
    with capsys.disabled():
        print(f"\nstopping-aware interval coverage ({'borrowed' if prior else 'own'} variance): "
              f"{np.mean(hit):.3f} over {len(hit)}")
    assert np.mean(hit) >= 0.87   # 75 configurations: 3 Monte-Carlo se below 0.95
    # a configuration that crossed at the first look is estimated below its plain mean
    assert not shrink or np.mean(shrink) >= 0.8


def test_coverage_when_settling_stops_what_its_horizon_cannot_decide(capsys):
    """Noisy configurations (sd 0.03 against delta 0.01) settled by the curtailed SPRT, looks at
    3, 5, 7, ...: many are stopped undecided before the horizon, and the stopping-aware interval,
    simulated with the curtailment in the rule, still covers the truth about 95% of the time."""
    rng = np.random.default_rng(4)
    design = Design(delta=0.01, curtail=0.05)
    hit, stopped = [], 0
    for mu in (0.0, 0.01, 0.02):
        for _ in range(25):
            x = rng.normal(mu, 0.03, 20)
            for n in range(3, 21, 2):
                v = verdict(x[:n], design, looks=range(3, n, 2), estimate=True)
                if v.verdict != "undecided" or v.curtailed:
                    break
            else:
                v = verdict(x, design, looks=range(3, 20, 2), estimate=True)
            stopped += v.curtailed
            hit.append(v.est_lo < mu < v.est_hi)
    with capsys.disabled():
        print(f"\nstopping-aware coverage with curtailment: {np.mean(hit):.3f} over {len(hit)} "
              f"({stopped} stopped before the horizon)")
    assert stopped >= 10
    assert np.mean(hit) >= 0.87   # 75 configurations: 3 Monte-Carlo se below 0.95
