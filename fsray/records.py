"""The one builder of ``fsray.paired/1`` records (``analysis.schema``), for every trainable.

What differs between the real trainer and the simulated surface is only the *context* of a run (the
task's chance level, the model, the budget, how its baseline is keyed), which each passes in; the
record's shape, its status rules and its timestamp are decided here once.
"""

from __future__ import annotations

from datetime import datetime, timezone

from analysis.schema import FS_SEMANTICS, SCHEMA, task_label, validate_record  # noqa: F401 - task_label: also from here
from fsray.fsconfig import FSConfig, config_hash

# Fields a context may give (all optional); anything else is a programming error.
CONTEXT_FIELDS = ("chance", "learned_margin", "learned_metric", "baseline_key", "model", "budget",
                  "task_options", "code_version")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_record(task: str, fs: FSConfig | None, seed: int, baseline: dict | None, fs_run: dict | None,
                 stage: str, trial_id: str | None = None, noop_reason: str | None = None,
                 failure: str | None = None, context: dict | None = None) -> dict:
    """A validated record of one paired seed.

    ``noop_reason``: the config is provably no_fs, recorded without training (status noop, the FS
    side a copy of the baseline). ``failure``: the FS run failed before returning a RunResult. A run
    that returned status failed makes the record failed, naming which side and why.
    """
    context = dict(context or {})
    unknown = set(context) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"build_record: unknown context fields {sorted(unknown)}")
    if failure is not None and fs_run is None:
        fs_run = {"mode": "prompt_fs", "status": "failed", "failure": failure}
    config = fs.model_dump() if fs is not None else {}
    status, why = "ok", None
    if noop_reason is not None:
        status = "noop"
        fs_run = {**baseline, "mode": "prompt_fs"} if baseline is not None else None
    failed = [(r["mode"], r.get("failure")) for r in (baseline, fs_run)
              if r is not None and r.get("status") == "failed"]
    # Runs before the precision policy were all fp32; a pair of two precisions is no pair.
    precisions = [r.get("precision", "fp32") for r in (baseline, fs_run) if r is not None]
    if failed:
        status, why = "failed", "; ".join(f"{m}: {f}" for m, f in failed)
    elif len(set(precisions)) > 1:
        status, why = "failed", (f"precision differs: baseline ran in {precisions[0]}, prompt_fs in "
                                 f"{precisions[1]} (a baseline is only paired with a run of its precision)")
    elif status == "ok" and (baseline is None or fs_run is None):
        status, why = "failed", "missing run"
    rec = {
        "schema": SCHEMA,
        "task": task,
        "config": config,
        "config_hash": config_hash(config),
        "config_label": fs.label() if fs is not None else "no_fs",
        "seed": int(seed),
        "stage": stage,
        "trial_id": trial_id,
        "status": status,
        "failure": why,
        "noop_reason": noop_reason,
        "chance": context.get("chance"),
        "learned_margin": context.get("learned_margin"),
        "learned_metric": context.get("learned_metric"),
        "baseline": baseline,
        "fs": fs_run,
        "baseline_key": context.get("baseline_key"),
        "model": context.get("model"),
        "budget": context.get("budget"),
        "task_options": context.get("task_options"),
        "fs_semantics": FS_SEMANTICS,
        "code_version": context.get("code_version"),
        "time": utc_now(),
    }
    return validate_record(rec)
