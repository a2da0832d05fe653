"""Comparing many configurations at once: adjusted p-values and the winner's curse.

A search compares K configurations; the smallest of K p-values is small by chance alone, and the
best of K means measured on the seeds that picked it is biased upward. ``holm`` controls the
family-wise error rate, ``benjamini_hochberg`` the false discovery rate; ``winners_curse`` flags a
top configuration whose selection and measurement share seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .errors import AnalysisInputError

CONFIRM_MESSAGE = "confirm on fresh seeds"


def _p_values(p) -> tuple[np.ndarray, np.ndarray]:
    """p-values as floats (None -> NaN) and the mask of present ones; rejects p outside [0, 1]."""
    try:
        arr = np.array([np.nan if v is None else v for v in np.ravel(np.asarray(p, dtype=object))],
                       dtype=float).reshape(np.shape(p))
    except (TypeError, ValueError) as exc:
        raise AnalysisInputError(f"p-values must be numbers: {exc}") from None
    present = ~np.isnan(arr)
    if ((arr[present] < 0) | (arr[present] > 1)).any():
        raise AnalysisInputError("p-values must lie in [0, 1]")
    return arr, present


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order.

    Missing p-values (None/NaN) stay NaN and do not count as tests.
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` over the sorted p-values.
    """
    arr, present = _p_values(p)
    out = np.full(arr.shape, np.nan)
    vals = arr[present]
    m = vals.size
    if m:
        order = np.argsort(vals, kind="stable")
        scaled = np.minimum(1.0, (m - np.arange(m)) * vals[order])
        adjusted = np.empty(m)
        adjusted[order] = np.maximum.accumulate(scaled)
        out[present] = adjusted
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), via scipy; NaN stays NaN."""
    arr, present = _p_values(p)
    out = np.full(arr.shape, np.nan)
    if present.any():
        out[present] = stats.false_discovery_control(arr[present], method="bh")
    return out


def expected_max_of_normals(k: int) -> float:
    """E[max of k independent standard normals]: how far the best of k equal configurations
    lands above their common mean, in standard errors, by luck alone."""
    if k < 1:
        raise AnalysisInputError(f"need at least one configuration, got {k}")
    if k == 1:
        return 0.0
    # E[max] = integral of x * k * phi(x) * Phi(x)^(k-1) dx, on a fine grid (smooth integrand).
    x = np.linspace(-10, 10, 20001)
    density = k * stats.norm.pdf(x) * np.exp((k - 1) * stats.norm.logcdf(x))
    return float(np.trapezoid(x * density, x))


def winners_curse(summary_df: pd.DataFrame, selected_on_same_seeds: bool,
                  score_col: str = "mean") -> dict:
    """Flag the top configuration of a summary when it was picked on the seeds that measure it.

    Returns ``{"flag", "n_compared", "top" (row index of the best ``score_col``), "top_score",
    "inflation_se", "message"}``. ``inflation_se`` is the expected lead of the best of
    ``n_compared`` configurations with equal true means, in standard errors (a rough size of the
    optimism); ``message`` says "confirm on fresh seeds" when flagged.
    """
    if not isinstance(summary_df, pd.DataFrame):
        raise AnalysisInputError("winners_curse expects the DataFrame from summarize()")
    if score_col not in summary_df.columns:
        raise AnalysisInputError(f"summary has no column {score_col!r}")
    scores = pd.to_numeric(summary_df[score_col], errors="coerce")
    k = int(scores.notna().sum())
    if k == 0:
        raise AnalysisInputError(f"no configuration has a {score_col!r} to rank")
    top = scores.idxmax()
    flag = bool(selected_on_same_seeds) and k > 1
    if flag:
        message = (f"top of {k} configurations selected on the same seeds that measure it: "
                   f"its {score_col} is biased upward; {CONFIRM_MESSAGE}")
    elif k > 1:
        message = f"top of {k} configurations, measured on seeds not used to select it"
    else:
        message = "single configuration: no selection effect"
    return {"flag": flag, "n_compared": k, "top": top, "top_score": float(scores[top]),
            "inflation_se": expected_max_of_normals(k), "message": message}
