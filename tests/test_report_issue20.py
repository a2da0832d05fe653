"""The report and the closing lines say what issue 20 adds, in plain words: borrowed variance, the
stopping-aware estimate, the variance split (per-item outcomes, or the eval-size bound of the
researchers' files); old result files still report."""

import math

import numpy as np
import pytest

from analysis.loaders import load
from analysis.renderers import issue20_lines
from analysis.summary import ReportOptions, build
from fsray.commands.tune import settle_detail_lines


def test_researchers_files_report_with_the_eval_size_bound(upstream_dir):
    rep = build(load([str(upstream_dir)]), ReportOptions(n_resamples=500))
    sm = rep.summary
    arc = sm[sm["config"].astype(str).str.contains("stabilized_r5")
             & sm["task"].astype(str).str.startswith("arc/optionsfirst")]
    assert len(arc) == 1
    r = arc.iloc[0]
    # 8 eval batches of 48 = 384 answer tokens at accuracy ~0.31: up to ~0.033 of the spread
    assert r["split_bound"] and r["split_eval_sd"] == pytest.approx(0.0335, abs=0.001)
    assert "384 items per run" in r["split_advice"] and "could account for up to" in r["split_advice"]
    lines = issue20_lines(rep)
    assert any(x.startswith("variance split: ") for x in lines)
    assert any(x.startswith("borrowed variance: ") for x in lines)
    # the per-configuration interval stays available; where borrowed, the shown one has more df
    b = sm[sm["variance"] == "borrowed"]
    assert len(b) and all(r2["ci_df"] > r2["n"] - 1 for _, r2 in b.iterrows())
    assert sm["own_ci_lo"].notna().sum() >= sm["ci_lo"].notna().sum() - 0


def test_own_variance_and_spending_design_reproduce_todays_report(upstream_dir):
    """--own-variance --design spending: the verdicts and intervals of fsray before issue 20."""
    rep = build(load([str(upstream_dir)]), ReportOptions(n_resamples=500, borrow=False, design="spending"))
    sm = rep.summary
    assert (sm["variance"] == "own").all()
    both = sm[sm["ci_lo"].notna()]
    assert np.allclose(both["ci_lo"].astype(float), both["own_ci_lo"].astype(float))
    assert set(sm["verdict_design"]) == {"spending"}


def test_closing_lines_in_plain_words():
    c = {"variance": "borrowed", "prior_df": 12.0, "estimate": 0.0123, "est_lo": 0.004, "est_hi": 0.02,
         "mean": 0.015, "split": "eval sampling is 0.01 of the 0.02 spread"}
    text = "\n".join(settle_detail_lines(c))
    assert "variance borrowed from the other shortlisted configurations (+12 degrees of freedom)" in text
    assert "allowing for when it stopped: +0.0123 [+0.0040, +0.0200] (plain mean +0.0150)" in text
    assert "eval sampling is 0.01" in text
    assert settle_detail_lines({"variance": "own", "estimate": None}) == []
