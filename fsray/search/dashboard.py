"""The stability question in the Optuna study, so ``optuna-dashboard`` shows it.

Each finished trial's user attrs carry what the search knows of its configuration when the trial
ends: the configuration's label and hash, the mean paired delta, its spread across seeds, the
interval (and its level), the seeds and their signs, and the verdict (``analysis.verdict``: helps /
hurts / no effect / undecided (+k) / no-op, Bonferroni over the search's trials, as the report
judges a selection). The objective Optuna optimises is unchanged.

``StabilityOptunaSearch`` is Ray Tune's ``OptunaSearch`` with one addition: before it tells Optuna
a trial's value it sets those user attrs on the trial (Optuna lets a trial's attrs change only
while it runs). What the attrs are computed from -- the results store -- lives in the driver; the
searcher names it by a key (``attrs_source``) so that it pickles with Tune's experiment state and
finds the live source again after ``--resume``.
"""

from __future__ import annotations

import logging
from typing import Callable

from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

# key -> params -> user attrs; set by the driver for the searcher of this process (register_source)
_SOURCES: dict[str, Callable[[dict], dict]] = {}


def register_source(key: str, source: Callable[[dict], dict]) -> None:
    """Where the searcher named ``key`` takes each finished trial's user attrs from."""
    _SOURCES[key] = source


class StabilityOptunaSearch(OptunaSearch):
    def __init__(self, *args, attrs_source: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._attrs_source = attrs_source

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        ot_trial = self._ot_trials.get(trial_id)
        source = _SOURCES.get(self._attrs_source)
        if ot_trial is not None and source is not None and trial_id not in self._completed_trials:
            try:
                attrs = source(dict(ot_trial.params))
            except Exception as exc:  # noqa: BLE001 - the dashboard's extra, never the search's end
                logger.warning("fsray: no stability attrs for trial %s: %s", trial_id, exc)
                attrs = {}
            for key, value in attrs.items():
                ot_trial.set_user_attr(key, value)
        super().on_trial_complete(trial_id, result=result, error=error)


def stability_attrs(space, records: list[dict], params: dict) -> dict:
    """The user attrs of the configuration ``params`` (the searched knobs) from the search's
    records: label, hash, mean delta, spread, interval, seeds, signs, status and verdict."""
    from analysis.verdict import DEFAULT_HORIZON, Design, verdict
    from fsray.fsconfig import config_hash
    from fsray.search.objective import config_stats

    cfg = space.fs_config(params)
    chash = config_hash(cfg)
    recs = sorted((r for r in records
                   if r["config_hash"] == chash and r.get("stage", "selection") == "selection"),
                  key=lambda r: r["seed"])
    stats = config_stats(recs, space.objective)
    failed = [r for r in recs if r["status"] == "failed"]
    noop = bool(stats.get("noop"))
    obj = space.objective
    attrs = {
        "config": cfg.label(), "config_hash": chash,
        "mean_delta": stats["mean"], "spread": stats["std"],
        # a provable no-op's interval is exactly [0, 0] (config_stats gives it no objective)
        "interval": [0.0, 0.0] if noop else [stats["lo"], stats["hi"]], "interval_level": obj.level,
        "n_seeds": stats["n"], "seeds": [int(r["seed"]) for r in recs if r["status"] != "failed"],
        "signs": "/".join(map(str, stats["signs"])),
        "status": "failed" if failed else "noop" if noop else
                  "complete" if len(recs) >= len(space.seeds.selection()) else "raced",
    }
    if failed:
        attrs["failure"] = str(failed[0].get("failure") or "")[:200]
    if stats["n"] or noop:
        # searches maximise an accuracy (acc / seq): higher is better
        design = Design(delta=obj.min_effect, alpha=round(1.0 - obj.level, 12), horizon=DEFAULT_HORIZON,
                        selected_from=max(int(space.tuner.trials), 1))
        v = verdict(stats["deltas"], design, noop=noop)
        attrs["verdict"] = v.label(obj.min_effect)
        attrs["verdict_basis"] = v.basis
    return attrs
