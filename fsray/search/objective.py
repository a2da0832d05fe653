"""From a configuration's paired records to its statistics, objective and racing decision.

All statistics come from ``analysis.stats`` (the same numbers ``fsray report`` prints); this module
only decides which of them the search optimises.
"""

from __future__ import annotations

import math

import numpy as np

from analysis import bimodal, schema
from fsray.search.space import ObjectiveSection, RacingSection


def paired_delta(rec: dict, metric_key: str) -> float | None:
    """fs - baseline of one record; 0 for a provable no-op; None for a failed one."""
    if rec["status"] == "noop":
        return 0.0
    if rec["status"] != "ok":
        return None
    return schema.paired_delta(rec, metric_key)


def _learned(run: dict | None, rec: dict, metric_key: str, margin: float) -> bool | None:
    """What the run recorded, else the one rule (``analysis.bimodal.run_learned``) on its metric."""
    if run is None:
        return None
    if run.get("learned") is not None:
        return bool(run["learned"])
    return bimodal.run_learned(run.get(metric_key), (rec.get("chance") or {}).get(metric_key), margin)


def config_stats(records: list[dict], objective: ObjectiveSection) -> dict:
    """n, mean, std, interval, signs and the objective value(s) of one configuration's records."""
    from analysis.stats import describe, mean_interval

    key = objective.metric_key
    deltas = [d for d in (paired_delta(r, key) for r in records) if d is not None]
    d = np.asarray(deltas, dtype=float)
    n = int(d.size)
    # n, mean, std and signs as the report's table computes them (analysis.stats)
    desc = describe(d)
    out = {"n": n, "mean": desc["mean"], "std": desc["std"], "lo": None, "hi": None,
           "signs": desc["signs"], "objective": None, "deltas": deltas}
    if records and all(r["status"] == "noop" for r in records):
        # Provably identical to no_fs: free A/A evidence, recorded, but never an objective value
        # (its interval [0, 0] would beat any noisy real configuration's lower bound).
        out["noop"] = True
        return out
    if n < 2:
        return out
    lo, hi = mean_interval(d, level=objective.level, method=objective.interval)
    out["lo"], out["hi"] = lo, hi
    if objective.kind == "lower_bound":
        out["objective"] = lo
    elif objective.kind == "mean_minus_k_std":
        out["objective"] = out["mean"] - objective.k * out["std"]
    elif objective.kind == "multi":
        out["objective"] = out["mean"]  # the front is (mean, spread); "mean" ranks the table
    elif objective.kind == "breakthrough_lower_bound":
        out["objective"] = _breakthrough_lower_bound(records, objective)
    return out


def _breakthrough_lower_bound(records: list[dict], objective: ObjectiveSection) -> float | None:
    """Lower bound of the change in breakthrough rate (share of seeds that learn): the paired 2x2
    table of learned / not learned per seed (``analysis.bimodal``)."""
    key = objective.metric_key
    both = only_fs = only_base = neither = 0
    for rec in records:
        if rec["status"] == "noop":
            neither += 1  # no change by construction; counts as a concordant pair
            continue
        if rec["status"] != "ok":
            continue
        b = _learned(rec["baseline"], rec, key, objective.learned_margin)
        f = _learned(rec["fs"], rec, key, objective.learned_margin)
        if b is None or f is None:
            return None
        both += b and f
        only_fs += f and not b
        only_base += b and not f
        neither += not b and not f
    lo, _ = bimodal.rate_change_interval(both, only_fs, only_base, neither, level=objective.level)
    return float(lo)


# What Optuna is told about a provable no-op: the worst value a paired accuracy delta can take, so
# the sampler learns that region is useless, never that it is the best.
NOOP_OBJECTIVE = -1.0


def tune_metrics(stats: dict, objective: ObjectiveSection) -> dict | None:
    """What a trial reports to Tune; None until there are 2 deltas (no interval before)."""
    if stats.get("noop"):
        return {"objective": NOOP_OBJECTIVE, "mean_delta": NOOP_OBJECTIVE, "spread": 1.0,
                "lower": 0.0, "upper": 0.0, "n_seeds": stats["n"], "noop": True}
    if stats["n"] < 2 or stats["objective"] is None or not math.isfinite(stats["objective"]):
        return None
    return {
        "objective": stats["objective"],
        "mean_delta": stats["mean"],
        "spread": stats["std"],
        "lower": stats["lo"],
        "upper": stats["hi"],
        "n_seeds": stats["n"],
    }


def incumbent_bound(groups: dict[str, list[dict]], n_full: int, objective: ObjectiveSection) -> float | None:
    """Best lower bound of the mean delta among configurations evaluated on every seed."""
    from analysis.stats import mean_interval

    key = objective.metric_key
    best = None
    for records in groups.values():
        if any(r["status"] == "failed" for r in records) or all(r["status"] == "noop" for r in records):
            continue   # a failed config, or a no-op one, is never the incumbent
        d = [paired_delta(r, key) for r in records]
        if len(d) < n_full or len(d) < 2:
            continue
        lo, _ = mean_interval(np.asarray(d), level=objective.level, method=objective.interval)
        best = lo if best is None else max(best, lo)
    return best


def family_prior_of(records: list[dict], config_hash: str, stage: str, objective: ObjectiveSection):
    """The borrowed-variance prior (``analysis.shrinkage.family_priors``) of one configuration from
    the paired deltas of the other configurations of its stage (one search: one task, model,
    budget and metric); ``Prior.none()`` while the family is too small to fit one."""
    from analysis.shrinkage import Prior, family_priors

    groups: dict[str, list[float]] = {}
    for rec in records:
        if rec.get("stage", "selection") != stage or rec.get("status") != "ok":
            continue
        d = paired_delta(rec, objective.metric_key)
        if d is not None:
            groups.setdefault(rec["config_hash"], []).append(d)
    groups.setdefault(config_hash, [])
    return family_priors(groups).get(config_hash, Prior.none())


def race_decision(deltas: list[float], n_planned: int, incumbent: float | None,
                  racing: RacingSection, prior=None) -> str | None:
    """Why to stop a configuration now, or None to go on.

    Racing looks at a configuration after every seed, so it uses the same group-sequential bounds
    as the verdicts (``analysis.sequential``: alpha spending over the looks actually taken, horizon
    = the planned seeds): stop when even the candidate's repeated upper bound (one-sided error
    ``(1 - racing.level) / 2`` over all looks) lies below the incumbent's lower bound. A look needs
    ``MIN_SEEDS`` seeds. The bound is a t bound whatever ``objective.interval`` says (the
    sequential bounds are t bounds). ``prior``: the family's variance prior (``family_prior_of``):
    the bound is then a moderated t bound on ``n - 1`` plus the prior's degrees of freedom."""
    from analysis.sequential import MIN_SEEDS, t_boundaries
    from analysis.verdict import moderated_moments, prior_for

    n = len(deltas)
    first = max(MIN_SEEDS, racing.min_seeds)
    if not racing.enabled or incumbent is None or n < first or n >= n_planned:
        return None
    d0, s0sq = prior_for(prior, n)
    c = t_boundaries(tuple(range(first, n + 1)), int(n_planned), (1.0 - racing.level) / 2.0,
                     prior_df=d0)[-1]
    m, var, _ = moderated_moments(np.asarray(deltas, dtype=float), n, d0, s0sq)
    se = math.sqrt(var / n)
    hi = m + c * se if math.isfinite(c) else math.inf
    if hi < incumbent:
        return (f"raced out after {n}/{n_planned} seeds: repeated upper bound {hi:+.4f} < "
                f"incumbent {incumbent:+.4f}")
    return None
