"""Paired-delta statistics per configuration: intervals, exact tests, power.

Every function works on paired deltas ``d = metric(prompt_fs) - metric(no_fs)``, one per seed.
Many configurations are handled at once as a ``[G, n_max]`` array padded with NaN, so one call
covers a whole search (the tuner and ``fsray report`` both rely on that).

Interval methods (``method``):

* ``"t"`` (default): Student t on the mean. Its coverage of a 95% interval is measured in
  ``tests/test_stats_coverage.py`` to be within 2 points of nominal at n = 3..20 for normal deltas
  (0.95 at every n); for skewed deltas (exponential) it drops to ~0.88 at n = 3, ~0.92 at n = 20.
* ``"bca"``: bias-corrected and accelerated bootstrap (Efron & Tibshirani 1993, 14.3), bias from the
  bootstrap distribution, acceleration from the jackknife; the same conventions as
  ``scipy.stats.bootstrap`` (ties count half in the bias, linear-interpolated quantiles).
* ``"percentile"``: plain percentile bootstrap.

Both bootstraps undercover at few seeds (measured, normal deltas, nominal 0.95: percentile 0.75 /
0.84 / 0.90 / 0.93 and BCa 0.73 / 0.84 / 0.90 / 0.92 at n = 3 / 5 / 10 / 20), which is why the t
interval is the default and the bootstraps are options for larger n.

The bootstrap draws independent resamples for every configuration, batched over configurations (no
Python loop over configurations). With few seeds the distinct resamples are few (126 at n = 5), so
for n <= 7 at 10,000 resamples it draws, per configuration, how many resamples land on each
distinct one (one multinomial draw: exactly the distribution of drawing them one by one) instead of
10,000 index vectors; larger n resamples indices directly. ``bench/analysis_speed.py`` times it.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special, stats

from .errors import AnalysisInputError

METHODS = ("t", "bca", "percentile")
# Elements of resampled data held at once by the bootstrap (bounds memory to ~40 MB of indices).
_CHUNK_ELEMS = 4_000_000
# Largest table of k-tuple sums per row in _resample_means (32 KB of float64: stays in cache).
_TUPLE_TABLE_MAX = 4096
# seeds_needed searches up to this many seeds; beyond it the answer is "not practical" (None).
MAX_SEEDS = 100_000


# --------------------------------------------------------------------------------------------------
# input handling


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise AnalysisInputError(f"confidence level must be in (0, 1), got {level}")
    return level


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise AnalysisInputError(f"unknown interval method {method!r}; choose one of {METHODS}")
    return method


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _padded(D) -> tuple[np.ndarray, np.ndarray]:
    """Validate a [G, n_max] NaN-padded array; return it left-compacted and the row counts."""
    D = _numeric(np.array, D, "deltas", 2, "expected a [configurations, seeds] array")
    if np.isinf(D).any():
        raise AnalysisInputError("deltas contain an infinite value")
    missing = np.isnan(D)
    if missing.any():
        # Stable sort on the missing mask moves each row's values to the front, in order.
        order = np.argsort(missing, axis=1, kind="stable")
        D = np.take_along_axis(D, order, axis=1)
    n = (~np.isnan(D)).sum(axis=1)
    return D, n


def _row_moments(D: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) per row; NaN where undefined (n == 0 / n < 2)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(D, axis=1)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        ss = np.nansum((D - mean[:, None]) ** 2, axis=1)
        std = np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)
    return mean, std


def _row_signs(D: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sign counts per row (positive, exactly zero, negative) of a NaN-padded array."""
    n_pos = (D > 0).sum(axis=1)
    n_neg = (D < 0).sum(axis=1)
    return n_pos, n - n_pos - n_neg, n_neg


def describe(d) -> dict:
    """The descriptive numbers of one configuration's paired deltas, as ``summarize`` computes
    them per group: ``n``, ``mean`` (None when empty), ``std`` (ddof=1; None below 2 deltas) and
    ``signs`` ``[n_pos, n_zero, n_neg]``. The search's per-configuration rows use it
    (``fsray.search.objective.config_stats``), so both tables count and average alike."""
    x = np.asarray(d, dtype=float).reshape(1, -1)
    n = np.array([x.shape[1]])
    mean, std = _row_moments(x, n)
    signs = _row_signs(x, n)
    return {"n": int(n[0]), "mean": None if n[0] < 1 else float(mean[0]),
            "std": None if n[0] < 2 else float(std[0]), "signs": [int(c[0]) for c in signs]}


# --------------------------------------------------------------------------------------------------
# intervals


def _t_intervals(D, n, level):
    mean, std = _row_moments(D, n)
    df = np.maximum(n - 1, 1)
    crit = stats.t.ppf(0.5 + level / 2, df)
    half = crit * std / np.sqrt(np.maximum(n, 1))
    ok = n >= 2
    return np.where(ok, mean - half, np.nan), np.where(ok, mean + half, np.nan)


def _tuple_sums(X: np.ndarray, k: int) -> np.ndarray:
    """``[g, size**k]``: the sum of every ordered k-tuple of draws from each row, in mixed-radix
    order (entry ``i`` sums the draws whose indices are the base-``size`` digits of ``i``)."""
    sums = X
    for _ in range(k - 1):
        sums = (sums[:, :, None] + X[:, None, :]).reshape(X.shape[0], -1)
    return sums


def _resample_means(X: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples of each row of a dense ``[g, size]`` block.

    A resample is ``size`` uniform draws with replacement. One uniform index below ``size**k``
    encodes k independent draws, so with a table of k-tuple sums a resample sum costs
    ``ceil(size / k)`` gathers instead of ``size``: exact, and 2-5x faster at 5-20 seeds. The table
    is kept within ``_TUPLE_TABLE_MAX`` entries per row so random gathers stay in cache (measured
    best at 1-4k). Rows are processed in chunks to bound memory.
    """
    g, size = X.shape
    k = 1
    while k < size and size ** (k + 1) <= _TUPLE_TABLE_MAX:
        k += 1
    groups = [k] * (size // k) + ([size % k] if size % k else [])
    index_dtype = np.uint8 if size**k <= 2**8 else np.uint16 if size**k <= 2**16 else np.intp
    out = np.empty((g, n_resamples))
    step = max(1, _CHUNK_ELEMS // (n_resamples * len(groups) + size**k))
    for start in range(0, g, step):
        block = X[start:start + step]
        rows = block.shape[0]
        tables = {m: _tuple_sums(block, m) for m in set(groups)}
        acc = np.zeros((rows, n_resamples))
        for m in groups:
            width = size**m
            flat = tables[m].ravel()
            row_offset = (np.arange(rows, dtype=np.intp) * width)[:, None]
            idx = rng.integers(0, width, size=(rows, n_resamples), dtype=index_dtype)
            acc += flat[idx + row_offset]
        out[start:start + step] = acc / size
    return out


def bootstrap_means(D, n_resamples: int = 10_000, seed=0) -> np.ndarray:
    """Bootstrap distribution of the mean, ``[G, n_resamples]``, an independent resample per row.

    Rows with fewer than 2 values give NaN; rows are processed in groups of equal size.
    """
    D, n = _padded(D)
    n_resamples = _check_resamples(n_resamples)
    rng = _rng(seed)
    out = np.full((D.shape[0], n_resamples), np.nan)
    for size in np.unique(n[n >= 2]):
        rows = np.flatnonzero(n == size)
        out[rows] = _resample_means(D[rows, :size], n_resamples, rng)
    return out


def _check_resamples(n_resamples) -> int:
    if int(n_resamples) < 1:
        raise AnalysisInputError(f"n_resamples must be positive, got {n_resamples}")
    return int(n_resamples)


@functools.lru_cache(maxsize=16)
def _compositions(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct bootstrap resample of ``size`` values as a count vector, and its probability.

    A resample is ``size`` uniform draws with replacement, so its count vector is
    Multinomial(size, 1/size): probability ``size! / prod(c_i!) / size**size``.
    """
    counts = np.array([np.bincount(c, minlength=size)
                       for c in itertools.combinations_with_replacement(range(size), size)])
    log_p = (special.gammaln(size + 1) - special.gammaln(counts + 1).sum(axis=1)
             - size * np.log(size))
    p = np.exp(log_p)
    return counts.astype(float), p / p.sum()


def _composition_support(X: np.ndarray, n_resamples: int, rng: np.random.Generator):
    """Bootstrap distribution of the mean as (sorted distinct values, resample counts) per row.

    Drawing how many of the ``n_resamples`` resamples fall on each distinct resample (one
    multinomial draw per row) is the same distribution as drawing the resamples one by one, with
    far less work when there are few distinct resamples (126 at 5 seeds).
    """
    K, p = _compositions(X.shape[1])
    counts = rng.multinomial(n_resamples, p, size=X.shape[0])
    values = X @ K.T / X.shape[1]
    order = np.argsort(values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(counts, order, axis=1)


def _support_quantile(values, counts, q, n_resamples):
    """Per-row quantile ``q[g]`` of a sorted bootstrap distribution, linear interpolation between
    order statistics (numpy's default). ``counts`` is None when every value is one resample."""
    h = (n_resamples - 1) * np.clip(q, 0.0, 1.0)
    k = np.floor(h).astype(np.intp)
    k_next = np.minimum(k + 1, n_resamples - 1)
    frac = h - k
    if counts is not None:
        cum = np.cumsum(counts, axis=1)
        # order statistic j (0-based) is the first value whose cumulative count exceeds j
        k = (cum <= k[:, None]).sum(axis=1)
        k_next = (cum <= k_next[:, None]).sum(axis=1)
    rows = np.arange(values.shape[0])
    a, b = values[rows, k], values[rows, k_next]
    return a + frac * (b - a)


def _jackknife_acceleration(X):
    """BCa acceleration from the jackknife of the mean (Efron & Tibshirani 1993, eq. 14.15)."""
    size = X.shape[1]
    loo = (X.sum(axis=1, keepdims=True) - X) / (size - 1)  # leave-one-out means
    u = loo.mean(axis=1, keepdims=True) - loo
    with np.errstate(invalid="ignore", divide="ignore"):
        return (u**3).sum(axis=1) / (6.0 * (u**2).sum(axis=1) ** 1.5)


def _bootstrap_intervals(D, n, level, method, n_resamples, seed):
    n_resamples = _check_resamples(n_resamples)
    rng = _rng(seed)
    mean, std = _row_moments(D, n)
    alpha = (1 - level) / 2
    z_lo, z_hi = special.ndtri(np.array([alpha, 1 - alpha]))
    lo, hi = np.full(D.shape[0], np.nan), np.full(D.shape[0], np.nan)
    for size in np.unique(n[n >= 2]):
        rows = np.flatnonzero(n == size)
        X = D[rows, :size]
        if 2 * math.comb(2 * size - 1, size) <= n_resamples:
            values, counts = _composition_support(X, n_resamples, rng)
        else:
            values, counts = np.sort(_resample_means(X, n_resamples, rng), axis=1), None
        if method == "percentile":
            q_lo, q_hi = np.full(rows.size, alpha), np.full(rows.size, 1 - alpha)
        else:
            # Bias: share of resample means below the estimate, ties counting half (scipy's
            # convention). "Tie" allows for rounding: the resample equal to the sample itself
            # has probability size!/size**size (4% at 5 seeds) and must not flip sides on an ulp.
            theta = mean[rows, None]
            tol = 1e-12 * np.abs(X).max(axis=1, keepdims=True)
            weight = np.ones_like(values) if counts is None else counts
            below = (weight * (values < theta - tol)).sum(axis=1)
            at_or_below = (weight * (values <= theta + tol)).sum(axis=1)
            share = (below + at_or_below) / (2.0 * n_resamples)
            z0 = special.ndtri(np.clip(share, 0.5 / n_resamples, 1 - 0.5 / n_resamples))
            acc = _jackknife_acceleration(X)
            with np.errstate(invalid="ignore", divide="ignore"):
                q_lo = special.ndtr(z0 + (z0 + z_lo) / (1 - acc * (z0 + z_lo)))
                q_hi = special.ndtr(z0 + (z0 + z_hi) / (1 - acc * (z0 + z_hi)))
            # Zero spread makes the acceleration 0/0; such rows are replaced below.
            q_lo, q_hi = np.nan_to_num(q_lo, nan=0.5), np.nan_to_num(q_hi, nan=0.5)
        lo[rows] = _support_quantile(values, counts, q_lo, n_resamples)
        hi[rows] = _support_quantile(values, counts, q_hi, n_resamples)
    # Equal deltas: the bootstrap distribution is a point; so is the interval.
    flat = (n >= 2) & (std == 0)
    return np.where(flat, mean, lo), np.where(flat, mean, hi)


def mean_intervals(D, level: float = 0.95, method: str = "t", n_resamples: int = 10_000,
                   seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Interval for the mean of each row of a ``[G, n_max]`` NaN-padded array.

    Returns ``(lo, hi)``, each ``[G]``; NaN for rows with fewer than 2 values. ``seed`` (int or
    ``numpy.random.Generator``) and ``n_resamples`` only matter for the bootstrap methods.
    """
    level, method = _check_level(level), _check_method(method)
    D, n = _padded(D)
    if method == "t":
        return _t_intervals(D, n, level)
    return _bootstrap_intervals(D, n, level, method, n_resamples, seed)


def _numeric(convert, x, what: str, ndim: int, expected: str) -> np.ndarray:
    """``convert(x, dtype=float)`` (``np.array``: a copy, ``np.asarray``: a view where it can) of
    ``ndim`` dimensions, else one error line: ``what`` not numeric, or ``expected`` and the shape."""
    try:
        a = convert(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise AnalysisInputError(f"{what} must be numeric: {exc}") from None
    if a.ndim != ndim:
        raise AnalysisInputError(f"{expected}, got shape {a.shape}")
    return a


def _finite_1d(d, what: str = "deltas") -> np.ndarray:
    d = _numeric(np.asarray, d, what, 1, f"{what} must be a 1-D array")
    if not np.isfinite(d).all():
        raise AnalysisInputError(f"{what} contain NaN or infinite values")
    return d


def mean_interval(d, level: float = 0.95, method: str = "t", n_resamples: int = 10_000,
                  seed=0) -> tuple[float, float]:
    """Interval for the mean of one configuration's paired deltas (at least 2 of them)."""
    d = _finite_1d(d)
    if d.size < 2:
        raise AnalysisInputError(f"an interval needs at least 2 paired deltas, got {d.size}")
    lo, hi = mean_intervals(d[None, :], level, method, n_resamples, seed)
    return float(lo[0]), float(hi[0])


# --------------------------------------------------------------------------------------------------
# tests and power


def sign_test_p(n_pos, n_neg) -> np.ndarray:
    """Exact two-sided sign test p per configuration (ties already dropped).

    For p = 1/2 the binomial is symmetric, so scipy's two-sided ``binomtest`` equals
    ``min(1, 2 * P(X <= min(k, m - k)))``; written that way it is one vectorised call.
    No non-tied pair (m = 0) gives p = 1.
    """
    n_pos, n_neg = np.asarray(n_pos, dtype=int), np.asarray(n_neg, dtype=int)
    m = n_pos + n_neg
    p = 2.0 * stats.binom.cdf(np.minimum(n_pos, n_neg), m, 0.5)
    return np.where(m > 0, np.minimum(p, 1.0), 1.0)


def t_test_power(n, effect, std, alpha: float = 0.05) -> np.ndarray:
    """Power of the two-sided paired t-test with n pairs at true mean ``effect`` and sd ``std``."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    nc = np.abs(np.asarray(effect, dtype=float)) / np.asarray(std, dtype=float) * np.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    upper = stats.nct.sf(crit, df, nc)
    upper = np.where(np.isnan(upper), 1 - stats.nct.cdf(crit, df, nc), upper)
    # The wrong-direction tail is tiny exactly where scipy's nct returns NaN (far tail, large nc).
    lower = np.nan_to_num(stats.nct.cdf(-crit, df, nc), nan=0.0)
    return upper + lower


def seeds_needed(effect, std, power: float = 0.8, alpha: float = 0.05) -> np.ndarray:
    """Smallest number of paired seeds (>= 2) whose paired t-test reaches ``power``.

    Vectorised over configurations. The search starts just below the normal-approximation answer
    (a z-test is at least as powerful as the t-test, so the t-test falls short there), widens the
    bracket by doubling steps, then bisects, evaluating scipy's noncentral t only on rows still
    open. Returns a float array; NaN where effect or std is 0/NaN or more than ``MAX_SEEDS``
    seeds would be needed.
    """
    if not (0 < power < 1 and 0 < alpha < 1):
        raise AnalysisInputError(f"power and alpha must lie in (0, 1), got {power} and {alpha}")
    effect = np.abs(np.atleast_1d(np.asarray(effect, dtype=float)))
    std = np.atleast_1d(np.asarray(std, dtype=float))
    effect, std = np.broadcast_arrays(effect, std)
    effect, std = effect.ravel(), std.ravel()
    valid = np.isfinite(effect) & np.isfinite(std) & (effect > 0) & (std > 0)
    e, s = np.where(valid, effect, 1.0), np.where(valid, std, 1.0)

    def reaches(n, rows):
        return t_test_power(n[rows], e[rows], s[rows], alpha) >= power

    z = special.ndtri(1 - alpha / 2) + special.ndtri(power)
    n_normal = (z * s / e) ** 2
    lo = np.clip(np.floor(n_normal) - 1, 1, MAX_SEEDS)  # power(lo) < target (n = 1: no test)
    rows = np.flatnonzero(valid & (lo > 1))
    lo[rows[reaches(lo, rows)]] = 1  # safety net; not expected to trigger
    step = np.ones_like(lo)
    hi = lo + 1
    open_ = np.flatnonzero(valid)
    while open_.size:  # widen until power(hi) >= target or hi passes MAX_SEEDS
        short = open_[~reaches(hi, open_)]
        lo[short] = hi[short]
        step[short] *= 2
        hi[short] = hi[short] + step[short]
        open_ = short[hi[short] <= MAX_SEEDS]
    beyond = valid & (hi > MAX_SEEDS)
    hi = np.minimum(hi, MAX_SEEDS)
    beyond[np.flatnonzero(beyond)[reaches(hi, np.flatnonzero(beyond))]] = False
    reachable = valid & ~beyond
    open_ = np.flatnonzero(reachable & (hi - lo > 1))
    while open_.size:
        mid = np.floor((lo + hi) / 2)
        ok = reaches(mid, open_)
        hi[open_[ok]] = mid[open_[ok]]
        lo[open_[~ok]] = mid[open_[~ok]]
        open_ = open_[hi[open_] - lo[open_] > 1]
    return np.where(reachable, hi, np.nan)


# scipy switches to a normal approximation for tied samples above this size; so do we.
_EXACT_TIED_MAX = 13


def signed_rank_exact_p(X) -> np.ndarray:
    """Exact two-sided Wilcoxon signed-rank p for rows with ties or zeros (conditional on them).

    Zeros are dropped (``zero_method="wilcox"``), tied magnitudes get mid-ranks, and the null
    distribution of the positive rank sum is enumerated over all 2**n sign flips as one matrix
    product for every row: the same test scipy's ``wilcoxon`` runs on tied data through its
    generic ``permutation_test``, which costs ~40 ms per configuration (minutes for a search).
    """
    X = np.asarray(X, dtype=float)
    size = X.shape[1]
    magnitude = np.where(X == 0, np.nan, np.abs(X))
    ranks = np.nan_to_num(stats.rankdata(magnitude, axis=1, nan_policy="omit"), nan=0.0)
    observed = (ranks * (X > 0)).sum(axis=1)
    flips = ((np.arange(2**size)[:, None] >> np.arange(size)) & 1).astype(float)
    null = flips @ ranks.T  # [2**size, rows]
    tol = 1e-9 * np.maximum(observed, 1.0)
    p_less = (null <= observed + tol).mean(axis=0)
    p_greater = (null >= observed - tol).mean(axis=0)
    return np.minimum(1.0, 2 * np.minimum(p_less, p_greater))


def _wilcoxon_p(D, n) -> np.ndarray:
    """Wilcoxon signed-rank p per row, NaN where every delta is 0 (or n < 2).

    Untied rows: scipy (exact up to 50 seeds). Rows with ties or zeros: the exact conditional test
    (``signed_rank_exact_p``) up to 13 seeds, scipy's normal approximation above, as scipy's own
    ``method="auto"`` does.
    """
    p = np.full(D.shape[0], np.nan)
    for size in np.unique(n[n >= 2]):
        rows = np.flatnonzero(n == size)
        X = D[rows, :size]
        magnitude = np.sort(np.abs(X), axis=1)
        tied = (magnitude[:, 0] == 0) | (np.diff(magnitude, axis=1) == 0).any(axis=1)
        defined = (X != 0).any(axis=1)
        clean, ties = rows[~tied], rows[tied & defined]
        if clean.size:
            p[clean] = stats.wilcoxon(D[clean, :size], axis=1).pvalue
        if ties.size and size <= _EXACT_TIED_MAX:
            p[ties] = signed_rank_exact_p(D[ties, :size])
        elif ties.size:
            p[ties] = stats.wilcoxon(D[ties, :size], axis=1, method="asymptotic").pvalue
    return p


# --------------------------------------------------------------------------------------------------
# per-configuration summary

SUMMARY_COLUMNS = ("n", "mean", "std", "std_pop", "median", "n_pos", "n_zero", "n_neg", "sign_p",
                   "wilcoxon_p", "ci_lo", "ci_hi", "ci_method", "ci_level", "p_improve",
                   "seeds_needed", "notes")


def _none_for_nan(values, as_int: bool = False) -> pd.Series:
    """A column whose missing entries are None (object dtype), never NaN; float/int if complete."""
    values = np.asarray(values, dtype=float)
    if np.isfinite(values).all():
        return pd.Series(values.astype(int) if as_int else values)
    return pd.Series([None if not np.isfinite(v) else (int(v) if as_int else float(v))
                      for v in values], dtype=object)


def summarize(df: pd.DataFrame, delta_col: str, group_cols: str | Sequence[str],
              level: float = 0.95, method: str = "t", effect: float | None = None,
              power: float = 0.8, alpha: float = 0.05, n_resamples: int = 10_000,
              seed=0) -> pd.DataFrame:
    """One row per configuration (group) of paired deltas, every number NaN-free.

    Columns: the group columns, then

    * ``n``; ``mean``; ``std`` (sample, ddof=1); ``std_pop`` (ddof=0, the researchers' convention);
      ``median``; ``n_pos`` / ``n_zero`` / ``n_neg`` (sign counts, exact zeros are ties);
    * ``sign_p``: exact two-sided binomial sign test, ties dropped (all ties: 1.0, noted);
    * ``wilcoxon_p``: Wilcoxon signed-rank, zeros dropped: scipy's exact test for untied seeds,
      the exact conditional test for tied ones up to 13 seeds (``signed_rank_exact_p``), normal
      approximation beyond; None when n < 2 or every delta is 0;
    * ``ci_lo`` / ``ci_hi``: ``level`` interval for the mean by ``ci_method`` (see module doc);
    * ``p_improve``: the share of seeds on which FS beat the baseline, ties counted half,
      ``(n_pos + n_zero / 2) / n``: an estimate of P(d > 0) for a fresh seed (rliable's
      "probability of improvement", paired);
    * ``seeds_needed``: smallest n whose two-sided paired t-test at ``alpha`` has ``power`` to
      detect ``effect`` (default: the observed mean) at the observed std (noncentral t); None when
      the std or the effect is 0, n < 2, or more than ``MAX_SEEDS`` would be needed;
    * ``notes``: why a value is missing, ties, and cautions ("; "-separated, "" when none).

    Rows with a missing (NaN) delta are dropped and counted in ``notes``.
    """
    if not isinstance(df, pd.DataFrame):
        raise AnalysisInputError(f"summarize expects a pandas DataFrame, got {type(df).__name__}")
    group_cols = [group_cols] if isinstance(group_cols, str) else list(group_cols)
    missing_cols = [c for c in [delta_col, *group_cols] if c not in df.columns]
    if missing_cols:
        raise AnalysisInputError(f"missing column(s) {missing_cols}; have {list(df.columns)}")
    if not group_cols:
        raise AnalysisInputError("summarize needs at least one group column")
    level, method = _check_level(level), _check_method(method)
    if not (0 < power < 1 and 0 < alpha < 1):
        raise AnalysisInputError(f"power and alpha must lie in (0, 1), got {power} and {alpha}")
    if effect is not None and not (np.isfinite(effect) and effect != 0):
        raise AnalysisInputError(f"effect must be a finite non-zero number, got {effect}")
    if len(df) == 0:
        raise AnalysisInputError("no paired deltas to summarise (empty table)")
    try:
        values = pd.to_numeric(df[delta_col], errors="raise").to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise AnalysisInputError(f"column {delta_col!r} is not numeric: {exc}") from None
    if np.isinf(values).any():
        raise AnalysisInputError(f"column {delta_col!r} holds an infinite delta")

    grouped = df.groupby(group_cols, sort=False, dropna=False)
    codes = grouped.ngroup().to_numpy()
    keys = grouped.size().reset_index()[group_cols]  # same order as ngroup with sort=False
    G = len(keys)
    dropped = np.bincount(codes[np.isnan(values)], minlength=G)
    keep = ~np.isnan(values)
    codes, values = codes[keep], values[keep]
    pos = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    n = np.bincount(codes, minlength=G)
    D = np.full((G, max(int(n.max()) if n.size else 0, 1)), np.nan)
    D[codes, pos] = values

    mean, std = _row_moments(D, n)
    with np.errstate(invalid="ignore"):
        std_pop = np.where(n > 1, std * np.sqrt((n - 1) / np.maximum(n, 1)), np.nan)
    median = np.full(G, np.nan)
    for size in np.unique(n[n > 0]):
        rows = np.flatnonzero(n == size)
        median[rows] = np.median(D[rows, :size], axis=1)
    n_pos, n_zero, n_neg = _row_signs(D, n)
    sign_p = np.where(n > 0, sign_test_p(n_pos, n_neg), np.nan)
    wil_p = _wilcoxon_p(D, n)
    lo, hi = mean_intervals(D, level, method, n_resamples, seed)
    p_improve = np.where(n > 0, (n_pos + 0.5 * n_zero) / np.maximum(n, 1), np.nan)
    target = np.abs(mean) if effect is None else np.full(G, abs(float(effect)))
    needed = np.where(n >= 2, seeds_needed(target, std, power, alpha), np.nan)

    notes = []
    for g in range(G):
        k, note = int(n[g]), []
        if dropped[g]:
            note.append(f"{dropped[g]} missing delta(s) dropped")
        if k == 0:
            note.append("no deltas")
        elif k == 1:
            note.append("n=1: no spread, interval or tests from a single seed")
        if k > 0 and n_zero[g] == k:
            note.append("all deltas are ties (0): sign test p = 1.0, Wilcoxon undefined")
        elif n_zero[g]:
            note.append(f"{n_zero[g]} tie(s) dropped from the sign and Wilcoxon tests")
        if k >= 2 and std[g] == 0 and n_zero[g] != k:
            note.append("all deltas equal: zero-width interval")
        if k >= 2 and np.isnan(needed[g]):
            if std[g] == 0:
                note.append("seeds_needed undefined at zero spread")
            elif effect is None and mean[g] == 0:
                note.append("seeds_needed undefined at mean 0 (give an effect)")
            else:
                note.append(f"seeds_needed > {MAX_SEEDS}")
        if method != "t" and 2 <= k < 10:
            note.append(f"{method} bootstrap at n={k} undercovers; the t interval is safer")
        notes.append("; ".join(note))

    out = keys.copy()
    out["n"] = n
    for name, col in (("mean", mean), ("std", std), ("std_pop", std_pop), ("median", median)):
        out[name] = _none_for_nan(col)
    out["n_pos"], out["n_zero"], out["n_neg"] = n_pos, n_zero, n_neg
    out["sign_p"] = _none_for_nan(sign_p)
    out["wilcoxon_p"] = _none_for_nan(wil_p)
    out["ci_lo"], out["ci_hi"] = _none_for_nan(lo), _none_for_nan(hi)
    out["ci_method"] = method
    out["ci_level"] = level
    out["p_improve"] = _none_for_nan(p_improve)
    out["seeds_needed"] = _none_for_nan(needed, as_int=True)
    out["notes"] = notes
    return out
