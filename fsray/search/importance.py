"""Which knob matters: Optuna's PED-ANOVA importance of each searched knob, for the mean delta and
for its across-seed spread, computed from the finished configurations of a search.

Built on an in-memory Optuna study filled from the results store (one finished trial per
configuration, its value the statistic), so it covers exactly the table the summary prints and
works the same after a resume. PED-ANOVA needs no scikit-learn (fANOVA would).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna

from analysis.summary import IMPORTANCE_TARGET_QUANTILE
from fsray.search.space import SearchSpace, optuna_distributions


def _importance(space: SearchSpace, rows: list[dict], stat: str) -> dict[str, float]:
    dists = optuna_distributions(space)
    # A knob with a single possible value carries no information (and PED-ANOVA rejects it).
    dists = {k: d for k, d in dists.items()
             if not (isinstance(d, optuna.distributions.CategoricalDistribution) and len(d.choices) < 2)
             and not (hasattr(d, "low") and d.low == d.high)}
    usable = [r for r in rows if r.get(stat) is not None and all(k in r["config"] for k in dists)]
    if len(usable) < 4 or not dists:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if stat == "mean" else "minimize")
    for r in usable:
        study.add_trial(optuna.trial.create_trial(
            params={k: r["config"][k] for k in dists}, distributions=dists, value=float(r[stat])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            imp = optuna.importance.get_param_importances(
                study, normalize=True, evaluator=optuna.importance.PedAnovaImportanceEvaluator(
                    target_quantile=IMPORTANCE_TARGET_QUANTILE))
        except (ValueError, RuntimeError):
            return {}
    return {k: float(v) for k, v in imp.items()}


def knob_importance(space: SearchSpace, rows: list[dict]) -> dict:
    """{"mean_delta": {knob: v}, "spread": {knob: v}, "n_configs": configurations it was computed
    from}; empty dicts when too few configurations. The report prints the numbers only from
    ``analysis.summary.IMPORTANCE_MIN_CONFIGS`` configurations on (fewer: noise, and it says so)."""
    return {"mean_delta": _importance(space, rows, "mean"), "spread": _importance(space, rows, "std"),
            "n_configs": len(rows)}


def write_importance(path: str | Path, importance: dict) -> None:
    Path(path).write_text(json.dumps(importance, indent=2, sort_keys=True) + "\n")
