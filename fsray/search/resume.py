"""Resuming a search from its records: ``results.jsonl`` is the truth, not Tune's or Optuna's state.

A search killed mid-selection (Ctrl-C, SIGTERM, SIGKILL, a full disk) leaves records for what
finished, and Tune and Optuna state that may name trials as RUNNING, ERRORED or not at all, or an
``optuna.db`` that is damaged or gone. ``--resume`` therefore plans from the records alone:

* each configuration with selection records is *finished* (every seed recorded, a recorded failure,
  a provable no-op, or stopped by racing against the incumbent, decided as the trial itself decides)
  or *unfinished* (seeds still missing);
* the Optuna study is rebuilt from them with Optuna's own API: a new study under the search's name
  (the old one deleted, or a damaged SQLite file moved to ``optuna.db.damaged``), one
  ``optuna.trial.create_trial`` per finished configuration (its objective value, or FAIL), and each
  unfinished configuration enqueued (``study.enqueue_trial``), so that the first new trials run
  exactly those and only their missing seeds train (the records of the others are reused);
* the number of new trials is the unfinished ones plus whatever the trial budget has left, so a
  resumed search ends with exactly ``search.trials`` configurations, however often it was killed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fsray.errors import UsageError
from fsray.search import objective as obj
from fsray.search.space import SearchSpace

STUDY_FILE = "optuna.db"


@dataclass
class ResumePlan:
    finished: list[dict] = field(default_factory=list)    # {"params", "values" | None, "state"}
    unfinished: list[dict] = field(default_factory=list)  # params of configurations with seeds missing
    new_trials: int = 0          # trials the resumed Tuner runs (unfinished first)
    configs: int = 0             # configurations the records hold

    @property
    def done(self) -> int:
        return len(self.finished)


def plan_resume(space: SearchSpace, records: list[dict]) -> ResumePlan:
    """What a resumed selection still has to run, from the selection records alone."""
    seeds = space.seeds.selection()
    n_full = len(seeds)
    groups: dict[str, list[dict]] = {}
    for rec in records:
        if rec.get("stage", "selection") == "selection" and rec["seed"] in seeds:
            groups.setdefault(rec["config_hash"], []).append(rec)
    incumbent = obj.incumbent_bound(groups, n_full, space.objective)
    plan = ResumePlan(configs=len(groups))
    for chash, recs in groups.items():
        params = {k: recs[0]["config"].get(k) for k in space.knobs}
        stats = obj.config_stats(recs, space.objective)
        if any(r["status"] == "failed" for r in recs):
            plan.finished.append({"params": params, "values": None, "state": "FAIL"})
            continue
        raced = None
        if len(recs) < n_full and space.racing.enabled and not stats.get("noop"):
            # the prior the live look judged it with (evaluate.ConfigEvaluation.look)
            prior = obj.family_prior_of(records, chash, "selection", space.objective)
            raced = obj.race_decision(stats["deltas"], n_full, incumbent, space.racing, prior=prior)
        if len(recs) < n_full and raced is None:
            plan.unfinished.append(params)
            continue
        metrics = obj.tune_metrics(stats, space.objective)
        if metrics is None:   # fewer than 2 deltas and racing stopped it: nothing to tell Optuna
            plan.finished.append({"params": params, "values": None, "state": "PRUNED"})
            continue
        values = ([metrics["mean_delta"], metrics["spread"]] if space.objective.kind == "multi"
                  else [metrics["objective"]])
        plan.finished.append({"params": params, "values": values, "state": "COMPLETE"})
    plan.new_trials = len(plan.unfinished) + max(0, space.tuner.trials - plan.configs)
    return plan


def _directions(space: SearchSpace) -> list[str]:
    return ["maximize", "minimize"] if space.objective.kind == "multi" else ["maximize"]


def study_url(space: SearchSpace, run_dir: Path) -> str:
    return space.optuna_storage or f"sqlite:///{run_dir / STUDY_FILE}"


def rebuild_study(space: SearchSpace, run_dir: Path, plan: ResumePlan, say=None) -> str:
    """A fresh Optuna study under the search's name holding what the records say (see module doc);
    returns a line saying what was done. A study that cannot be opened is rebuilt when it is the run
    directory's own SQLite file (moved aside first); for an ``optuna_storage:`` URL of the user's own, the
    error names the exact remedy."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from fsray.search.space import optuna_distributions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = study_url(space, run_dir)
    own_file = space.optuna_storage is None
    note = ""
    try:
        storage = optuna.storages.RDBStorage(url)
        names = {s.study_name for s in optuna.study.get_all_study_summaries(storage)}
        if space.name in names:
            optuna.delete_study(study_name=space.name, storage=storage)
    except Exception as exc:  # noqa: BLE001 - a damaged or missing study: rebuilt from the records
        if not own_file:
            raise UsageError(f"--resume: the Optuna study at {url!r} cannot be opened ({_first(exc)}): "
                             f"fix or empty that database, or leave `optuna_storage:` out to rebuild the study "
                             f"from {run_dir / 'results.jsonl'}") from None
        db = run_dir / STUDY_FILE
        aside = db.with_name(STUDY_FILE + ".damaged")
        for suffix in ("", "-journal", "-wal", "-shm"):
            part = Path(str(db) + suffix)
            if part.exists():
                os.replace(part, Path(str(aside) + suffix))
        note = f" ({STUDY_FILE} could not be opened: {_first(exc)}; moved to {aside.name})"
        storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=space.name, storage=storage, directions=_directions(space))
    dists = optuna_distributions(space)
    for item in plan.finished:
        state = TrialState[item["state"]]
        study.add_trial(create_trial(params=item["params"], distributions=dists, state=state,
                                     values=item["values"] if state == TrialState.COMPLETE else None))
    for params in plan.unfinished:
        study.enqueue_trial(params, skip_if_exists=False)
    return (f"Optuna study rebuilt from the records{note}: {plan.done} configuration(s) finished, "
            f"{len(plan.unfinished)} to finish, {plan.new_trials} trial(s) to run")


def set_aside_tune_state(run_dir: Path, tune_dir: str) -> None:
    """Tune's experiment state of the killed run is not resumed (the records are): keep the last
    one beside the run as ``<tune_dir>.previous`` for inspection and start a fresh experiment."""
    old = run_dir / tune_dir
    if old.exists():
        prev = run_dir / f"{tune_dir}.previous"
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(old, prev)


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
