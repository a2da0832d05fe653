"""Breakthrough-rate / quality-given-breakthrough split (issue 7) on simulated paired outcomes."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.bimodal import (BIMODAL_ADVICE, breakthrough_table, is_bimodal, learned,
                              mcnemar_exact_p, rate_change_interval, robust_intervals,
                              summarize_breakthrough, wilson_interval)
from analysis.errors import AnalysisInputError

CHANCE, MARGIN = 0.21, 0.1


def simulate_pairs(rng, sims, n, p_base, p_fs, quality_shift=0.0, both_corr=0.0):
    """Paired runs of an all-or-nothing task: a run learns (metric ~0.9) or stays at chance.

    ``both_corr``: share of seeds whose FS outcome copies the baseline's (seed-level correlation).
    ``quality_shift``: FS adds this to the metric of a run that learned.
    """
    base_l = rng.random((sims, n)) < p_base
    fs_l = np.where(rng.random((sims, n)) < both_corr, base_l, rng.random((sims, n)) < p_fs)
    level = rng.normal(0.9, 0.03, (sims, n))  # seed-specific quality, shared by the pair
    base = np.where(base_l, level, CHANCE + rng.normal(0, 0.01, (sims, n)))
    fs = np.where(fs_l, level + quality_shift + rng.normal(0, 0.02, (sims, n)),
                  CHANCE + rng.normal(0, 0.01, (sims, n)))
    return base, fs, base_l, fs_l


def table_counts(base_l, fs_l):
    return ((base_l & fs_l).sum(-1), (fs_l & ~base_l).sum(-1), (base_l & ~fs_l).sum(-1),
            (~base_l & ~fs_l).sum(-1))


def test_learned_is_strictly_above_chance_plus_margin():
    assert learned([0.2, 0.31, 0.32, 0.9], 0.21, 0.1).tolist() == [False, False, True, True]
    assert learned([0.5, 0.5], [0.2, 0.45], 0.1).tolist() == [True, False]
    with pytest.raises(AnalysisInputError, match="margin"):
        learned([0.5], 0.2, -0.1)
    with pytest.raises(AnalysisInputError, match="missing"):
        learned([np.nan], 0.2)


def test_breakthrough_table_counts():
    base = [True, True, False, False, True]
    fs = [True, False, True, False, True]
    assert breakthrough_table(base, fs) == {"both": 2, "only_fs": 1, "only_base": 1, "neither": 1}
    with pytest.raises(AnalysisInputError, match="shape"):
        breakthrough_table([True], [True, False])


def test_mcnemar_exact_equals_binomtest_on_discordant_pairs():
    for b in range(0, 9):
        for c in range(0, 9):
            expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c).pvalue
            assert mcnemar_exact_p(b, c) == pytest.approx(expected)


def test_wilson_matches_scipy_and_newcombe_matches_a_published_example():
    for x, n in [(0, 5), (3, 5), (5, 5), (7, 20)]:
        ref = stats.binomtest(x, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(x, n) == pytest.approx((ref.low, ref.high), abs=1e-9)
    # Cavo et al. 2012 as worked in Fagerland, Lydersen & Laake, "Statistical Analysis of
    # Contingency Tables", ch. 8: table [[59, 6], [16, 80]], Newcombe square-and-add interval
    # -0.1186 to -0.0046 for the difference of the paired marginal rates.
    lo, hi = rate_change_interval(59, 6, 16, 80)
    assert (lo, hi) == pytest.approx((-0.1186, -0.0046), abs=6e-5)
    # No discordant pairs: interval still defined, contains 0, inside [-1, 1].
    lo, hi = rate_change_interval(3, 0, 0, 2)
    assert -1 <= lo < 0 < hi <= 1


@pytest.mark.parametrize("p_base, p_fs, corr", [(0.5, 0.5, 0.0), (0.4, 0.7, 0.0), (0.6, 0.6, 0.5),
                                                (0.2, 0.5, 0.3)])
@pytest.mark.parametrize("n", [5, 10, 20])
def test_rate_change_interval_coverage_at_small_n(p_base, p_fs, corr, n):
    rng = np.random.default_rng(n)
    base_l = rng.random((20_000, n)) < p_base
    # Copying keeps the marginal rates only when they are equal.
    copy = (rng.random((20_000, n)) < corr) & (p_base == p_fs)
    fs_l = np.where(copy, base_l, rng.random((20_000, n)) < p_fs)
    lo, hi = rate_change_interval(*table_counts(base_l, fs_l))
    true = p_fs - p_base
    assert np.mean((lo <= true) & (true <= hi)) >= 0.93  # measured 0.94-0.99


@pytest.mark.parametrize("n", [5, 10, 20])
@pytest.mark.parametrize("p, corr", [(0.5, 0.0), (0.3, 0.5), (0.8, 0.2)])
def test_breakthrough_test_rejects_at_most_at_nominal_rate_under_no_effect(n, p, corr):
    sims = 20_000
    _, _, base_l, fs_l = simulate_pairs(np.random.default_rng(n), sims, n, p, p, both_corr=corr)
    _, b, c, _ = table_counts(base_l, fs_l)
    rejected = np.mean(mcnemar_exact_p(b, c) < 0.05)
    assert rejected <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)


def test_breakthrough_test_gains_power_as_n_grows():
    rng = np.random.default_rng(3)
    power = []
    for n in (5, 10, 20, 40):
        _, _, base_l, fs_l = simulate_pairs(rng, 5000, n, 0.3, 0.8)
        _, b, c, _ = table_counts(base_l, fs_l)
        power.append(np.mean(mcnemar_exact_p(b, c) < 0.05))
    assert power == sorted(power) and power[0] < power[-1] - 0.5
    assert power[-1] > 0.9


def test_quality_given_breakthrough_recovers_a_known_effect():
    # FS changes neither the breakthrough rate nor chance runs; it adds +0.04 when a run learns.
    rng = np.random.default_rng(4)
    sims, n, shift = 400, 12, 0.04
    base, fs, _, _ = simulate_pairs(rng, sims, n, 0.6, 0.6, quality_shift=shift, both_corr=0.5)
    df = pd.DataFrame({"config": np.repeat(np.arange(sims), n), "base": base.ravel(),
                       "fs": fs.ravel()})
    out = summarize_breakthrough(df, "config", "base", "fs", chance=CHANCE, margin=MARGIN,
                                 n_resamples=200)
    has_q = out.quality_lo.notna()
    assert has_q.mean() > 0.95
    q_mean = out.quality_mean[has_q].astype(float)
    assert q_mean.mean() == pytest.approx(shift, abs=0.004)
    covered = (out.quality_lo[has_q].astype(float) <= shift) & (shift <= out.quality_hi[has_q]
                                                                  .astype(float))
    assert covered.mean() > 0.9
    # The breakthrough rate does not move: its interval covers 0 in nearly every experiment.
    assert ((out.rate_lo <= 0) & (0 <= out.rate_hi)).mean() > 0.93


def test_is_bimodal_rule():
    assert is_bimodal([0.21, 0.22, 0.95, 1.0, 0.2, 0.97], CHANCE, MARGIN)
    assert is_bimodal([0.23, 0.22, 0.40, 0.41, 0.23], 0.23, 0.05)  # "query after": ~0.40 vs 0.23
    assert not is_bimodal(np.linspace(0.2, 1.0, 10), CHANCE, MARGIN)  # one wide spread
    assert not is_bimodal([0.21, 0.2, 0.22, 0.95], CHANCE, MARGIN)  # a single outlier
    assert not is_bimodal([0.21, 0.2, 0.22, 0.21], CHANCE, MARGIN)  # all at chance
    assert not is_bimodal([0.9, 0.95, 0.97], CHANCE, MARGIN)
    with pytest.raises(AnalysisInputError):
        is_bimodal([[0.2]], CHANCE)


def test_robust_intervals_match_numpy_and_a_scipy_bootstrap():
    rng = np.random.default_rng(5)
    rows = [rng.normal(0, 1, k) for k in (4, 7, 9)]
    D = np.full((3, 9), np.nan)
    for g, r in enumerate(rows):
        D[g, :len(r)] = r
    out = robust_intervals(D, n_resamples=20_000, seed=6)
    for g, r in enumerate(rows):
        assert out["median"][g] == pytest.approx(np.median(r))
        assert out["iqm"][g] == pytest.approx(stats.trim_mean(r, 0.25))
        ref = stats.bootstrap((r,), np.median, method="percentile", n_resamples=20_000,
                              rng=g).confidence_interval
        assert out["median_lo"][g] == pytest.approx(ref.low, abs=0.05)
        assert out["median_hi"][g] == pytest.approx(ref.high, abs=0.05)
        ref = stats.bootstrap((r,), lambda x, axis: stats.trim_mean(x, 0.25, axis=axis),
                              method="percentile", n_resamples=20_000, rng=g).confidence_interval
        assert out["iqm_lo"][g] == pytest.approx(ref.low, abs=0.05)
        assert out["iqm_hi"][g] == pytest.approx(ref.high, abs=0.05)


def breakthrough_frame():
    rows = []
    outcomes = {  # config: list of (base, fs) metric per seed
        "bimodal": [(0.21, 0.95), (0.2, 0.22), (0.96, 0.98), (0.97, 0.2), (0.21, 0.97)],
        "steady": [(0.5, 0.52), (0.55, 0.6), (0.52, 0.58), (0.51, 0.5)],
        "single": [(0.2, 0.9)],
    }
    for config, pairs in outcomes.items():
        for seed, (b, f) in enumerate(pairs):
            rows.append({"task": "kv", "config": config, "seed": seed, "base": b, "fs": f})
    return pd.DataFrame(rows)


def test_summarize_breakthrough_matches_the_scalar_functions_per_group():
    df = breakthrough_frame()
    out = summarize_breakthrough(df, ["task", "config"], "base", "fs", chance=CHANCE,
                                 margin=MARGIN, n_resamples=500).set_index("config")
    assert not any(isinstance(v, float) and math.isnan(v) for v in out.to_numpy().ravel())
    for config, g in df.groupby("config"):
        row = out.loc[config]
        bl, fl = learned(g.base, CHANCE, MARGIN), learned(g.fs, CHANCE, MARGIN)
        table = breakthrough_table(bl, fl)
        assert {k: row[k] for k in table} == table
        assert row.mcnemar_p == pytest.approx(mcnemar_exact_p(table["only_fs"], table["only_base"]))
        assert row.rate_change == pytest.approx(fl.mean() - bl.mean())
        d = (g.fs - g.base).to_numpy()
        assert row["median"] == pytest.approx(np.median(d))
        both = d[bl & fl]
        if len(both) >= 2:
            ci = stats.t.interval(0.95, len(both) - 1, loc=both.mean(), scale=stats.sem(both))
            assert (row.quality_lo, row.quality_hi) == pytest.approx(ci)
        else:
            assert row.quality_lo is None and "no quality interval" in row.notes
    assert out.loc["bimodal", "bimodal"] and out.loc["bimodal", "advice"] == BIMODAL_ADVICE
    assert not out.loc["steady", "bimodal"] and out.loc["steady", "advice"] == ""
    assert out.loc["single", "rate_lo"] is not None and "n=1" in out.loc["single", "notes"]


def test_summarize_breakthrough_uses_recorded_learned_flags_and_per_row_chance():
    df = breakthrough_frame()
    df["base_learned"] = df.base > 0.5
    df["fs_learned"] = df.fs > 0.5
    df["chance"] = CHANCE
    a = summarize_breakthrough(df, "config", "base", "fs", base_learned_col="base_learned",
                               fs_learned_col="fs_learned", chance="chance", n_resamples=200)
    b = summarize_breakthrough(df, "config", "base", "fs", chance=0.5, margin=0.0, n_resamples=200)
    assert (a[["both", "only_fs", "only_base", "neither"]].to_numpy()
            == b[["both", "only_fs", "only_base", "neither"]].to_numpy()).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(base_col="nope"), "missing column"),
    (dict(chance=None), "chance"),
    (dict(chance="nope"), "chance column"),
    (dict(base_learned_col="base"), "both learned columns"),
])
def test_summarize_breakthrough_bad_input(kwargs, message):
    args = dict(group_cols="config", base_col="base", fs_col="fs", chance=CHANCE)
    args.update(kwargs)
    with pytest.raises(AnalysisInputError, match=message):
        summarize_breakthrough(breakthrough_frame(), **args)


def test_chance_must_be_constant_within_a_configuration():
    df = breakthrough_frame()
    df["chance"] = np.where(df.seed == 0, 0.2, 0.25)
    with pytest.raises(AnalysisInputError, match="varies within a configuration"):
        summarize_breakthrough(df, "config", "base", "fs", chance="chance", n_resamples=100)
