"""The table of a search from its results store: one row per configuration and stage.

Computed from ``results.jsonl`` alone, so an interrupted-then-resumed search and an uninterrupted
one give the same table for the same (config, seed) records.

What this table shares with the report's (``analysis.summary``): n, mean, std and signs are
``analysis.stats.describe`` (the numbers ``stats.summarize`` gives each report row), the interval is
``analysis.stats.mean_interval``, a configuration is named by the report's id
(``Report.ids_by_hash``) and printed with the report's ``fmt`` / ``signs_text`` / ``truncate`` /
``wrap_line``. What stays its own, on purpose: the rows are the objective's (its level and interval
method, which a search YAML may set apart from the report's 95% t; the objective value; the
racing status raced / complete / failed / noop; best first by the objective), and they are needed
while the search runs (shortlist, confirmation, progress, run counts) from record dicts, many times
per trial, before any report exists.
"""

from __future__ import annotations

from fsray.search.objective import config_stats
from fsray.search.space import SearchSpace


def config_rows(records: list[dict], space: SearchSpace, stage: str = "selection") -> list[dict]:
    """Rows sorted best first by the objective (configs without one last)."""
    n_full = len(space.seeds.selection()) if stage == "selection" else None
    groups: dict[str, list[dict]] = {}
    for rec in records:
        if rec.get("stage", "selection") == stage:
            groups.setdefault(rec["config_hash"], []).append(rec)
    rows = []
    for chash, recs in groups.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        stats = config_stats(recs, space.objective)
        failed = [r for r in recs if r["status"] == "failed"]
        if failed:
            status = "failed"
        elif all(r["status"] == "noop" for r in recs):
            status = "noop"
        elif n_full is not None and stats["n"] < n_full:
            status = "raced"
        else:
            status = "complete"
        rows.append({
            "config_hash": chash,
            "label": recs[0].get("config_label") or chash,
            "config": recs[0].get("config", {}),
            "status": status,
            "failure": failed[0]["failure"] if failed else None,
            "seeds": [r["seed"] for r in recs],
            **{k: stats[k] for k in ("n", "mean", "std", "lo", "hi", "signs", "objective", "deltas")},
        })
    rows.sort(key=lambda r: (r["objective"] is None, -(r["objective"] or 0.0)))
    return rows


def short_label(config: dict, knobs) -> str:
    """The searched knobs of a configuration, floats to 3 significant digits."""
    return " ".join(f"{k}={config[k]:.3g}" if isinstance(config.get(k), float) else f"{k}={config.get(k)}"
                    for k in knobs)


def complete_rows(rows: list[dict]) -> list[dict]:
    """The real configurations evaluated on every seed, best first (``rows`` are): never a no-op
    (recorded, as A/A evidence, and listed apart), a raced or a failed one."""
    return [r for r in rows if r["status"] == "complete" and r["objective"] is not None]


def best_row(rows: list[dict]) -> dict | None:
    """The incumbent: the best objective among the complete real configurations."""
    done = complete_rows(rows)
    return done[0] if done else None


def run_counts(records: list[dict], baselines_trained: int, space: SearchSpace) -> dict:
    """Training runs this search made vs the researchers' protocol at the same trial count
    (a fresh baseline per candidate, every seed for every candidate)."""
    sel = [r for r in records if r.get("stage", "selection") == "selection"]
    conf = [r for r in records if r.get("stage") == "confirmation"]
    fs_runs = sum(1 for r in records if r["status"] != "noop")
    noop = sum(1 for r in records if r["status"] == "noop")
    n_configs = len({r["config_hash"] for r in sel})
    n_seeds = len(space.seeds.selection())
    n_conf_cfgs = len({r["config_hash"] for r in conf})
    n_conf_seeds = len({r["seed"] for r in conf})
    fresh = 2 * (n_configs * n_seeds + n_conf_cfgs * n_conf_seeds)
    rows = config_rows(records, space)
    saved = sum(n_seeds - r["n"] for r in rows if r["status"] == "raced")
    made = fs_runs + baselines_trained
    return {
        "runs_made": made, "fs_runs": fs_runs, "baselines_trained": baselines_trained,
        "noop_seeds_skipped": noop, "racing_runs_saved": saved, "configs": n_configs,
        "fresh_baseline_protocol_runs": fresh,
        "ratio": (made / fresh) if fresh else None,
    }
