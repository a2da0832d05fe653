"""A truncated generalized SPRT for the mean paired delta, with unknown (or borrowed) variance.

One job: the settling design of ``analysis.verdict`` (``Design(kind="sprt")``, the default). Three
one-sided sequential probability ratio tests between two simple hypotheses about the mean delta
``mu`` (oriented: > 0 means FS helps), as Stockfish's fishtest decides patches (its normal model
with unknown variance), each on the log likelihood ratio of the seeds so far:

* "helps":  ``mu = +delta`` against ``mu = 0``, crossing ``+A``;
* "hurts":  ``mu = -delta`` against ``mu = 0``, crossing ``+A``;
* "no effect": both of them crossing ``-B`` (the seeds favour ``mu = 0`` over ``+delta`` and over
  ``-delta``);
* "helps by delta or more": ``mu = 2 delta`` against ``mu = delta`` crossing ``+A`` as well.

The variance is plugged in, as fishtest does: with the sample variance around the mean, moderated
by the family prior when there is one (``analysis.shrinkage``: ``d0`` degrees of freedom around
``s0^2``), ``v = (d0 s0^2 + (n - 1) s^2) / (d0 + n - 1)``, the normal log likelihood ratio of
``mu1`` against ``mu0`` is

    LLR = n (mu1 - mu0) (mean - (mu0 + mu1) / 2) / v

(A profile ratio, the variance fitted under each hypothesis, was tried first: it cannot tell a
large effect from none, since a mean far from both hypotheses fits both with a large variance.)

Error rates. Wald's thresholds ``log((1 - beta)/alpha)`` assume a known variance and no truncation;
here the thresholds are calibrated by simulation so that, with a look after *every* seed from
``MIN_SEEDS`` to the horizon, the chance of ever crossing ``+A`` when ``mu = 0`` is at most
``a_effect`` (alpha / 2) and of ever crossing ``-B`` when ``mu = +-delta`` at most ``beta``, for
every value of the unknown ``delta / sigma`` (the supremum over a grid of 0.1 to 10). Looks at
fewer seed counts (rounds of 2, a crash mid-round) can only cross less often, so the error rates
hold for any looks fixed without seeing the deltas, and a verdict once reached stays reached as
seeds are added. The LLR at ``mu = delta`` against ``-B`` is the LLR at ``mu = 0`` against ``+B``
mirrored (``x -> delta - x``), so one calibration serves both thresholds. At the horizon an
uncrossed configuration is undecided.

Curtailment (``p_decide``). Seeds spent on a configuration the horizon will not decide buy
nothing: at a look without a verdict, the design stops the configuration, undecided, when the
predictive probability that the look at the horizon decides it is below ``CURTAIL`` (5%). That
probability takes the mean at the horizon as normal around today's mean (the unknown mean's
spread plus the seeds still to come, ``v (H - n) / (n H)``) and the variance at an optimistic
(lower, ``CURTAIL_VARIANCE_QUANTILE``) bound, so a spread overestimated at 3 seeds does not stop a
configuration that would decide. Stopping without a verdict can only remove verdicts: every
verdict a curtailed design gives, the uncurtailed one gives on the same seeds, so the error rates
above hold unchanged (``tests/test_sprt.py``); what it buys is seeds, most on all-or-nothing seeds,
where one seed that learned where its baseline did not makes the spread too large for 20 seeds
(``bench/settle_efficiency.py``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

from .sequential import MIN_SEEDS, prior_df_step

# delta / sigma values the thresholds are made safe for (log-spaced; the worst lies near 1-2, and
# the crossing chance falls off steeply on both sides: below 0.1 and above 10 it is negligible).
THETA_GRID = tuple(float(x) for x in np.geomspace(0.1, 10.0, 17))
_PATHS = 1 << 16
# The plug-in variance is raised to this upper confidence bound (a lower quantile of chi2_nu): at
# 2-4 degrees of freedom a sample variance is often far too small, and the likelihood ratio it
# gives would make the calibrated thresholds high for every configuration. The thresholds are
# calibrated either way; this only buys efficiency (bench/settle_efficiency.py; 0 turns it off).
VARIANCE_QUANTILE = 0.2
_PATH_SEED = 20261204
# Curtailment: stop an undecided configuration when the horizon look would decide it with a
# predictive probability below CURTAIL (0: never), the variance taken at this lower quantile
# (optimistic for deciding: a stop needs even a small spread to leave the horizon undecided).
CURTAIL = 0.05
CURTAIL_VARIANCE_QUANTILE = 0.2


def llr(n, sx, sxx, mu0, mu1, d0: float = 0.0, s0sq: float = math.nan):
    """Log likelihood ratio of ``mu1`` against ``mu0`` after ``n`` deltas with sum ``sx`` and sum
    of squares ``sxx`` (arrays broadcast), the variance integrated over the prior (d0, s0^2)."""
    return _llr_any(np.asarray(n, dtype=float), np.asarray(sx, dtype=float),
                    np.asarray(sxx, dtype=float), mu0, mu1, np.asarray(d0, dtype=float),
                    np.asarray(s0sq, dtype=float))


def _max_llr(horizon: int, prior_df: float) -> np.ndarray:
    """``[len(THETA_GRID), _PATHS]``: per path, the largest LLR (``theta`` against 0, sigma = 1)
    over looks at every seed count from MIN_SEEDS to the horizon, when the mean is 0. A prior of
    ``prior_df`` degrees of freedom is, in the hierarchical model it comes from, ``d0 s0^2 ~
    sigma^2 chi2(d0)`` independent of the seeds (infinite: s0^2 = sigma^2)."""
    rng = np.random.default_rng(_PATH_SEED)
    d0 = np.full(_PATHS, float(prior_df))
    if math.isinf(prior_df):
        s0sq = np.ones(_PATHS)
    elif prior_df > 0:
        s0sq = 2.0 * rng.standard_gamma(prior_df / 2.0, _PATHS) / prior_df
    else:
        s0sq = np.full(_PATHS, np.nan)
    out = np.full((len(THETA_GRID), _PATHS), -np.inf)
    sx, sxx = np.zeros(_PATHS), np.zeros(_PATHS)
    for n in range(1, horizon + 1):
        z = rng.standard_normal(_PATHS)
        sx += z
        sxx += z * z
        if n < MIN_SEEDS:
            continue
        v = _plugin_variance(float(n), sx, sxx, d0, s0sq)
        for i, th in enumerate(THETA_GRID):
            np.maximum(out[i], n * th * (sx / n - th / 2.0) / v, out=out[i])
    return out


@functools.lru_cache(maxsize=256)
def _thresholds(horizon: int, prior_df: float, levels: tuple[float, ...]) -> tuple[float, ...]:
    mx = _max_llr(int(horizon), prior_df)
    return tuple(float(max(np.quantile(mx, 1.0 - lv, axis=1, method="higher").max(), 0.0))
                 for lv in levels)


def threshold(horizon: int, level: float, prior_df: float = 0.0) -> float:
    """The LLR threshold whose chance of ever being reached at mean 0, looking after every seed
    from MIN_SEEDS to ``horizon``, is at most ``level`` whatever delta / sigma is (the prior's
    degrees of freedom rounded down to ``sequential.PRIOR_DF_GRID``)."""
    return _thresholds(int(horizon), prior_df_step(prior_df), (float(level),))[0]


def thresholds(horizon: int, a_effect: float, beta: float, prior_df: float = 0.0) -> tuple[float, float]:
    """(A, B): cross ``+A`` to claim an effect, ``-B`` to rule one out (one calibration)."""
    a, b = _thresholds(int(horizon), prior_df_step(prior_df), (float(a_effect), float(beta)))
    return a, b


CODES = {"helps": 0, "hurts": 1, "no effect": 2, "undecided": 3}


def replay(looks, sx, sxx, delta: float, A: float, B: float, d0=0.0, s0sq=math.nan,
           horizon: int | None = None, curtail: float = 0.0) -> dict:
    """The design over looks (last axis; ``looks`` the seed counts, ``sx`` / ``sxx`` the oriented
    deltas' running sums there, ``[..., K]``; ``d0`` / ``s0sq`` broadcast against ``[...]``).

    A side whose LLR has once fallen to ``-B`` is closed (the seeds favoured no effect over an
    effect that way) and stays closed: "helps" needs the "+delta" side still open when it crosses
    ``+A``; "no effect" needs both sides closed, at the same look or not. With ``curtail`` > 0 (and
    the ``horizon``), an undecided look before the horizon whose ``p_decide`` is below ``curtail``
    stops the configuration there, undecided. Returns ``code`` (``CODES``), ``k`` (index of the
    deciding or stopping look, the last when it ran on), ``ge_delta``, ``stopped`` (a verdict or a
    curtailment ended it), ``curtailed`` and, with the horizon, ``p_decide_last`` (``p_decide`` at
    the last look)."""
    looks = np.asarray(looks, dtype=float)
    sx, sxx = np.asarray(sx, dtype=float), np.asarray(sxx, dtype=float)
    d0 = np.asarray(d0, dtype=float)[..., None]
    s0sq = np.asarray(s0sq, dtype=float)[..., None]
    up = _llr_any(looks, sx, sxx, 0.0, delta, d0, s0sq)
    dn = _llr_any(looks, sx, sxx, 0.0, -delta, d0, s0sq)
    closed_up = np.logical_or.accumulate(up <= -B, axis=-1)
    closed_dn = np.logical_or.accumulate(dn <= -B, axis=-1)
    pad = np.zeros(closed_up.shape[:-1] + (1,), bool)
    open_up = ~np.concatenate([pad, closed_up[..., :-1]], axis=-1)
    open_dn = ~np.concatenate([pad, closed_dn[..., :-1]], axis=-1)
    helps = (up >= A) & open_up
    hurts = (dn >= A) & open_dn & ~helps
    equiv = closed_up & closed_dn & ~helps & ~hurts
    any_ = helps | hurts | equiv
    stop = any_
    pd = None
    if horizon is not None:
        pd = p_decide(looks, sx, sxx, delta, A, B, d0, s0sq, closed_up, closed_dn, horizon)
        if curtail > 0:
            stop = any_ | ((pd < curtail) & (looks < horizon))
    stopped = stop.any(axis=-1)
    k = np.where(stopped, np.argmax(stop, axis=-1), looks.size - 1)
    pick = lambda a: np.take_along_axis(a, k[..., None], axis=-1)[..., 0]  # noqa: E731
    decided = stopped & pick(any_)
    code = np.full(k.shape, CODES["undecided"])
    code = np.where(decided & pick(equiv), CODES["no effect"], code)
    code = np.where(decided & pick(hurts), CODES["hurts"], code)
    code = np.where(decided & pick(helps), CODES["helps"], code)
    ge_up = _llr_any(looks, sx, sxx, delta, 2 * delta, d0, s0sq) >= A
    ge_dn = _llr_any(looks, sx, sxx, -delta, -2 * delta, d0, s0sq) >= A
    ge = np.where(code == CODES["helps"], pick(ge_up), np.where(code == CODES["hurts"], pick(ge_dn), False))
    return {"code": code, "k": k, "ge_delta": ge, "llr_up": pick(up), "llr_dn": pick(dn),
            "stopped": stopped, "curtailed": stopped & ~decided,
            "p_decide_last": None if pd is None else pd[..., -1]}


def p_decide(n, sx, sxx, delta: float, A: float, B: float, d0, s0sq, closed_up, closed_dn,
             horizon: int) -> np.ndarray:
    """Predictive probability that the look at ``horizon`` gives a verdict, after ``n`` seeds with
    running sums ``sx`` / ``sxx`` (arrays broadcast; ``closed_up`` / ``closed_dn``: the sides the
    looks so far closed). The variance is the moderated one at its lower
    ``CURTAIL_VARIANCE_QUANTILE`` bound; the mean at the horizon is normal around today's with
    variance ``v (H - n) / (n H)``; at the horizon "helps" needs ``LLR(+delta) >= A``, "hurts"
    ``LLR(-delta) >= A``, "no effect" both sides at ``<= -B`` (a side closed already stays so)."""
    n = np.asarray(n, dtype=float)
    H = float(horizon)
    sx, sxx = np.asarray(sx, dtype=float), np.asarray(sxx, dtype=float)
    d0 = np.asarray(d0, dtype=float)
    s0sq = np.asarray(s0sq, dtype=float)
    m = sx / n
    own = np.maximum(sxx - sx * sx / n, 0.0)
    inf = np.isinf(d0)
    use = (d0 > 0) & ~inf
    with np.errstate(invalid="ignore", divide="ignore"):
        nu = np.where(inf, np.inf, np.where(use, d0, 0.0) + n - 1)
        v = (np.where(use, d0 * np.nan_to_num(s0sq), 0.0) + own) / np.where(inf, 1.0, nu)
        v = np.where(inf, s0sq, v)
        low = np.where(inf, 1.0, special.chdtri(np.where(inf, 1.0, nu), 1.0 - CURTAIL_VARIANCE_QUANTILE)
                       / np.where(inf, 1.0, nu))
        v = np.maximum(v * low, 1e-300)
        # the plug-in variance the horizon look would use for this variance (analysis: its nu)
        nu_h = np.where(inf, np.inf, np.where(use, d0, 0.0) + H - 1)
        v_h = v * (np.where(inf, 1.0, nu_h / special.chdtri(np.where(inf, 1.0, nu_h), 1.0 - VARIANCE_QUANTILE))
                   if VARIANCE_QUANTILE else 1.0)
        sd = np.sqrt(v * np.maximum(H - n, 0.0) / (n * H))
        sd = np.maximum(sd, 1e-300)
        cross = delta / 2.0 + A * v_h / (H * delta)       # |mean at H| beyond this: an effect
        close = delta / 2.0 - B * v_h / (H * delta)       # mean at H below this closes "+delta"
        cdf = special.ndtr
        p_help = np.where(closed_up, 0.0, cdf((m - cross) / sd))
        p_hurt = np.where(closed_dn, 0.0, cdf((-cross - m) / sd))
        hi = np.where(closed_up, np.inf, close)
        lo = np.where(closed_dn, -np.inf, -close)
        p_none = np.where(hi > lo, np.clip(cdf((hi - m) / sd) - cdf((lo - m) / sd), 0.0, 1.0), 0.0)
    return np.clip(p_help + p_hurt + p_none, 0.0, 1.0)


def _llr_any(n, sx, sxx, mu0, mu1, d0, s0sq):
    """``llr`` with array-valued priors (rows of a simulation, each its own d0 / s0^2)."""
    return n * (mu1 - mu0) * (sx / n - (mu0 + mu1) / 2.0) / _plugin_variance(n, sx, sxx, d0, s0sq)


def _plugin_variance(n, sx, sxx, d0, s0sq):
    """The sample variance around the mean, moderated by the prior (d0 s0^2 + (n-1) s^2) /
    (d0 + n - 1); s0^2 itself when d0 is infinite; on nu = n - 1 + d0 degrees of freedom, scaled
    up to its upper ``VARIANCE_QUANTILE`` confidence bound, nu / chi2_nu(q)."""
    own = np.maximum(sxx - sx * sx / n, 0.0)
    d0 = np.asarray(d0, dtype=float)
    s0sq = np.asarray(s0sq, dtype=float)
    inf = np.isinf(d0)
    use = (d0 > 0) & ~inf
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (np.where(use, d0 * np.nan_to_num(s0sq), 0.0) + own) / (np.where(use, d0, 0.0) + n - 1)
        v = np.where(inf, s0sq, v)
        if VARIANCE_QUANTILE:
            nu = np.where(inf, np.inf, np.where(use, d0, 0.0) + n - 1)
            v = v * np.where(inf, 1.0, nu / special.chdtri(nu, 1.0 - VARIANCE_QUANTILE))
    return np.maximum(v, 1e-300)
