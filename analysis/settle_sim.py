"""Operating characteristics of the verdict design, by simulation (vectorised over replications).

One job: replay the settling procedure of ``analysis.verdict`` on many simulated configurations at
once, so its error rates, power and seeds used can be measured (``tests/test_verdict_sim.py``,
``bench/settle_efficiency.py``). ``sequential_verdicts`` is the same rule as ``verdict.verdict``
(first look whose boundary is crossed decides), written over a ``[R, H]`` array of deltas;
``fixed_verdicts`` is the single-look design at ``n`` seeds with the whole alpha.

Paired-delta models: ``normal_deltas`` (seed noise like the researchers', sd 0.01-0.08) and
``bimodal_deltas`` (all-or-nothing seeds: a run learns, metric ~0.9, or stays at chance; docs/DESIGN.md §6).
"""

from __future__ import annotations

import math

import numpy as np

from . import sequential
from .verdict import Design

CODES = {"helps": 0, "hurts": 1, "no effect": 2, "undecided": 3}


def schedule(horizon: int, round_size: int, first: int = sequential.MIN_SEEDS) -> tuple[int, ...]:
    """Looks of a settling loop: a first look at ``first`` seeds, then one per round, the last at
    the horizon."""
    looks = list(range(first, horizon + 1, round_size))
    if looks[-1] != horizon:
        looks.append(horizon)
    return tuple(looks)


def normal_deltas(rng: np.random.Generator, reps: int, n: int, mean: float, sd: float) -> np.ndarray:
    return rng.normal(mean, sd, (reps, n))


def bimodal_deltas(rng: np.random.Generator, reps: int, n: int, mean: float, p_learn: float = 0.6,
                   same_outcome: float = 0.9, gap: float = 0.69, quality_sd: float = 0.02) -> np.ndarray:
    """All-or-nothing seeds with FS changing nothing but the quality of runs that learned, scaled
    so that the true mean delta is ``mean``: each run learns with probability ``p_learn``; with
    probability ``same_outcome`` the FS run's outcome copies the baseline's (seed-level
    correlation), otherwise it is drawn afresh; a pair where one run learned differs by +-``gap``."""
    base = rng.random((reps, n)) < p_learn
    fs = np.where(rng.random((reps, n)) < same_outcome, base, rng.random((reps, n)) < p_learn)
    shift = mean / p_learn  # E[fs - base] = shift * P(fs learned); the discordant pairs cancel
    d = np.where(fs & base, shift + rng.normal(0.0, quality_sd, (reps, n)), 0.0)
    d = np.where(fs & ~base, gap + shift + rng.normal(0.0, quality_sd, (reps, n)), d)
    d = np.where(~fs & base, -gap + rng.normal(0.0, quality_sd, (reps, n)), d)
    d = np.where(~fs & ~base, rng.normal(0.0, quality_sd / 2, (reps, n)), d)
    return d


def _decide(D: np.ndarray, looks: tuple[int, ...], design: Design):
    """Per look: (helps, hurts, no effect, ge_delta) boolean arrays ``[R, K]``."""
    n = np.asarray(looks)
    cs = np.cumsum(D, axis=1)[:, n - 1]
    cs2 = np.cumsum(D * D, axis=1)[:, n - 1]
    m = cs / n
    var = np.maximum(cs2 - n * m * m, 0.0) / (n - 1)
    se = np.sqrt(var / n)
    c_eff = np.asarray(sequential.t_boundaries(looks, design.horizon, design.a_effect, design.rho))
    c_eq = np.asarray(sequential.t_boundaries(looks, design.horizon, design.a_equiv, design.rho))
    with np.errstate(invalid="ignore"):
        lo, hi = m - c_eff * se, m + c_eff * se
        helps, hurts = lo > 0, hi < 0
        equiv = (m - c_eq * se > -design.delta) & (m + c_eq * se < design.delta)
        ge = np.where(helps, lo > design.delta, hi < -design.delta)
    return helps, hurts, equiv & ~helps & ~hurts, ge


def sequential_verdicts(D: np.ndarray, design: Design, looks: tuple[int, ...]) -> dict:
    """Verdict code (``CODES``), seeds used and ge_delta per replication (row of ``D``)."""
    if not design.higher_is_better:
        D = -D
    helps, hurts, equiv, ge = _decide(D, looks, design)
    any_ = helps | hurts | equiv
    decided = any_.any(axis=1)
    k = np.where(decided, np.argmax(any_, axis=1), len(looks) - 1)
    rows = np.arange(D.shape[0])
    code = np.full(D.shape[0], CODES["undecided"])
    code[decided & helps[rows, k]] = CODES["helps"]
    code[decided & hurts[rows, k]] = CODES["hurts"]
    code[decided & equiv[rows, k]] = CODES["no effect"]
    return {"code": code, "n": np.asarray(looks)[k], "ge_delta": decided & ge[rows, k]}


def fixed_verdicts(D: np.ndarray, design: Design, n: int) -> dict:
    """The single-look design at ``n`` seeds (horizon ``n``: the whole alpha at once)."""
    fixed = Design(delta=design.delta, alpha=design.alpha, horizon=n, rho=design.rho,
                   higher_is_better=design.higher_is_better, selected_from=design.selected_from)
    return sequential_verdicts(D[:, :n], fixed, (n,))


def correct(code: np.ndarray, mu: float, delta: float) -> np.ndarray:
    """Whether each verdict agrees with the true mean ``mu``: "helps" when mu > 0, "hurts" when
    mu < 0, "no effect" when |mu| < delta (at mu = delta only "helps" is right)."""
    ok = np.zeros(np.shape(code), bool)
    if mu > 0:
        ok |= code == CODES["helps"]
    if mu < 0:
        ok |= code == CODES["hurts"]
    if abs(mu) < delta:
        ok |= code == CODES["no effect"]
    return ok


def rates(result: dict) -> dict:
    code = result["code"]
    r = code.size
    out = {name: float((code == c).mean()) for name, c in CODES.items()}
    out["mean_seeds"] = float(result["n"].mean())
    out["mc_se"] = {name: math.sqrt(max(p * (1 - p), 1e-12) / r) for name, p in out.items()
                    if name in CODES}
    return out
