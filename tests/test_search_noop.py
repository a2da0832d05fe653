"""A configuration that provably does nothing is never the answer: on a surface with no effect
anywhere, fs_layer_start = n_layer (a no-op, interval [0, 0]) is recorded but never ranked best,
never becomes the racing incumbent, and Optuna is told it is the worst, not the best."""

from __future__ import annotations

import pytest

from analysis.schema import read_records
from fsray.search.objective import NOOP_OBJECTIVE, config_stats, incumbent_bound, tune_metrics
from fsray.search.space import ObjectiveSection, parse_space
from fsray.search.summary import best_row, config_rows


def _rec(chash, seed, d, status="ok"):
    run = lambda acc: {"mode": "x", "status": "ok", "token_acc": acc, "seq_acc": acc, "loss": 1.0}  # noqa: E731
    return {"config_hash": chash, "seed": seed, "stage": "selection", "status": status,
            "config": {"fs_layer_start": 12 if status == "noop" else 3}, "config_label": chash,
            "baseline": run(0.5), "fs": run(0.5 + d)}


def test_noop_rows_are_listed_but_never_best_nor_incumbent():
    obj = ObjectiveSection()
    noop = [_rec("noop", s, 0.0, "noop") for s in range(3)]
    real = [_rec("real", s, d) for s, d in enumerate([-0.02, 0.01, -0.005])]
    stats = config_stats(noop, obj)
    assert stats["noop"] and stats["objective"] is None
    assert tune_metrics(stats, obj)["objective"] == NOOP_OBJECTIVE
    assert incumbent_bound({"noop": noop}, 3, obj) is None
    assert incumbent_bound({"noop": noop, "real": real}, 3, obj) == pytest.approx(config_stats(real, obj)["lo"])
    space = parse_space({"name": "x", "trainable": "simulated", "task": {"name": "kv_retrieval"},
                         "seeds": 3, "space": {"fs_layer_start": {"type": "int", "low": 1, "high": 12}},
                         "simulated": {}})
    rows = config_rows(noop + real, space)
    assert {r["config_hash"]: r["status"] for r in rows} == {"noop": "noop", "real": "complete"}
    assert best_row(rows)["config_hash"] == "real"
    assert best_row([r for r in rows if r["status"] == "noop"]) is None


@pytest.mark.slow
def test_search_on_a_flat_surface_never_picks_the_noop(ray_local, tmp_path):
    from fsray.search.driver import run_search

    raw = {
        "name": "flat", "trainable": "simulated", "task": {"name": "kv_retrieval"},
        "seeds": {"count": 4, "confirm": 0},
        "space": {"fs_layer_start": {"type": "categorical", "choices": [4, 12]},
                  "alpha_init": {"type": "float", "low": -4.0, "high": -1.0}},
        "search": {"sampler": "random", "sampler_seed": 1, "trials": 6, "concurrency": 2},
        "racing": {"enabled": False},
        "simulated": {"n_layer": 12, "noise_sd": 0.02},
        "baseline_cache": str(tmp_path / "cache"),
    }
    summary = run_search(parse_space(raw), out=str(tmp_path / "run"), say=lambda s: None)
    records = read_records(tmp_path / "run" / "results.jsonl").records
    noop = [r for r in records if r["status"] == "noop"]
    assert noop and all(r["config"]["fs_layer_start"] == 12 for r in noop)   # recorded, as A/A evidence
    assert summary["best"] is not None and summary["best"]["config"]["fs_layer_start"] == 4
