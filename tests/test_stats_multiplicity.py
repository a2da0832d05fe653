"""Holm, Benjamini-Hochberg and the winner's-curse flag against hand-computed examples."""

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisInputError
from analysis.multiplicity import (benjamini_hochberg, expected_max_of_normals, holm,
                                   winners_curse)


def test_holm_hand_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_bh_hand_example():
    # sorted: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 -> running min from top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # a later small ratio pulls earlier ones down: 0.02*3/1=0.06, 0.025*3/2=0.0375, 0.03*3/3=0.03
    assert benjamini_hochberg([0.03, 0.02, 0.025]) == pytest.approx([0.03, 0.03, 0.03])


def holm_by_definition(p):
    """Closed testing with Bonferroni: hypothesis i is rejected at alpha iff every hypothesis with
    a smaller-or-equal p is rejected by (m - j) p_(j) <= alpha; the adjusted p is the smallest
    alpha rejecting it. Checked on a grid of alphas (independent of the step-down formula)."""
    m, order = len(p), np.argsort(p, kind="stable")
    alphas = np.unique(np.concatenate([np.asarray(p) * k for k in range(1, m + 1)] + [[1.0]]))
    out = np.ones(m)
    for i in range(m):
        rank = int(np.flatnonzero(order == i)[0])
        for a in alphas:
            if all(p[order[j]] * (m - j) <= a for j in range(rank + 1)):
                out[i] = min(a, 1.0)
                break
    return out


def test_holm_matches_its_definition_on_random_p_values():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 7))
        assert holm(p) == pytest.approx(holm_by_definition(p))


def test_missing_p_values_stay_missing_and_do_not_count():
    adj = holm([0.01, None, 0.04, float("nan")])
    assert np.isnan(adj[1]) and np.isnan(adj[3])
    assert adj[[0, 2]] == pytest.approx(holm([0.01, 0.04]))
    assert benjamini_hochberg([None, 0.2])[1] == pytest.approx(0.2)


@pytest.mark.parametrize("bad", [[0.1, 1.2], [-0.01], ["x"]])
def test_invalid_p_values_raise(bad):
    with pytest.raises(AnalysisInputError):
        holm(bad)
    with pytest.raises(AnalysisInputError):
        benjamini_hochberg(bad)


def test_winners_curse_flags_top_of_many_selected_on_same_seeds():
    summary = pd.DataFrame({"config": list("abcd"), "mean": [0.01, 0.05, None, -0.02]})
    same = winners_curse(summary, selected_on_same_seeds=True)
    assert same["flag"] is True and same["n_compared"] == 3 and same["top"] == 1
    assert "confirm on fresh seeds" in same["message"] and "3 configurations" in same["message"]
    assert same["inflation_se"] == pytest.approx(expected_max_of_normals(3))
    fresh = winners_curse(summary, selected_on_same_seeds=False)
    assert fresh["flag"] is False and "confirm" not in fresh["message"]
    single = winners_curse(summary.iloc[:1], selected_on_same_seeds=True)
    assert single["flag"] is False and single["n_compared"] == 1
    with pytest.raises(AnalysisInputError, match="column"):
        winners_curse(summary, True, score_col="ci_lo")


def test_expected_max_of_normals_known_values_and_simulation():
    assert expected_max_of_normals(1) == 0.0
    assert expected_max_of_normals(2) == pytest.approx(1 / np.sqrt(np.pi), abs=1e-6)
    assert expected_max_of_normals(3) == pytest.approx(1.5 / np.sqrt(np.pi), abs=1e-6)
    draws = np.random.default_rng(1).standard_normal((200_000, 10)).max(axis=1)
    assert expected_max_of_normals(10) == pytest.approx(draws.mean(), abs=0.005)


def test_selection_inflation_is_real_in_simulation():
    # K configurations with no true effect, best picked on its own seeds: its measured mean is
    # biased upward by about inflation_se standard errors; on fresh seeds the bias disappears.
    rng = np.random.default_rng(2)
    K, n, sims = 8, 5, 4000
    selection = rng.normal(0, 1, (sims, K, n)).mean(axis=2)
    best = selection.max(axis=1)
    se = 1 / np.sqrt(n)
    expected = expected_max_of_normals(K) * se
    assert best.mean() == pytest.approx(expected, rel=0.05)
    fresh = rng.normal(0, 1, (sims, n)).mean(axis=1)
    assert abs(fresh.mean()) < 4 * se / np.sqrt(sims)
