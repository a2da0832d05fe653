"""An estimate that knows when it stopped: the mean delta of a settled configuration corrected for
the stopping rule that settled it.

A sequential design stops early when the deltas so far look extreme, so the plain mean at the
stop is biased away from 0 (a configuration that crossed at 3 seeds did so partly by luck). The
sample-mean ordering (Emerson & Fleming 1990; Jennison & Turnbull 2000, ch. 8) orders every
outcome of the design -- (seeds at the stop, mean there) -- by its mean, and calls ``mu`` plausible
when the observed outcome is not extreme under it:

    p(mu) = P_mu(mean at the stop >= observed mean)

increases with ``mu``; the median-unbiased estimate solves ``p(mu) = 1/2`` and the ``1 - alpha``
interval ``p(lo) = alpha / 2``, ``p(hi) = 1 - alpha / 2``. ``p`` is computed by simulating the
design itself (``analysis.settle_sim``: the same rule as the verdicts, the same prior), with the
configuration's (moderated) spread taken as known, on common random numbers so that ``p`` is a
smooth increasing function to bisect. The spread is not known: each simulated path draws its own
from the spread's distribution given the observed one (``sigma^2 = nu s^2 / chi2_nu`` on the
(moderated) degrees of freedom ``nu``), so that a small observed spread at 3 seeds does not make
the interval overconfident. Looks after the observed stop are assumed to follow the
last round's size up to the horizon (the settling loop's rounds).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import optimize

from . import settle_sim
from .sequential import MIN_SEEDS

REPS = 2000
_SEED = 20261205


def schedule_after(looks: Sequence[int], horizon: int) -> tuple[int, ...]:
    """The looks taken, then one per round of the last round's size (2 if unknown) to the horizon."""
    looks = [x for x in looks if MIN_SEEDS <= x <= horizon]
    step = looks[-1] - looks[-2] if len(looks) > 1 else 2
    rest = list(range(looks[-1] + step, horizon + 1, max(step, 1)))
    if looks[-1] < horizon and (not rest or rest[-1] != horizon):
        rest.append(horizon)
    return tuple(looks + rest)


def stopped_estimate(mean: float, sd: float, looks: Sequence[int], design, d0: float = 0.0,
                     s0sq: float = math.nan, reps: int = REPS, df: float | None = None) -> tuple[float, float, float] | None:
    """(median-unbiased estimate, lo, hi) of the oriented mean delta (> 0: FS helps) of a
    configuration whose design (``verdict.Design``, oriented: ``higher_is_better`` is ignored)
    stopped at the last of ``looks`` with mean ``mean`` and spread ``sd``; None without a spread."""
    from dataclasses import replace

    if not (sd > 0) or not looks:
        return None
    design = replace(design, higher_is_better=True)
    sched = schedule_after(looks, design.horizon)
    if not sched:
        return None
    rng = np.random.default_rng(_SEED)
    nu = (looks[-1] - 1 + d0) if df is None else df
    scale = np.ones((reps, 1)) if math.isinf(nu) else np.sqrt(nu / rng.chisquare(nu, (reps, 1)))
    z = rng.standard_normal((reps, sched[-1])) * scale
    zbar = np.cumsum(z, axis=1) / np.arange(1, sched[-1] + 1)

    def p_at_least(mu: float) -> float:
        r = settle_sim.sequential_verdicts(mu + sd * z, design, sched, d0, s0sq)
        stop_mean = mu + sd * zbar[np.arange(reps), r["n"] - 1]
        return float((stop_mean >= mean).mean())

    se = sd / math.sqrt(looks[-1])
    lo_b, hi_b = mean - 12 * se, mean + 12 * se

    def solve(target: float) -> float:
        f = lambda mu: p_at_least(mu) - target  # noqa: E731
        a, b = lo_b, hi_b
        if f(a) > 0 or f(b) < 0:
            return math.nan
        return float(optimize.brentq(f, a, b, xtol=se * 1e-2))

    a = design.alpha
    return solve(0.5), solve(a / 2), solve(1 - a / 2)
