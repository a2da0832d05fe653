"""Settling a search's contrast: the same configurations at both levels, until the contrast decides.

A search file's ``contrast: {OPTION: [A, B]}`` asks whether FS's effect differs between two levels
of a task option (``analysis.contrast``). ``settle_contrast`` runs each shortlisted configuration at
both levels (``SearchSpace.at_level``: each level a task of its own, with its own baselines, shared
by every configuration as in any search) on the same fresh seeds, in rounds of
``settle.round_size`` (the first round reaches a first look), and after each round judges every
configuration's contrast from the records exactly as ``fsray report --contrast`` does (the records
carry their round, so the report replays the same looks). A configuration stops when its contrast
is decided (differs / same within delta) or its ``settle.max_seeds_per_config`` seeds per level are
spent (the design's horizon, which fixes the error spending).

Each level keeps its results in a run directory of its own (``levels[level] = (runner, store,
run_dir)``): a results store is keyed by configuration, seed and stage, and the two levels share
all three.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from analysis import contrast as acontrast
from analysis.loaders import load
from analysis.sequential import MIN_SEEDS
from fsray.fsconfig import config_hash
from fsray.search.evaluate import StoreClient, evaluate_config, make_runner
from fsray.search.space import SearchSpace
from fsray.search.store import RESULTS

METRIC = {"acc": "acc", "seq": "seq"}


def judge(space: SearchSpace, run_dirs: list[Path]) -> tuple[dict[str, dict], int]:
    """The contrast of every configuration settled in ``run_dirs`` (by configuration hash: the
    row of ``analysis.contrast.build`` on the fresh (confirmation) seeds), and the last settling
    round recorded (-1: none)."""
    # the results files themselves: one level's run directory may hold the other's
    loaded = load([str(Path(p) / RESULTS) for p in run_dirs if (Path(p) / RESULTS).exists()])
    df = loaded.df
    data = df[(df["status"] == "ok") & (df["stage"] == "confirmation")]
    data = data[data[f"d_{space.objective.metric}"].notna()]
    if data.empty:
        return {}, -1
    last = data["settle_round"].max()
    last = -1 if last != last else int(last)
    c = space.contrast
    out = acontrast.build(data, acontrast.ContrastSpec(c.key, tuple(c.levels)),
                          metric=METRIC[space.objective.metric], delta=space.objective.min_effect,
                          level=space.objective.level, horizon=space.settle.max_seeds_per_config)
    return {r["config_hash_a"]: dict(r) for _, r in out.rows.iterrows()
            if r["config_hash_a"] == r["config_hash_b"]}, last


def settle_contrast(space: SearchSpace, shortlist: list[dict], levels: dict[str, tuple],
                    say: Callable[[str], None] = print) -> dict:
    """Settle the contrast of each configuration of ``shortlist`` (FS parameters, as a trial's).
    Returns ``{"key", "levels", "configs": {config_hash: contrast row}, "rounds" (in all),
    "new_rounds" (run by this call)}``."""
    c, st = space.contrast, space.settle
    if c is None:
        raise ValueError("settle_contrast: the search has no contrast")
    spaces = {lv: space.at_level(lv) for lv in c.levels}
    horizon = st.max_seeds_per_config
    pool = space.seeds.confirmation(horizon)            # fresh seeds, shared by both levels
    todo = {config_hash(space.fs_config(p)): p for p in shortlist}
    run_dirs = [Path(levels[lv][2]) for lv in c.levels]
    verdicts, last = judge(space, run_dirs)    # a resumed search goes on from its records
    n = {h: int(verdicts[h]["n_pairs"] or min(verdicts[h]["n_a"], verdicts[h]["n_b"]))
         if h in verdicts else 0 for h in todo}
    rounds = first = last + 1
    while True:
        open_ = [h for h in todo
                 if (verdicts.get(h, {}).get("verdict") in (None, "undecided")) and n[h] < horizon]
        if not open_:
            break
        for h in open_:
            step = max(st.round_size, MIN_SEEDS - n[h])
            n[h] = min(horizon, n[h] + step)
            seeds = pool[: n[h]]
            for lv in c.levels:
                runner, store, _ = levels[lv]
                evaluate_config(spaces[lv], runner, store, todo[h], seeds, stage="confirmation",
                                trial_id=f"contrast-{rounds}", race=False,
                                record_extra={"settle": {"round": rounds, "horizon": horizon}})
        rounds += 1
        verdicts, _ = judge(space, run_dirs)
        said = "; ".join(f"{verdicts[h]['config_a']}: {verdicts[h]['verdict_label']}"
                         for h in open_ if h in verdicts)
        say(f"[tune] contrast {c.key} {c.levels[0]} - {c.levels[1]}, round {rounds - 1}: {said}")
    return {"key": c.key, "levels": list(c.levels), "rounds": rounds, "new_rounds": rounds - first,
            "configs": {h: verdicts.get(h) for h in todo}}


def level_dir(run_dir: Path, space: SearchSpace, level: str) -> Path:
    """Where a search's second contrast level keeps its results: inside the run directory, so that
    ``fsray report RUN --contrast KEY`` reads both levels."""
    return Path(run_dir) / f"{space.contrast.key}={level}"


def settle_search(space: SearchSpace, runner, store: StoreClient, run_dir: Path, progress,
                  start_harness) -> dict | None:
    """A search's contrast (``fsray.search.driver``): the selection ran at the first level (the
    search's own run directory, ``runner`` and ``store``); its shortlist (``settle.top_k``) is
    settled at both levels here, the second level with its own store, runner and (real trainable)
    worker groups from ``start_harness(space, runner, run_dir, progress)``. Writes
    ``<run>/contrast.json``; returns what ``settle_contrast`` returns (None: nothing shortlisted)."""
    import ray

    from fsray.search.settle import shortlist
    from fsray.search.store import start_store_actor

    c = space.contrast
    first, second = c.levels
    listed = shortlist(space.at_level(first), store.all_records())
    if not listed:
        progress.say("[tune] contrast: no configuration finished every selection seed: nothing to settle")
        return None
    params = [{k: r["config"][k] for k in space.knobs} for r in listed]
    b_space, b_dir = space.at_level(second), level_dir(run_dir, space, second)
    progress.say(f"[tune] contrast {c.key}: {len(params)} configuration(s) at {first} and {second} on "
                 f"shared fresh seeds, rounds of {space.settle.round_size}, at most "
                 f"{space.settle.max_seeds_per_config} seeds per level; {second} in {b_dir}")
    actor = harness = None
    b_dir.mkdir(parents=True, exist_ok=True)
    try:
        actor = start_store_actor(b_dir, space.baseline_cache, space.objective.model_dump())
        b_runner = make_runner(b_space, n_layer=runner.n_layer)
        if space.trainable == "real":
            harness = b_runner.client = start_harness(b_space, b_runner, b_dir, progress)
        out = settle_contrast(space, params, {first: (runner, store, run_dir),
                                              second: (b_runner, StoreClient(actor), b_dir)},
                              say=progress.say)
    finally:
        if harness is not None:
            harness.close()
        if actor is not None:
            ray.kill(actor)
    out["run_dir"] = str(run_dir)
    (Path(run_dir) / "contrast.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    return out
