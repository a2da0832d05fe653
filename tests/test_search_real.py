"""The real trainable path: the search's long-lived Ray Train worker groups (fsray.harness) train the
shared baselines first, then each trial's seed runs; each finished seed's record is appended at once.
Seed runs do (almost) no work: 1 step of a 2-layer width-16 model."""

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


def test_a_search_file_depth_that_disagrees_with_the_model_is_refused(tmp_path):
    """The depth is read once, from the model (or its checkpoint); a YAML n_layer that says otherwise
    would decide no-op configurations wrongly, so it is an error naming both."""
    from fsray.errors import UsageError
    from fsray.search.evaluate import make_runner

    raw = {"name": "depth", "trainable": "real", "base": "embedded_default", "n_layer": 12,
           "task": {"name": "kv_retrieval", "options": {"order": "query_after"}}, "seeds": 2,
           "space": {"alpha_init": {"type": "float", "low": -4.0, "high": -1.0}}}
    with pytest.raises(UsageError, match="says 12, but checkpoint base_l2_d64.pth has 2 layers"):
        make_runner(parse_space(raw))
    assert make_runner(parse_space({**raw, "n_layer": 2})).n_layer == 2
    assert make_runner(parse_space({k: v for k, v in raw.items() if k != "n_layer"})).n_layer == 2
