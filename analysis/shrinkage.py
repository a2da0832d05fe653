"""Borrowed variance: an empirical-Bayes prior on the paired-delta variance of a family.

The configurations of one family (same task, model, budget, metric and stage) are measured by the
same trainer on the same kind of seeds, so their paired-delta variances are alike. Smyth (2004,
"Linear models and empirical Bayes methods for assessing differential expression", the moment
estimator of limma's ``fitFDist``) models each configuration's sample variance ``s_g^2`` on ``d_g``
degrees of freedom as ``sigma_g^2 * chi2(d_g) / d_g`` with ``1 / sigma_g^2`` drawn from a scaled
chi-square on ``d0`` degrees of freedom around ``1 / s0^2``. Then

* ``log s_g^2`` has mean ``log sigma^2 + digamma(d/2) - log(d/2)`` and variance ``trigamma(d/2)``
  plus ``trigamma(d0/2)`` (the spread of the true variances), so the family's sample variances of
  the log-variances give ``d0`` (inverting trigamma) and their mean gives ``s0^2``;
* each configuration's posterior variance is ``(d0 s0^2 + d_g s_g^2) / (d0 + d_g)``, and its
  *moderated* t ``mean / sqrt(post / n)`` is a t on ``d0 + d_g`` degrees of freedom.

A homogeneous family (every configuration equally noisy) estimates ``d0`` large (often infinite:
the log-variances spread no more than chi-square sampling alone makes them) and every
configuration gains that many degrees of freedom; a heterogeneous one (one configuration three
times noisier) estimates a small ``d0`` and gains little; a family of one cannot estimate a spread
and gets ``d0 = 0``: today's t.

Three guards the formulae alone lack, all conservative:

* the degrees of freedom a configuration is given are capped at the family's total residual degrees
  of freedom (``sum_g d_g``): ``s0^2`` itself is estimated from that many, so claiming more (an
  infinite ``d0``) would make the intervals too narrow by the error in ``s0^2``;
* each configuration's prior is fitted from the *other* configurations of its family, and a
  configuration whose own variance is out of line with it (upper tail of ``F(d_g, d0)`` below
  ``OUTLIER_P``) keeps its own variance: a configuration three times noisier than the rest would
  otherwise be shrunk towards them and its interval would cover far less than it says (measured in
  ``tests/test_shrinkage.py``: 0.75 at 3 seeds without the guard, 0.85 with it, nominal from ~10);
* configurations with no spread (no-ops, all deltas equal) and configurations with fewer than two
  seeds are left out of the fit (a zero variance has no logarithm; limma offsets them instead).

API: ``fit_prior(variances, dfs) -> Prior`` (the plain fit); ``family_priors({name: deltas}) ->
{name: Prior}`` (the guarded prior of each configuration); ``family_prior`` (one fit of them all); ``Prior.moderate(s2,
d) -> (posterior variance, df)``; ``Prior.none()`` (``d0 = 0``: plain t). ``analysis.verdict``,
``analysis.summary`` and the racing in ``fsray.search.objective`` take a ``Prior``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import special, stats

from .errors import AnalysisInputError

# The fewest configurations a prior is fitted from: with two log-variances their spread is one
# number, and the estimate of d0 swings between 0 and infinity.
MIN_CONFIGS = 3
# A configuration's variance this far in the upper tail of the rest of its family's keeps its own.
OUTLIER_P = 0.05


def trigamma_inverse(x: float | np.ndarray) -> np.ndarray:
    """The y > 0 with trigamma(y) = x (Smyth 2004's Newton iteration on 1 / trigamma, which is
    nearly linear in y); x > 0."""
    x = np.asarray(x, dtype=float)
    if np.any(~(x > 0)):
        raise AnalysisInputError("trigamma_inverse needs positive arguments")
    y = 0.5 + 1.0 / x
    big, small = x > 1e7, x < 1e-6
    for _ in range(50):
        tri = special.polygamma(1, y)
        step = tri * (1.0 - tri / x) / special.polygamma(2, y)
        y = y + step
        if np.all(-step / y < 1e-10):
            break
    return np.where(big, 1.0 / np.sqrt(x), np.where(small, 1.0 / x, y))


@dataclass(frozen=True)
class Prior:
    """A family's variance prior: ``d0`` prior degrees of freedom (0: none, inf: every
    configuration's variance is the family's), ``s0sq`` the prior variance, ``n_configs`` the
    configurations it was fitted from and ``df_total`` their residual degrees of freedom (the cap
    on what a configuration may be given)."""

    d0: float = 0.0
    s0sq: float = math.nan
    n_configs: int = 1
    df_total: float = math.inf
    outlier: bool = False   # this configuration's variance is out of line: it keeps its own

    @staticmethod
    def none() -> "Prior":
        return Prior()

    @property
    def applies(self) -> bool:
        return self.d0 > 0 and math.isfinite(self.s0sq) and self.s0sq > 0

    def prior_df(self, d: float | np.ndarray) -> np.ndarray:
        """Prior degrees of freedom given to a configuration of ``d`` own degrees of freedom:
        ``d0``, capped so that ``d + prior_df <= df_total`` (never below 0)."""
        d = np.asarray(d, dtype=float)
        if not self.applies:
            return np.zeros_like(d)
        cap = np.maximum(self.df_total - d, 0.0) if math.isfinite(self.df_total) else np.inf
        return np.minimum(self.d0, cap)

    def moderate(self, s2, d) -> tuple[np.ndarray, np.ndarray]:
        """(posterior variance, degrees of freedom) of sample variances ``s2`` on ``d`` df."""
        s2, d = np.broadcast_arrays(np.asarray(s2, dtype=float), np.asarray(d, dtype=float))
        if not self.applies:
            return s2.astype(float), d.astype(float)
        d0 = self.prior_df(d)
        with np.errstate(invalid="ignore"):
            post = np.where(np.isinf(d0), self.s0sq, (d0 * self.s0sq + d * s2) / (d0 + d))
        return post, d + d0

    def describe(self) -> str:
        if self.outlier:
            return "own variance (out of line with the rest of its family)"
        if not self.applies:
            return "own variance (no family prior)"
        d0 = "∞" if math.isinf(self.d0) else f"{self.d0:.1f}"
        return (f"borrowed variance: prior df {d0} (capped at {self.df_total:g} in all), prior sd "
                f"{math.sqrt(self.s0sq):.4g}, from {self.n_configs} configurations")

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()} | {"applies": self.applies,
                                                     "d0_infinite": math.isinf(self.d0)}


def fit_prior(variances: Sequence[float], dfs: Sequence[float] | float) -> Prior:
    """Smyth's moment estimate of (d0, s0^2) from sample variances on ``dfs`` degrees of freedom.

    Rows with a non-positive or non-finite variance or df are left out; fewer than ``MIN_CONFIGS``
    left give ``Prior.none()``."""
    s2 = np.asarray(variances, dtype=float).ravel()
    d = np.broadcast_to(np.asarray(dfs, dtype=float), s2.shape).ravel()
    ok = np.isfinite(s2) & (s2 > 0) & np.isfinite(d) & (d > 0)
    s2, d = s2[ok], d[ok]
    g = s2.size
    if g < MIN_CONFIGS:
        return Prior(n_configs=int(g), df_total=float(d.sum()) if g else 0.0)
    z = np.log(s2)
    e = z - special.digamma(d / 2) + np.log(d / 2)
    emean = float(e.mean())
    evar = float(np.mean(g / (g - 1) * (e - emean) ** 2 - special.polygamma(1, d / 2)))
    if evar > 0:
        d0 = float(2.0 * trigamma_inverse(evar))
        s0sq = math.exp(emean + special.digamma(d0 / 2) - math.log(d0 / 2))
    else:
        d0, s0sq = math.inf, math.exp(emean)
    return Prior(d0=d0, s0sq=s0sq, n_configs=int(g), df_total=float(d.sum()))


def family_prior(deltas_by_config: Mapping[str, Sequence[float]] | Iterable[Sequence[float]]) -> Prior:
    """The prior of a family from each configuration's paired deltas (sample variance on n - 1
    degrees of freedom; no-ops and single seeds are left out by ``fit_prior``)."""
    rows = deltas_by_config.values() if isinstance(deltas_by_config, Mapping) else deltas_by_config
    s2, d = [], []
    for x in rows:
        x = np.asarray(list(x), dtype=float)
        x = x[np.isfinite(x)]
        if x.size >= 2:
            s2.append(float(x.var(ddof=1)))
            d.append(x.size - 1)
    return fit_prior(s2, d)


def family_priors(deltas_by_config: Mapping[str, Sequence[float]]) -> dict[str, Prior]:
    """The prior each configuration of a family gets: fitted from the other configurations, and
    none (its own variance) when its variance is out of line with theirs. Configurations with
    fewer than 2 deltas or no spread get the others' prior (they are not in any fit)."""
    s2, d = {}, {}
    for k, x in deltas_by_config.items():
        x = np.asarray(list(x), dtype=float)
        x = x[np.isfinite(x)]
        if x.size >= 2 and x.var(ddof=1) > 0:
            s2[k], d[k] = float(x.var(ddof=1)), float(x.size - 1)
    total = float(sum(d.values()))
    out = {}
    for k in deltas_by_config:
        rest = [j for j in s2 if j != k]
        p = fit_prior([s2[j] for j in rest], [d[j] for j in rest])
        p = Prior(d0=p.d0, s0sq=p.s0sq, n_configs=p.n_configs + (k in s2), df_total=total)
        if p.applies and k in s2 and _out_of_line(s2[k], d[k], p):
            p = Prior(n_configs=p.n_configs, df_total=total, outlier=True)
        out[k] = p
    return out


def _out_of_line(s2, d, prior: Prior):
    """Whether variances ``s2`` (on ``d`` df) lie in the upper ``OUTLIER_P`` tail of the prior's
    predictive distribution, ``s0^2 F(d, d0)`` (d0 capped as it would be given)."""
    d0 = prior.prior_df(d) if isinstance(prior, Prior) else prior[0]
    s0sq = prior.s0sq if isinstance(prior, Prior) else prior[1]
    d0 = np.where(np.isinf(d0), 1e8, np.maximum(d0, 1e-8))
    return stats.f.sf(np.asarray(s2) / s0sq, d, d0) < OUTLIER_P


def family_priors_rows(S2: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``family_priors`` over many families at once (simulations): ``S2`` ``[R, G]`` sample
    variances (all positive) on ``d`` df each. Returns (d0, s0sq) ``[R, G]`` and df_total ``[R]``;
    an out-of-line configuration gets d0 = 0."""
    S2 = np.asarray(S2, dtype=float)
    R, G = S2.shape
    d0 = np.zeros((R, G))
    s0sq = np.full((R, G), np.nan)
    total = np.full(R, float(d) * G)
    for g in range(G):
        a, b, _ = fit_prior_rows(np.delete(S2, g, axis=1), d)
        cap = np.minimum(a, np.maximum(total - d, 0.0))
        flag = (a > 0) & _out_of_line(S2[:, g], d, (cap, b))
        d0[:, g], s0sq[:, g] = np.where(flag, 0.0, a), b
    return d0, s0sq, total


def fit_prior_rows(S2: np.ndarray, d: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fit_prior`` over many families at once (simulations): ``S2`` is ``[R, G]`` (one family
    per row, every variance positive), ``d`` their df (broadcast). Returns (d0, s0sq, df_total)
    per row."""
    S2 = np.asarray(S2, dtype=float)
    d = np.broadcast_to(np.asarray(d, dtype=float), S2.shape)
    g = S2.shape[1]
    if g < MIN_CONFIGS:
        r = S2.shape[0]
        return np.zeros(r), np.full(r, np.nan), d.sum(axis=1)
    e = np.log(S2) - special.digamma(d / 2) + np.log(d / 2)
    emean = e.mean(axis=1)
    evar = np.mean(g / (g - 1) * (e - emean[:, None]) ** 2 - special.polygamma(1, d / 2), axis=1)
    fin = evar > 0
    d0 = np.full(S2.shape[0], np.inf)
    d0[fin] = 2.0 * trigamma_inverse(evar[fin])
    s0sq = np.exp(emean)
    s0sq[fin] = np.exp(emean[fin] + special.digamma(d0[fin] / 2) - np.log(d0[fin] / 2))
    return d0, s0sq, d.sum(axis=1)


def moderate_rows(s2, d, d0, s0sq, df_total) -> tuple[np.ndarray, np.ndarray]:
    """``Prior.moderate`` broadcast over arrays of priors (simulations)."""
    s2, d, d0, s0sq, df_total = np.broadcast_arrays(*(np.asarray(a, dtype=float)
                                                      for a in (s2, d, d0, s0sq, df_total)))
    use = (d0 > 0) & np.isfinite(s0sq) & (s0sq > 0)
    dd0 = np.where(use, np.minimum(d0, np.maximum(df_total - d, 0.0)), 0.0)
    with np.errstate(invalid="ignore"):
        post = np.where(np.isinf(dd0), s0sq, (np.where(use, dd0 * s0sq, 0.0) + d * s2) / (dd0 + d))
    return np.where(use, post, s2), d + dd0


def moderated_interval(deltas: Sequence[float], prior: Prior | None, level: float = 0.95
                       ) -> tuple[float, float, float]:
    """(lo, hi, df) of the moderated t interval of one configuration's mean delta."""
    x = np.asarray(list(deltas), dtype=float)
    if x.size < 2:
        raise AnalysisInputError(f"an interval needs at least 2 paired deltas, got {x.size}")
    post, df = (prior or Prior.none()).moderate(x.var(ddof=1), x.size - 1)
    half = float(stats.t.isf((1 - level) / 2, df)) * math.sqrt(float(post) / x.size)
    m = float(x.mean())
    return m - half, m + half, float(df)


def moderated_p(deltas: Sequence[float], prior: Prior | None) -> float:
    """Two-sided p of the moderated t test of mean 0 (1.0 at zero spread and mean)."""
    x = np.asarray(list(deltas), dtype=float)
    if x.size < 2:
        return math.nan
    post, df = (prior or Prior.none()).moderate(x.var(ddof=1), x.size - 1)
    if not post > 0:
        return 1.0 if x.mean() == 0 else 0.0
    t = float(x.mean()) / math.sqrt(float(post) / x.size)
    return float(2 * stats.t.sf(abs(t), df))
