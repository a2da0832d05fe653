"""The alpha-spending settling design by simulation (issue 13 item 4; selectable since issue 20
made the SPRT the default: tests/test_sprt.py), vectorised, a few thousand replications.

Paired deltas: normal with the researchers' seed noise (sd 0.01-0.08) and the all-or-nothing
(bimodal) model; a first look at 3 seeds, then one every 2 seeds up to 20:

* no effect: "helps" or "hurts" over all looks at most alpha (within Monte-Carlo error);
* an effect of exactly delta: "no effect >= delta" at most alpha;
* an effect of 2 delta: power reported (and required where the design can reach it);
* seeds to a verdict against a fixed-n design of the same power.
"""

import math

import numpy as np
import pytest

from analysis import settle_sim as ss
from analysis.verdict import Design

REPS = 4000
ALPHA = 0.05
HORIZON = 20
LOOKS = ss.schedule(HORIZON, 2)  # 3, 5, ..., 19, 20
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)  # three Monte-Carlo standard errors


def _design(delta):
    return Design(delta=delta, alpha=ALPHA, horizon=HORIZON, kind="spending")


# (sd, delta): the researchers' noise at the default delta, and delta / sd from 0.5 to 1.5
CASES = [(0.01, 0.01), (0.03, 0.01), (0.08, 0.01), (0.03, 0.03), (0.02, 0.01), (0.08, 0.12)]


@pytest.mark.parametrize("sd,delta", CASES)
def test_normal_deltas_error_rates_over_all_looks(sd, delta):
    rng = np.random.default_rng(int(sd * 1e4 + delta * 1e6))
    d = _design(delta)
    null = ss.rates(ss.sequential_verdicts(ss.normal_deltas(rng, REPS, HORIZON, 0.0, sd), d, LOOKS))
    at_delta = ss.rates(ss.sequential_verdicts(ss.normal_deltas(rng, REPS, HORIZON, delta, sd), d, LOOKS))
    at_minus = ss.rates(ss.sequential_verdicts(ss.normal_deltas(rng, REPS, HORIZON, -delta, sd), d, LOOKS))
    assert null["helps"] + null["hurts"] <= ALPHA + SLACK
    assert null["helps"] <= ALPHA / 2 + SLACK and null["hurts"] <= ALPHA / 2 + SLACK
    assert at_delta["no effect"] <= ALPHA + SLACK
    assert at_minus["no effect"] <= ALPHA + SLACK


def test_bimodal_deltas_error_rates_over_all_looks():
    """All-or-nothing seeds (a run learns or stays at chance; 90% of pairs share the outcome):
    the t statistic sees rare +-0.69 swings; the error rates still hold."""
    rng = np.random.default_rng(2)
    for quality_sd in (0.005, 0.01, 0.02):
        d = _design(0.01)
        null = ss.rates(ss.sequential_verdicts(
            ss.bimodal_deltas(rng, REPS, HORIZON, 0.0, quality_sd=quality_sd), d, LOOKS))
        at_delta = ss.rates(ss.sequential_verdicts(
            ss.bimodal_deltas(rng, REPS, HORIZON, 0.01, quality_sd=quality_sd), d, LOOKS))
        assert null["helps"] + null["hurts"] <= ALPHA + SLACK, quality_sd
        assert at_delta["no effect"] <= ALPHA + SLACK, quality_sd


def test_bimodal_model_has_the_intended_mean():
    rng = np.random.default_rng(4)
    D = ss.bimodal_deltas(rng, 200_000, 1, 0.02)
    assert D.mean() == pytest.approx(0.02, abs=0.004)


@pytest.mark.parametrize("sd,delta,min_power", [(0.01, 0.01, 0.99), (0.02, 0.01, 0.9),
                                                (0.08, 0.01, 0.0)])
def test_power_at_twice_delta(sd, delta, min_power, capsys):
    rng = np.random.default_rng(9)
    r = ss.rates(ss.sequential_verdicts(ss.normal_deltas(rng, REPS, HORIZON, 2 * delta, sd),
                                        _design(delta), LOOKS))
    with capsys.disabled():
        print(f"\npower P(helps | 2 delta) at sd {sd}, delta {delta}: {r['helps']:.3f} "
              f"(mean seeds {r['mean_seeds']:.1f})")
    assert r["helps"] >= min_power
    assert r["hurts"] <= SLACK  # the wrong sign is (almost) never declared


def test_expected_seeds_against_a_fixed_design_of_equal_power(capsys):
    """A family of configurations at 0, delta and 2 delta (delta / sd = 1): the sequential design
    reaches as many correct verdicts as the fixed-n design with fewer seeds on average."""
    rng = np.random.default_rng(12)
    delta, sd = 0.01, 0.01
    d = _design(delta)
    seq_n, seq_ok, fixed_ok = [], [], {}
    for mu in (0.0, delta, 2 * delta):
        D = ss.normal_deltas(rng, REPS, 60, mu, sd)
        r = ss.sequential_verdicts(D[:, :HORIZON], d, LOOKS)
        seq_n.append(r["n"].mean())
        seq_ok.append(ss.correct(r["code"], mu, delta).mean())
        for n in range(3, 61):
            f = ss.fixed_verdicts(D, d, n)
            fixed_ok[n] = fixed_ok.get(n, 0.0) + ss.correct(f["code"], mu, delta).mean() / 3
    target = min(np.mean(seq_ok), max(fixed_ok.values())) - 0.005
    n_fixed = min(n for n, ok in fixed_ok.items() if ok >= target)
    ratio = np.mean(seq_n) / n_fixed
    with capsys.disabled():
        print(f"\nmean seeds {np.mean(seq_n):.2f} vs fixed n {n_fixed} at equal power "
              f"({np.mean(seq_ok):.3f} correct): ratio {ratio:.2f}")
    assert ratio <= 0.8

