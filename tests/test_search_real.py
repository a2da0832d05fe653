"""The real trainable path: baselines in one Ray Train fit, one fit per trial, records appended by
the stop rule inside the fit. Seed runs do (almost) no work: 1 step of a 2-layer width-16 model."""

from __future__ import annotations

import json

import pytest

from analysis.schema import read_records
from fsray.search.space import parse_space

pytestmark = pytest.mark.slow  # two Ray Train fits: ~40 s on an idle 2-core machine


def test_real_search_through_ray_train(ray_local, tmp_path):
    from fsray.search.driver import run_search

    raw = {
        "name": "real_tiny", "trainable": "real",
        "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
        "model": {"n_layer": 2, "d_model": 16, "head_size": 8},
        "budget": {"steps": 1, "batch_size": 8, "eval_every": 1, "warmup": 0},
        "data": {"n_train": 64, "n_val": 16, "eval_batch_size": 16},
        "seeds": 2,
        "space": {"alpha_init": {"type": "float", "low": -4.0, "high": -1.0}},
        "search": {"trials": 1, "concurrency": 1},
        "baseline_cache": str(tmp_path / "cache"),
    }
    summary = run_search(parse_space(raw), out=str(tmp_path / "run"), say=lambda s: None)
    records = read_records(tmp_path / "run" / "results.jsonl").records
    assert [r["status"] for r in records] == ["ok", "ok"] and [r["seed"] for r in records] == [0, 1]
    for r in records:
        assert r["baseline"]["mode"] == "no_fs" and r["fs"]["mode"] == "prompt_fs"
        assert r["baseline"]["init_hash"] == r["fs"]["init_hash"]  # paired: same initial weights
        assert r["task"] == "kv_retrieval/query_after" and r["stage"] == "selection"
    assert summary["counts"]["baselines_trained"] == 2 and summary["counts"]["runs_made"] == 4
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best"] is not None
