"""All-or-nothing seeds: split an FS effect into breakthrough rate and quality given breakthrough.

Small models learn a task on some seeds and stay at chance on others (docs/DESIGN.md §6). A paired delta then
mixes two questions: does FS change *how often* a seed breaks through, and, when both runs break
through, does FS change *how well* they do? Per configuration, from paired runs:

* the 2x2 table of learned flags: ``both``, ``only_fs``, ``only_base``, ``neither``;
* McNemar's exact test: under no effect, the discordant pairs split 50/50 (``binomtest``);
* an interval for the change in breakthrough rate ``P(fs learns) - P(no_fs learns)`` by Newcombe's
  hybrid score method for paired proportions (Newcombe 1998, Stat. Med. 17:2635, method 10): Wilson
  score intervals of the two marginal rates combined with the paired correlation ``phi`` (with
  Newcombe's correction). Measured coverage of a 95% interval: 0.94-0.99 at n = 5..20
  (``tests/test_bimodal.py``); it stays inside [-1, 1] and is defined when no pair is discordant,
  unlike the Wald interval;
* quality given breakthrough: mean delta and t-interval among pairs where both runs learned;
* median and interquartile mean (IQM, 25% trimmed mean) of all deltas with percentile-bootstrap
  intervals (robust to the all-or-nothing swings; at n <= 5 these intervals are rough);
* a bimodality flag (``is_bimodal``): read the numbers above then, not mean +- std.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special

from .errors import AnalysisInputError
from .stats import (_check_level, _check_resamples, _compositions, _none_for_nan, _padded, _rng,
                    _support_quantile, mean_intervals, sign_test_p)

BIMODAL_ADVICE = ("bimodal seeds (a cluster at chance, one well above): read the breakthrough-rate "
                  "change and quality given breakthrough, not mean +- std")


def learned(metric, chance, margin: float = 0.0) -> np.ndarray:
    """True where a run's metric is above the chance level by more than ``margin``."""
    metric = np.asarray(metric, dtype=float)
    chance = np.asarray(chance, dtype=float)
    margin = np.asarray(margin, dtype=float)
    if np.isnan(metric).any():
        raise AnalysisInputError("learned(): a metric value is missing (NaN)")
    if np.isnan(chance).any():
        raise AnalysisInputError("learned(): the chance level is missing (NaN)")
    if (margin < 0).any() or np.isnan(margin).any():
        raise AnalysisInputError("learned(): margin must be a non-negative number")
    return metric > chance + margin


def run_learned(value, chance=None, margin: float = 0.0, above=None) -> bool | None:
    """The one "did this run learn" rule for a single run: its metric above an absolute threshold
    ``above`` when one is given, else above ``chance + margin`` (``learned``); None when neither
    a threshold nor a chance level is known, or the metric is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if above is not None:
        return bool(float(value) > float(above))
    if chance is None:
        return None
    return bool(learned(value, chance, margin))


def breakthrough_table(base_learned, fs_learned) -> dict:
    """Counts of paired outcomes: both learned, only FS, only the baseline, neither."""
    base = np.asarray(base_learned, dtype=bool)
    fs = np.asarray(fs_learned, dtype=bool)
    if base.shape != fs.shape:
        raise AnalysisInputError(f"paired learned flags differ in shape: {base.shape} vs "
                                 f"{fs.shape}")
    return {"both": int((base & fs).sum()), "only_fs": int((fs & ~base).sum()),
            "only_base": int((base & ~fs).sum()), "neither": int((~base & ~fs).sum())}


def mcnemar_exact_p(only_fs, only_base) -> np.ndarray:
    """McNemar's exact two-sided p: the discordant pairs against Binomial(b + c, 1/2).

    Equal to ``scipy.stats.binomtest(only_fs, only_fs + only_base).pvalue``, vectorised; 1.0 when no
    pair is discordant.
    """
    return sign_test_p(only_fs, only_base)


def wilson_interval(x, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion x/n, vectorised (NaN where n == 0)."""
    x, n = np.asarray(x, dtype=float), np.asarray(n, dtype=float)
    z = special.ndtri(0.5 + _check_level(level) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def rate_change_interval(both, only_fs, only_base, neither,
                         level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Interval for the change in breakthrough rate (FS minus baseline) from paired outcomes.

    Newcombe's hybrid score ("square-and-add") interval for a difference of paired proportions
    (method 10: Wilson intervals without continuity correction, corrected ``phi``). Vectorised over
    configurations; NaN where there are no pairs.
    """
    a, b, c, d = (np.asarray(v, dtype=float) for v in (both, only_fs, only_base, neither))
    if (np.concatenate([np.ravel(v) for v in (a, b, c, d)]) < 0).any():
        raise AnalysisInputError("breakthrough table counts must be non-negative")
    n = a + b + c + d
    p_fs, p_base = (a + b) / np.where(n > 0, n, np.nan), (a + c) / np.where(n > 0, n, np.nan)
    l_fs, u_fs = wilson_interval(a + b, n, level)
    l_base, u_base = wilson_interval(a + c, n, level)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    # Newcombe's correlation estimate with his correction: a positive cross-product difference
    # shrinks by n/2 (floored at 0), which widens the interval where pairs agree (small-n coverage).
    cross = a * d - b * c
    cross = np.where(cross > n / 2, cross - n / 2, np.where(cross >= 0, 0.0, cross))
    phi = np.where(denom > 0, cross / np.sqrt(np.where(denom > 0, denom, 1)), 0.0)
    diff = p_fs - p_base
    down = np.sqrt(np.maximum((p_fs - l_fs) ** 2 - 2 * phi * (p_fs - l_fs) * (u_base - p_base)
                              + (u_base - p_base) ** 2, 0))
    up = np.sqrt(np.maximum((u_fs - p_fs) ** 2 - 2 * phi * (u_fs - p_fs) * (p_base - l_base)
                            + (p_base - l_base) ** 2, 0))
    return np.clip(diff - down, -1, 1), np.clip(diff + up, -1, 1)


def _padded_bimodal(V: np.ndarray, chance: np.ndarray, margin: np.ndarray,
                    min_count: int) -> np.ndarray:
    present = ~np.isnan(V)
    low = present & (V <= (chance + margin)[:, None])
    high = present & ~low
    n_low, n_high = low.sum(axis=1), high.sum(axis=1)
    low_max = np.where(low, V, -np.inf).max(axis=1)
    low_min = np.where(low, V, np.inf).min(axis=1)
    high_max = np.where(high, V, -np.inf).max(axis=1)
    high_min = np.where(high, V, np.inf).min(axis=1)
    enough = (n_low >= min_count) & (n_high >= min_count)
    with np.errstate(invalid="ignore"):
        gap = high_min - low_max
        spread = np.maximum(low_max - low_min, high_max - high_min)
        return enough & (gap > spread)


def is_bimodal(values, chance: float, margin: float = 0.0, min_count: int = 2) -> bool:
    """Whether run metrics split into a cluster at chance and a separate one well above it.

    Rule: runs at or below ``chance + margin`` form the low cluster, the rest the high cluster; the
    values are bimodal when each cluster holds at least ``min_count`` runs and the gap between the
    clusters (lowest high value minus highest low value) is wider than the range inside either
    cluster. A wide unimodal spread straddling the threshold fails the gap rule; a single outlier
    fails ``min_count``.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or np.isnan(v).any():
        raise AnalysisInputError("is_bimodal(): values must be a 1-D array without NaN")
    if min_count < 1:
        raise AnalysisInputError("is_bimodal(): min_count must be at least 1")
    return bool(_padded_bimodal(v[None, :], np.array([float(chance)]), np.array([float(margin)]),
                                min_count)[0])


@functools.lru_cache(maxsize=16)
def _sorted_resample_positions(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct resample of ``size`` sorted values as the sorted positions it draws, and its
    probability (see ``stats._compositions``)."""
    K, p = _compositions(size)
    positions = np.array([np.repeat(np.arange(size), k.astype(int)) for k in K])
    return positions, p


def robust_intervals(D, level: float = 0.95, n_resamples: int = 10_000, seed=0) -> dict:
    """Median and interquartile mean per row of a [G, n_max] NaN-padded array, with
    percentile-bootstrap intervals (independent resamples per row, batched over rows).

    IQM is ``scipy.stats.trim_mean(x, 0.25)``: the mean after cutting ``floor(n/4)`` values at each
    end. With few seeds the resample counts of each distinct resample are drawn at once (as in
    ``stats.mean_intervals``); otherwise resamples are drawn index by index. Returns arrays
    ``median, median_lo, median_hi, iqm, iqm_lo, iqm_hi`` (NaN where n < 1; intervals NaN where
    n < 2).
    """
    level = _check_level(level)
    D, n = _padded(D)
    n_resamples = _check_resamples(n_resamples)
    rng = _rng(seed)
    G = D.shape[0]
    out = {k: np.full(G, np.nan) for k in ("median", "median_lo", "median_hi", "iqm", "iqm_lo",
                                           "iqm_hi")}
    alpha = (1 - level) / 2
    for size in np.unique(n[n >= 1]):
        rows = np.flatnonzero(n == size)
        X = np.sort(D[rows, :size], axis=1)
        cut = size // 4
        out["median"][rows] = np.median(X, axis=1)
        out["iqm"][rows] = X[:, cut:size - cut].mean(axis=1)
        if size < 2:
            continue
        exact_support = 2 * math.comb(2 * size - 1, size) <= n_resamples
        if exact_support:
            positions, p = _sorted_resample_positions(size)
            counts = rng.multinomial(n_resamples, p, size=rows.size)
        width = positions.shape[0] if exact_support else n_resamples
        step = max(1, 4_000_000 // (width * size))
        for start in range(0, rows.size, step):
            block = rows[start:start + step]
            Xb = X[start:start + step]
            if exact_support:
                R = Xb[:, positions]  # [rows, distinct resamples, size], each resample sorted
                block_counts = counts[start:start + step]
            else:
                idx = rng.integers(0, size, size=(block.size, n_resamples, size))
                R = np.sort(np.take_along_axis(Xb[:, None, :], idx, axis=2), axis=2)
                block_counts = None
            for name, values in (("median", np.median(R, axis=2)),
                                 ("iqm", R[:, :, cut:size - cut].mean(axis=2))):
                order = np.argsort(values, axis=1, kind="stable")
                values = np.take_along_axis(values, order, axis=1)
                c = (None if block_counts is None
                     else np.take_along_axis(block_counts, order, axis=1))
                for suffix, q in (("_lo", alpha), ("_hi", 1 - alpha)):
                    out[name + suffix][block] = _support_quantile(
                        values, c, np.full(block.size, q), n_resamples)
    return out


def _column_or_scalar(df: pd.DataFrame, value, what: str) -> np.ndarray:
    if isinstance(value, str):
        if value not in df.columns:
            raise AnalysisInputError(f"{what} column {value!r} not in the table")
        arr = pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=float)
    else:
        if value is None:
            raise AnalysisInputError(f"{what} is required to decide which runs learned")
        arr = np.full(len(df), float(value))
    if np.isnan(arr).any():
        raise AnalysisInputError(f"{what} is missing on {int(np.isnan(arr).sum())} row(s)")
    return arr


def summarize_breakthrough(df: pd.DataFrame, group_cols: str | Sequence[str],
                           base_col: str, fs_col: str, chance=None, margin=0.0,
                           base_learned_col: str | None = None, fs_learned_col: str | None = None,
                           level: float = 0.95, n_resamples: int = 10_000, min_count: int = 2,
                           seed=0) -> pd.DataFrame:
    """One row per configuration: the breakthrough split of paired runs.

    ``base_col`` / ``fs_col`` hold the run metric (e.g. sequence accuracy) of the no_fs and
    prompt_fs run of each seed. Learned flags come from ``base_learned_col`` / ``fs_learned_col``
    when given (booleans the trainer recorded), otherwise from ``learned(metric, chance, margin)``;
    ``chance`` and ``margin`` are numbers or column names (per-row levels).

    Columns: group columns, ``n``, ``both``, ``only_fs``, ``only_base``, ``neither``,
    ``base_rate``, ``fs_rate``, ``rate_change``, ``rate_lo``, ``rate_hi`` (Newcombe), ``mcnemar_p``,
    ``n_both``, ``quality_mean``, ``quality_lo``, ``quality_hi`` (t, among pairs where both learned;
    None under 2 such pairs), ``median``, ``median_lo``, ``median_hi``, ``iqm``, ``iqm_lo``,
    ``iqm_hi`` (all deltas ``fs - base``), ``bimodal`` (``is_bimodal`` on the pooled runs; needs
    ``chance``), ``advice`` and ``notes``. No NaN: missing numbers are None.
    """
    if not isinstance(df, pd.DataFrame):
        raise AnalysisInputError("summarize_breakthrough expects a pandas DataFrame")
    group_cols = [group_cols] if isinstance(group_cols, str) else list(group_cols)
    needed = [*group_cols, base_col, fs_col] + [c for c in (base_learned_col, fs_learned_col) if c]
    absent = [c for c in needed if c not in df.columns]
    if absent:
        raise AnalysisInputError(f"missing column(s) {absent}; have {list(df.columns)}")
    if len(df) == 0:
        raise AnalysisInputError("no paired runs to summarise (empty table)")
    if (base_learned_col is None) != (fs_learned_col is None):
        raise AnalysisInputError("give both learned columns or neither")
    base = pd.to_numeric(df[base_col], errors="coerce").to_numpy(dtype=float)
    fs = pd.to_numeric(df[fs_col], errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(base) | np.isnan(fs)
    if bad.any():
        raise AnalysisInputError(f"{int(bad.sum())} row(s) miss the {base_col!r} or {fs_col!r} "
                                 "metric "
                                 f"(first at row {int(np.flatnonzero(bad)[0])})")
    chance_arr = None if chance is None else _column_or_scalar(df, chance, "chance")
    margin_arr = _column_or_scalar(df, margin, "margin")
    if base_learned_col is not None:
        flags = df[[base_learned_col, fs_learned_col]]
        if flags.isna().any().any():
            raise AnalysisInputError("a learned flag is missing (None) in the learned columns")
        base_l = flags[base_learned_col].astype(bool).to_numpy()
        fs_l = flags[fs_learned_col].astype(bool).to_numpy()
    else:
        if chance_arr is None:
            raise AnalysisInputError("chance level (or learned columns) needed to decide which "
                                     "runs learned")
        base_l = learned(base, chance_arr, margin_arr)
        fs_l = learned(fs, chance_arr, margin_arr)

    grouped = df.groupby(group_cols, sort=False, dropna=False)
    codes = grouped.ngroup().to_numpy()
    keys = grouped.size().reset_index()[group_cols]
    G = len(keys)
    count = lambda mask: np.bincount(codes[mask], minlength=G)  # noqa: E731
    both, only_fs = count(base_l & fs_l), count(fs_l & ~base_l)
    only_base, neither = count(base_l & ~fs_l), count(~base_l & ~fs_l)
    n = both + only_fs + only_base + neither
    rate_lo, rate_hi = rate_change_interval(both, only_fs, only_base, neither, level)
    mcnemar = mcnemar_exact_p(only_fs, only_base)

    delta = fs - base
    pos = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    width = int(n.max())
    D = np.full((G, width), np.nan)
    D[codes, pos] = delta
    Q = np.full((G, width), np.nan)  # deltas of pairs where both runs learned
    both_rows = base_l & fs_l
    Q[codes[both_rows], pd.Series(codes[both_rows]).groupby(codes[both_rows]).cumcount()
      .to_numpy()] = delta[both_rows]
    q_mean = np.where(both > 0, np.nansum(Q, axis=1) / np.maximum(both, 1), np.nan)
    q_lo, q_hi = mean_intervals(Q, level, "t")
    robust = robust_intervals(D, level, n_resamples, seed)

    if chance_arr is not None:
        runs = np.full((G, 2 * width), np.nan)
        runs[codes, 2 * pos], runs[codes, 2 * pos + 1] = base, fs
        first = np.zeros(G, dtype=int)
        first[codes[::-1]] = np.arange(len(codes))[::-1]  # a row of each group: its chance level
        bimodal = _padded_bimodal(runs, chance_arr[first], margin_arr[first], min_count)
        if len(set(zip(codes, chance_arr, margin_arr))) != G:
            raise AnalysisInputError("chance level or margin varies within a configuration")
    else:
        bimodal = np.zeros(G, dtype=bool)

    notes, advice = [], []
    for g in range(G):
        note = []
        if chance_arr is None:
            note.append("no chance level: bimodality not assessed")
        if both[g] < 2:
            note.append(f"{both[g]} pair(s) where both runs learned: no quality interval")
        if only_fs[g] + only_base[g] == 0:
            note.append("no discordant pair: McNemar p = 1.0")
        if n[g] < 2:
            note.append("n=1: no intervals")
        notes.append("; ".join(note))
        advice.append(BIMODAL_ADVICE if bimodal[g] else "")

    out = keys.copy()
    out["n"], out["both"], out["only_fs"] = n, both, only_fs
    out["only_base"], out["neither"] = only_base, neither
    out["base_rate"], out["fs_rate"] = (both + only_base) / n, (both + only_fs) / n
    out["rate_change"] = (only_fs - only_base) / n
    out["rate_lo"], out["rate_hi"] = _none_for_nan(rate_lo), _none_for_nan(rate_hi)
    out["mcnemar_p"] = mcnemar
    out["n_both"] = both
    out["quality_mean"] = _none_for_nan(q_mean)
    out["quality_lo"], out["quality_hi"] = _none_for_nan(q_lo), _none_for_nan(q_hi)
    for name in ("median", "median_lo", "median_hi", "iqm", "iqm_lo", "iqm_hi"):
        out[name] = _none_for_nan(robust[name])
    out["bimodal"] = bimodal
    out["advice"] = advice
    out["notes"] = notes
    return out
