"""Operating characteristics of the verdict designs, by simulation (vectorised over replications).

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
from scipy import stats as sps

from . import sequential, shrinkage, sprt
from .verdict import Design

CODES = sprt.CODES


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


def _decide(D: np.ndarray, looks: tuple[int, ...], design: Design, d0: float = 0.0, s0sq=np.nan):
    """Per look: (helps, hurts, no effect, ge_delta) boolean arrays ``[R, K]`` (the spending
    design; a prior of ``d0`` degrees of freedom, one for all rows, around ``s0sq`` per row)."""
    n = np.asarray(looks)
    cs = np.cumsum(D, axis=1)[:, n - 1]
    cs2 = np.cumsum(D * D, axis=1)[:, n - 1]
    m = cs / n
    var = np.maximum(cs2 - n * m * m, 0.0) / (n - 1)
    if d0 > 0:
        var, _ = shrinkage.moderate_rows(var, n - 1, d0, np.asarray(s0sq, dtype=float)[..., None], np.inf)
    se = np.sqrt(var / n)
    c_eff = np.asarray(sequential.t_boundaries(looks, design.horizon, design.a_effect, design.rho, d0))
    c_eq = np.asarray(sequential.t_boundaries(looks, design.horizon, design.a_equiv, design.rho, d0))
    with np.errstate(invalid="ignore"):
        lo, hi = m - c_eff * se, m + c_eff * se
        helps, hurts = lo > 0, hi < 0
        equiv = (m - c_eq * se > -design.delta) & (m + c_eq * se < design.delta)
        ge = np.where(helps, lo > design.delta, hi < -design.delta)
    return helps, hurts, equiv & ~helps & ~hurts, ge


def sequential_verdicts(D: np.ndarray, design: Design, looks: tuple[int, ...], d0: float = 0.0,
                        s0sq=np.nan) -> dict:
    """Verdict code (``CODES``), seeds used and ge_delta per replication (row of ``D``), by the
    design's rule (``design.kind``), with a variance prior of ``d0`` degrees of freedom (already
    on the calibration grid) around ``s0sq`` (a number or one per row)."""
    if not design.higher_is_better:
        D = -D
    if design.kind == "sprt":
        return _sprt_verdicts(D, design, looks, d0, s0sq)
    r = _first_crossing(*_decide(D, looks, design, d0, s0sq), looks)
    return {"code": r["code"], "n": r["n"], "ge_delta": r["ge_delta"]}


def _first_crossing(helps, hurts, equiv, ge, looks) -> dict:
    any_ = helps | hurts | equiv
    decided = any_.any(axis=1)
    k = np.where(decided, np.argmax(any_, axis=1), len(looks) - 1)
    rows = np.arange(helps.shape[0])
    code = np.full(helps.shape[0], CODES["undecided"])
    code[decided & equiv[rows, k]] = CODES["no effect"]
    code[decided & hurts[rows, k]] = CODES["hurts"]
    code[decided & helps[rows, k]] = CODES["helps"]
    return {"code": code, "n": np.asarray(looks)[k], "ge_delta": decided & ge[rows, k]}


def _sprt_verdicts(D: np.ndarray, design: Design, looks, d0, s0sq) -> dict:
    lk = np.asarray([x for x in looks if x <= design.horizon])
    A, B = sprt.thresholds(design.horizon, design.a_effect, design.beta, d0)
    sx = np.cumsum(D, axis=1)[:, lk - 1]
    sxx = np.cumsum(D * D, axis=1)[:, lk - 1]
    r = sprt.replay(lk, sx, sxx, design.delta, A, B, d0, s0sq, horizon=design.horizon,
                    curtail=design.curtail)
    return {"code": r["code"], "n": lk[r["k"]], "ge_delta": r["ge_delta"], "curtailed": r["curtailed"]}


def family_verdicts(D: np.ndarray, design: Design, looks: tuple[int, ...], borrow: bool = True) -> dict:
    """Families at once: ``D`` is ``[R, G, H]`` (R families of G configurations); each
    configuration's prior is its family's (``shrinkage.family_priors`` rule, leave-one-out with the
    out-of-line guard) fitted at every look from the family's seeds so far. Returns ``code`` /
    ``n`` / ``ge_delta`` ``[R, G]``."""
    if not design.higher_is_better:
        D = -D
    R, G, H = D.shape
    looks = tuple(x for x in looks if x <= design.horizon)
    lk = np.asarray(looks)
    sx = np.cumsum(D, axis=2)[:, :, lk - 1]
    sxx = np.cumsum(D * D, axis=2)[:, :, lk - 1]
    if not borrow or G < shrinkage.MIN_CONFIGS + 1:
        flat = sequential_verdicts(D.reshape(R * G, H), Design(**{**design.__dict__, "higher_is_better": True}), looks)
        return {k: v.reshape(R, G) for k, v in flat.items()}
    # Per look, per configuration: its prior from the family's variances at that look.
    d0 = np.zeros((R, G, lk.size))
    s0 = np.full((R, G, lk.size), np.nan)
    for j, n in enumerate(lk):
        s2 = np.maximum((sxx[:, :, j] - sx[:, :, j] ** 2 / n) / (n - 1), 1e-300)
        a, b, tot = shrinkage.family_priors_rows(s2, n - 1)
        cap = np.minimum(a, np.maximum(tot[:, None] - (n - 1), 0.0))
        d0[:, :, j] = np.vectorize(sequential.prior_df_step)(cap)
        s0[:, :, j] = b
    out = {"code": np.full((R, G), CODES["undecided"]), "n": np.full((R, G), lk[-1]),
           "ge_delta": np.zeros((R, G), bool)}
    done = np.zeros((R, G), bool)
    # A look's verdict uses the prior of that look; a configuration stops at its first verdict.
    for j, n in enumerate(lk):
        for step in np.unique(d0[:, :, j]):
            sel = (d0[:, :, j] == step) & ~done
            if not sel.any():
                continue
            r = _look_verdicts(design, looks[: j + 1], sx[sel][:, : j + 1], sxx[sel][:, : j + 1],
                               float(step), s0[:, :, j][sel], D[sel][:, :n])
            hit = r["stopped"]   # a verdict, or (sprt) curtailed: no more seeds
            idx = tuple(np.asarray(np.nonzero(sel))[:, hit])
            out["code"][idx], out["n"][idx], out["ge_delta"][idx] = r["code"][hit], n, r["ge_delta"][hit]
            done[idx] = True
    return out


def _look_verdicts(design: Design, looks, sx, sxx, d0, s0sq, D) -> dict:
    """The verdict a plan made at the last of ``looks`` gives: every look replayed with the prior
    of now (as ``verdict.verdict`` does)."""
    if design.kind == "sprt":
        A, B = sprt.thresholds(design.horizon, design.a_effect, design.beta, d0)
        r = sprt.replay(np.asarray(looks), sx, sxx, design.delta, A, B, d0, s0sq,
                        horizon=design.horizon, curtail=design.curtail)
        return {"code": r["code"], "ge_delta": r["ge_delta"], "stopped": r["stopped"]}
    r = _first_crossing(*_decide(D, tuple(looks), design, d0, s0sq), looks)
    return {**r, "stopped": r["code"] != CODES["undecided"]}


def fixed_family_verdicts(D: np.ndarray, design: Design, n: int) -> dict:
    """The single-look design at ``n`` seeds, the whole alpha at once, on the moderated t of each
    configuration's family prior at ``n`` (``D`` ``[R, G, H]``). Returns ``code`` ``[R, G]``."""
    if not design.higher_is_better:
        D = -D
    R, G, _ = D.shape
    X = D[:, :, :n]
    m = X.mean(axis=2)
    s2 = np.maximum(X.var(axis=2, ddof=1), 1e-300)
    d0, s0sq, tot = shrinkage.family_priors_rows(s2, n - 1)
    post, df = shrinkage.moderate_rows(s2, n - 1, d0, s0sq, tot[:, None])
    se = np.sqrt(post / n)
    c_eff, c_eq = sps.t.isf(design.a_effect, df), sps.t.isf(design.a_equiv, df)
    helps, hurts = m - c_eff * se > 0, m + c_eff * se < 0
    equiv = (m - c_eq * se > -design.delta) & (m + c_eq * se < design.delta) & ~helps & ~hurts
    code = np.full((R, G), CODES["undecided"])
    code[equiv], code[hurts], code[helps] = CODES["no effect"], CODES["hurts"], CODES["helps"]
    return {"code": code}


def fixed_verdicts(D: np.ndarray, design: Design, n: int) -> dict:
    """The single-look design at ``n`` seeds (horizon ``n``: the whole alpha at once)."""
    fixed = Design(delta=design.delta, alpha=design.alpha, horizon=n, rho=design.rho,
                   higher_is_better=design.higher_is_better, selected_from=design.selected_from,
                   kind="spending")
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
