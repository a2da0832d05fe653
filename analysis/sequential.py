"""Group-sequential boundaries: alpha spending over the looks actually taken, on t statistics.

One job: given the numbers of paired seeds at which a configuration has been looked at
(``looks = [n_1 < n_2 < ... < n_K]``), the design's horizon ``H`` (the most seeds it may reach) and a
one-sided error ``a``, return the critical value of the t statistic at every look such that the
chance of *ever* crossing, over all looks, is ``a`` when the true mean is on the boundary of the null.

Method (Lan & DeMets 1983; Jennison & Turnbull 2000, ch. 7 and 19):

* the spending function is the power family ``a(t) = a * min(t, 1) ** rho`` (Kim & DeMets 1987)
  on the information fraction ``t = n / H``; look k may spend ``a(t_k) - a(t_{k-1})``;
* the normal-theory boundary ``z_k`` is solved look by look so that the probability of a first
  crossing at look k, under the canonical joint distribution of the score statistics (independent
  increments, ``S_k ~ N(0, n_k)``), equals what look k may spend. The density of the not-yet-crossed
  score is carried from look to look on a grid (Simpson's rule), as in Jennison & Turnbull ch. 19;
* the t boundary at look k is the t quantile with ``n_k - 1`` degrees of freedom at the same nominal
  one-sided p-value ``1 - Phi(z_k)`` (J&T section 7.2's nominal-significance rule for an unknown
  variance). ``tests/test_sequential.py`` checks the error rate this gives by simulation at 3-20
  seeds.

Only upper boundaries are computed: every verdict is a one-sided test (FS helps; FS hurts; the
effect is below +delta; above -delta), each non-binding, so stopping for another reason can only
lower its error. Looks beyond the horizon have no error left to spend: their boundary is infinite.

Looks may fall anywhere (rounds of any size, a crash mid-round): what matters is that *when* to look
was not chosen from the deltas. The boundaries depend only on (looks, horizon, a, rho) and are cached.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
from scipy import optimize, special, stats

from .errors import AnalysisInputError

# Spending exponent: a(t) = a * t**RHO. Chosen by bench/settle_efficiency.py (see README "Verdicts").
RHO = 1.5
# The fewest paired seeds a look may use: a t statistic needs a spread, and at 2 seeds (1 degree of
# freedom) its tails are Cauchy's.
MIN_SEEDS = 3
# Grid of the score density: points per unit standard deviation of the increments, and the span.
_GRID_PER_SD = 24
_SPAN_SD = 8.0


def _check(looks: Sequence[int], horizon: int, a: float, rho: float) -> tuple[int, ...]:
    if not (0.0 < a < 0.5):
        raise AnalysisInputError(f"one-sided error must lie in (0, 0.5), got {a}")
    if not (isinstance(horizon, (int, np.integer)) and horizon >= MIN_SEEDS):
        raise AnalysisInputError(f"horizon must be an integer >= {MIN_SEEDS}, got {horizon!r}")
    if not (math.isfinite(rho) and rho > 0):
        raise AnalysisInputError(f"spending exponent rho must be > 0, got {rho}")
    looks = tuple(int(n) for n in looks)
    if any(n < MIN_SEEDS for n in looks):
        raise AnalysisInputError(f"a look needs at least {MIN_SEEDS} seeds, got looks {list(looks)}")
    if any(b <= a_ for a_, b in zip(looks, looks[1:])):
        raise AnalysisInputError(f"looks must be strictly increasing seed counts, got {list(looks)}")
    return looks


def spent(t: float | np.ndarray, a: float, rho: float = RHO):
    """Cumulative one-sided error spent by information fraction ``t`` (power family)."""
    return a * np.minimum(np.asarray(t, dtype=float), 1.0) ** rho


def _simpson_weights(m: int, h: float) -> np.ndarray:
    """Composite Simpson weights for ``m`` (odd) equally spaced points ``h`` apart."""
    w = np.ones(m)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * h / 3.0


def z_boundaries(looks: tuple[int, ...], horizon: int, a: float, rho: float = RHO) -> tuple[float, ...]:
    """Normal-theory upper boundaries (z scale) at ``looks``; ``inf`` where nothing is left to spend."""
    looks = _check(looks, horizon, a, rho)
    return _z_state(looks, int(horizon), float(a), float(rho))[0]


@functools.lru_cache(maxsize=4096)
def _z_state(looks: tuple[int, ...], horizon: int, a: float, rho: float):
    """(boundaries, grid, weights, density, spent) after ``looks``: each prefix is computed once,
    so a projection that tries many next looks after the same earlier ones costs one step each."""
    if not looks:
        return (), None, None, None, 0.0
    out, grid, weights, dens, prev_spent = _z_state(looks[:-1], horizon, a, rho)
    prev_n, n = (looks[-2] if len(looks) > 1 else 0), looks[-1]
    budget = float(spent(n / horizon, a, rho)) - prev_spent
    inc_sd = math.sqrt(n - prev_n)
    if budget <= 1e-15:
        # Nothing crosses: the density (if any) just diffuses to this look.
        if dens is not None:
            grid, weights, dens = _diffuse(grid, weights, dens, n, inc_sd, math.inf)
        return out + (math.inf,), grid, weights, dens, prev_spent
    if dens is None:  # nothing could cross before: the plain normal tail
        z = float(special.ndtri(1.0 - budget))
    else:
        def crossing(zk: float) -> float:
            cut = zk * math.sqrt(n)
            return float(np.sum(weights * dens * special.ndtr((grid - cut) / inc_sd))) - budget
        z = optimize.brentq(crossing, -10.0, 40.0, xtol=1e-10)
    grid, weights, dens = _diffuse(grid, weights, dens, n, inc_sd, z)
    return out + (z,), grid, weights, dens, prev_spent + budget


def _diffuse(grid, weights, dens, n: int, inc_sd: float, z: float):
    """Density of the score S_n on (-inf, z*sqrt(n)) given the previous not-crossed density."""
    sd = math.sqrt(n)
    top = z * sd if math.isfinite(z) else _SPAN_SD * sd
    bottom = -_SPAN_SD * sd
    m = int(math.ceil((top - bottom) / inc_sd * _GRID_PER_SD)) | 1
    m = max(m, 101)
    new_grid = np.linspace(bottom, top, m)
    new_weights = _simpson_weights(m, (top - bottom) / (m - 1))
    if dens is None:
        new_dens = stats.norm.pdf(new_grid, scale=sd)
    else:
        kern = stats.norm.pdf((new_grid[:, None] - grid[None, :]) / inc_sd) / inc_sd
        new_dens = kern @ (weights * dens)
    return new_grid, new_weights, new_dens


# Paths simulated to calibrate the t boundaries of the second and later looks (fixed seed, so a
# boundary is a deterministic function of the looks; its error rate is within ~sqrt(a / _PATHS) of a).
_PATHS = 1 << 20
_PATH_SEED = 20261202


# Prior degrees of freedom (borrowed variance, analysis.shrinkage) are rounded down to this grid
# before calibrating (fewer degrees of freedom: wider boundaries), so a few calibrations serve all.
PRIOR_DF_GRID = (0, 1, 2, 3, 5, 8, 12, 18, 27, 40, 60, 100, 200, math.inf)


def prior_df_step(d0: float) -> float:
    """``d0`` rounded down to ``PRIOR_DF_GRID``."""
    if not d0 > 0:
        return 0
    return max(g for g in PRIOR_DF_GRID if g <= d0)


def t_boundaries(looks: tuple[int, ...], horizon: int, a: float, rho: float = RHO,
                 prior_df: float = 0) -> tuple[float, ...]:
    """Critical values of the one-sample t statistic ``mean / (sd / sqrt(n))`` at ``looks``;
    with ``prior_df`` (borrowed variance), of the moderated t, whose variance adds a prior worth
    ``prior_df`` degrees of freedom (rounded down to ``PRIOR_DF_GRID``)."""
    return _t_boundaries(tuple(looks), horizon, a, rho, prior_df_step(prior_df))


@functools.lru_cache(maxsize=1024)
def _t_boundaries(looks: tuple[int, ...], horizon: int, a: float, rho: float = RHO,
                  prior_df: float = 0) -> tuple[float, ...]:
    """Critical values of the one-sample t statistic ``mean / (sd / sqrt(n))`` at ``looks``.

    The first look that may spend is exact (the t quantile). Later looks are calibrated on the t
    statistics themselves: ``_PATHS`` normal paths are carried look to look (a block of new seeds
    adds a normal sum and a chi-square within-block sum of squares), and look k's boundary is the
    value that the paths not yet crossed exceed with probability ``a(t_k) - a(t_{k-1})``. The t
    statistic's null distribution does not depend on the spread, so one calibration serves every
    configuration. The draws for look k depend on looks 1..k only: adding a look never moves an
    earlier boundary (a verdict once reached stays reached). A prior of ``prior_df`` degrees of
    freedom is, in the hierarchical model it comes from, a chi-square on ``prior_df`` degrees of
    freedom independent of the seeds: drawn once per path and added to every look's sum of
    squares (infinite: the variance is known).
    """
    looks = _check(looks, horizon, a, rho)
    d0 = float(prior_df)
    out: list[float] = []
    rng = np.random.default_rng(_PATH_SEED)
    total = ss = alive = None
    first = None                    # (n, boundary) of the first look that spent, until paths exist
    prev_n, prev_spent = 0, 0.0
    for n in looks:
        budget = float(spent(n / horizon, a, rho)) - prev_spent
        if first is None and total is None:
            if budget <= 1e-15:
                out.append(math.inf)  # nothing to spend yet, nothing to carry
                continue
            out.append(float(stats.t.isf(budget, n - 1 + d0)))  # exact: nothing could cross before
            first, prev_n, prev_spent = (n, out[-1]), n, prev_spent + budget
            continue
        if total is None:
            # Paths start at the first look, all of its seeds in one block (drawn only when a
            # second look needs them: a single look costs nothing).
            n1, c1 = first
            total = rng.standard_normal(_PATHS) * math.sqrt(n1)
            ss = 2.0 * rng.standard_gamma((n1 - 1) / 2.0, _PATHS)
            prior_ss = 2.0 * rng.standard_gamma(d0 / 2.0, _PATHS) if 0 < d0 < math.inf else 0.0
            alive = _tstat(total, ss, n1, d0, prior_ss) < c1
        k = n - prev_n
        block = rng.standard_normal(_PATHS) * math.sqrt(k)
        within = 2.0 * rng.standard_gamma((k - 1) / 2.0, _PATHS) if k > 1 else 0.0
        # Pooled sum of squares of two groups: Q1 + Q2 + n1 n2 / (n1 + n2) (m1 - m2)^2.
        ss = ss + within + prev_n * k / n * (total / prev_n - block / k) ** 2
        total = total + block
        tstat = _tstat(total, ss, n, d0, prior_ss)
        if budget <= 1e-15:
            out.append(math.inf)
        else:
            out.append(_upper_quantile(tstat[alive], budget * _PATHS))
            alive &= tstat < out[-1]
            prev_spent += budget
        prev_n = n
    return tuple(out)


def _tstat(total: np.ndarray, ss: np.ndarray, n: int, d0: float = 0, prior_ss=0.0) -> np.ndarray:
    if math.isinf(d0):
        return (total / n) * math.sqrt(n)
    return (total / n) / np.sqrt((ss + prior_ss) / (n - 1 + d0) / n)


def _upper_quantile(values: np.ndarray, need: float) -> float:
    """The value that ``need`` (a count, possibly fractional) of ``values`` reach or exceed,
    interpolated between order statistics."""
    if need >= values.size:
        return -math.inf
    i = int(math.floor(need))
    top = -np.partition(-values, i)[: i + 1]  # the i + 1 largest, unordered
    top.sort()
    top = top[::-1]
    if i == 0:
        return float(top[0])
    return float(top[i - 1] - (need - i) * (top[i - 1] - top[i]))


def t_boundaries_approx(looks: tuple[int, ...], horizon: int, a: float,
                        rho: float = RHO, prior_df: float = 0) -> tuple[float, ...]:
    """The t quantile at each look's normal-theory nominal p (Jennison & Turnbull 7.2): cheap, and
    ~10% generous in error at 3-20 seeds, so used only to *project* a plan, never for a verdict."""
    z = z_boundaries(tuple(looks), horizon, a, rho)
    d0 = prior_df_step(prior_df)
    return tuple(math.inf if not math.isfinite(zk) else float(stats.t.isf(special.ndtr(-zk), n - 1 + d0))
                 for zk, n in zip(z, looks))


def nominal_p(looks: Sequence[int], horizon: int, a: float, rho: float = RHO) -> list[float]:
    """One-sided nominal p-value a look must reach to cross (0 where nothing is left to spend)."""
    return [float(special.ndtr(-z)) for z in z_boundaries(tuple(looks), horizon, a, rho)]
