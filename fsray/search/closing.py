"""The closing summary of a search: ``<run>/summary.json`` and ``<run>/importance.json``, from the
results store alone (what ``fsray tune`` prints at the end and ``fsray report`` reads beside the
records)."""

from __future__ import annotations

import json
from pathlib import Path

from fsray.search.evaluate import StoreClient
from fsray.search.importance import knob_importance, write_importance
from fsray.search.space import SearchSpace
from fsray.search.summary import best_row, config_rows, run_counts


def settle_summary(plan, space: SearchSpace, store: StoreClient) -> dict | None:
    """The settling's verdict per shortlisted configuration (``plan``: the last ``SettlePlan``)."""
    if plan is None:
        return None
    labels = {r["config_hash"]: r for r in config_rows(store.all_records(), space)}
    out = []
    for h, v in plan.configs.items():
        row = labels.get(h, {})
        out.append({"config_hash": h, "label": row.get("label", h), "config": row.get("config"),
                    "verdict": v.verdict, "label_text": v.label(space.objective.min_effect),
                    "ge_delta": v.ge_delta, "n": v.n, "mean": v.mean, "lo": v.lo, "hi": v.hi,
                    "basis": v.basis, "seeds_to_decide": v.seeds_to_decide,
                    "would_decide": v.would_decide, "within_horizon": v.within_horizon, "note": v.note,
                    "design": v.design, "variance": v.variance, "prior_df": v.prior_df,
                    "estimate": v.estimate, "est_lo": v.est_lo, "est_hi": v.est_hi,
                    "curtailed": v.curtailed, "p_decide": v.p_decide,
                    "split": _split_advice(store.all_records(), h, space)})
    family = plan.family
    for c in out:   # the plan names configurations by hash; a reader wants their labels
        family = family.replace(c["config_hash"], c["label"])
    return {"delta": space.objective.min_effect, "family": family, "configs": out,
            "undecided": [c for c in out if c["verdict"] == "undecided"]}


def _split_advice(records: list[dict], config_hash: str, space: SearchSpace) -> str | None:
    """The variance split (``analysis.evalsplit``) of a settled configuration's fresh seeds, where
    every one of them kept its per-item eval outcomes."""
    from analysis.errors import AnalysisInputError
    from analysis.evalsplit import decode_items, split_from_items

    if space.objective.metric_key != "token_acc":
        return None
    recs = [r for r in records if r.get("config_hash") == config_hash and r.get("stage") == "confirmation"
            and r.get("status") == "ok"]
    try:
        pairs = [(decode_items(r["baseline"]["eval_items"]), decode_items(r["fs"]["eval_items"])) for r in recs]
    except (KeyError, TypeError, AnalysisInputError):
        return None
    if len(pairs) < 2:
        return None
    try:
        return split_from_items(pairs).advice
    except AnalysisInputError:
        return None


def baseline_summary(records: list[dict], space: SearchSpace) -> dict | None:
    """How well no_fs itself learned (per selection seed) against the task's chance level: an FS
    delta means little on a model that learned nothing."""
    seen: dict[int, dict] = {}
    chance = None
    for r in records:
        if r.get("stage") == "selection" and isinstance(r.get("baseline"), dict) and r["baseline"].get("status") == "ok":
            seen.setdefault(int(r["seed"]), r["baseline"])
            chance = chance or r.get("chance")
    if not seen:
        return None
    runs = [seen[s] for s in sorted(seen)]
    return {"seeds": sorted(seen), "seq_acc": [b.get("seq_acc") for b in runs],
            "token_acc": [b.get("token_acc") for b in runs], "chance": chance}


def summarise(space: SearchSpace, store: StoreClient, run_dir: Path, seconds: float,
              settled=None, contrast: dict | None = None) -> dict:
    """Write ``summary.json`` and ``importance.json`` into the run directory; returns the summary."""
    records = store.all_records()
    rows = config_rows(records, space)
    confirmation = config_rows(records, space, stage="confirmation")
    importance = knob_importance(space, [r for r in rows if r["status"] != "failed"])
    write_importance(run_dir / "importance.json", importance)
    summary = {
        "name": space.name,
        "run_dir": str(run_dir),
        "objective": space.objective.kind,
        "metric": space.objective.metric,
        "seeds": space.seeds.selection(),
        "seconds": seconds,
        "counts": run_counts(records, store.baselines_trained(), space),
        "selection": rows,
        "confirmation": confirmation,
        "best": best_row(rows),
        "failures": [{"label": r["label"], "config_hash": r["config_hash"], "failure": r["failure"]}
                     for r in rows if r["status"] == "failed"],
        "importance": importance,
        "settle": settle_summary(settled, space, store),
        "baselines": baseline_summary(records, space),
    }
    if contrast is not None:   # a search's contrast (fsray.search.contrast.settle_search)
        summary["contrast"] = contrast
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
