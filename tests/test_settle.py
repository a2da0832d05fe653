"""Settling (fsray tune --settle): fresh seeds in rounds for the shortlisted configurations until each
has a verdict; the rounds are in the records, so a resumed search replays its looks; bad input is one
line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from analysis.schema import read_records
from fsray.cli import main
from fsray.search.space import parse_space


def _raw(tmp_path: Path, **changes) -> dict:
    raw = {
        "name": "settle_test", "trainable": "simulated",
        "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
        "seeds": {"count": 4},
        "space": {"fs_layer_start": {"type": "categorical", "choices": [3, 8]}},
        "fixed": {"alpha_init": -2.0},
        "objective": {"kind": "lower_bound", "delta": 0.01},
        "racing": {"enabled": False},
        "search": {"sampler": "random", "sampler_seed": 0, "trials": 4, "concurrency": 2},
        "settle": {"enabled": True, "top_k": 2, "round_size": 2, "max_seeds_per_config": 12},
        "simulated": {"n_layer": 12, "noise_sd": 0.01,
                      "effects": {"fs_layer_start": {"values": {"3": 0.0, "8": 0.05}}}},
        "baseline_cache": str(tmp_path / "cache"),
    }
    raw.update(changes)
    return raw


@pytest.mark.slow
def test_settling_decides_the_shortlist_and_resume_replays_its_looks(ray_local, tmp_path):
    from fsray.search.driver import run_search

    space = parse_space(_raw(tmp_path))
    summary = run_search(space, out=str(tmp_path / "run"), say=lambda s: None)
    settle = summary["settle"]
    verdicts = {c["config"]["fs_layer_start"]: c for c in settle["configs"]}
    assert set(verdicts) == {3, 8}
    assert verdicts[8]["verdict"] == "helps" and verdicts[8]["ge_delta"]      # +0.05 against sd 0.01
    assert verdicts[3]["verdict"] == "no effect"                             # exactly 0 against delta 0.01
    assert verdicts[8]["basis"] == "fresh seeds"
    records = read_records(tmp_path / "run" / "results.jsonl").records
    fresh = [r for r in records if r["stage"] == "confirmation"]
    selection_seeds = set(space.seeds.selection())
    assert fresh and not {r["seed"] for r in fresh} & selection_seeds         # never the seeds that chose it
    assert all(r["settle"]["horizon"] == 12 and r["settle"]["round"] >= 0 for r in fresh)
    assert all(r["settle"]["curtail"] == 0.05 and r["settle"]["design"] == "sprt" for r in fresh)
    n_before = len(records)
    # resuming a settled search trains nothing more and reaches the same verdicts from the records
    again = run_search(space, out=str(tmp_path / "run"), resume=True, say=lambda s: None)
    assert len(read_records(tmp_path / "run" / "results.jsonl").records) == n_before
    assert [c["verdict"] for c in again["settle"]["configs"]] == [c["verdict"] for c in settle["configs"]]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["settle"]["family"]


@pytest.mark.slow
def test_settling_stops_what_its_horizon_cannot_decide(ray_local, tmp_path, capsys):
    """Seed noise 0.3 against delta 0.01: after the first look (3 seeds) the 12-seed horizon would
    decide neither configuration, so settling stops both there (curtailment), says so, and the
    report replays the stop from the records; with curtail 0 they run to the horizon."""
    from analysis.loaders import load
    from analysis.report import ReportOptions, build
    from fsray.commands.tune import settle_lines
    from fsray.search.driver import run_search

    raw = _raw(tmp_path, simulated={"n_layer": 12, "noise_sd": 0.3, "effects": {}})
    summary = run_search(parse_space(raw), out=str(tmp_path / "run"), say=lambda s: None)
    configs = summary["settle"]["configs"]
    assert [c["verdict"] for c in configs] == ["undecided", "undecided"]
    assert all(c["curtailed"] and c["n"] == 3 and c["p_decide"] < 0.05 for c in configs)
    fresh = [r for r in read_records(tmp_path / "run" / "results.jsonl").records if r["stage"] == "confirmation"]
    assert len(fresh) == 6
    lines = settle_lines(summary["settle"], ["fs_layer_start"])
    assert sum("stopped early" in x for x in lines) == 2
    report = build(load([tmp_path / "run"]), ReportOptions(delta=0.01, metric="acc")).summary
    conf = report[report["stage"] == "confirmation"]
    assert len(conf) == 2 and all("stopped" in x for x in conf["verdict_label"])

    # the settling may be run on: settle.curtail 0 with --settle-only takes both to the horizon
    raw["settle"] = {**raw["settle"], "curtail": 0.0}
    full = run_search(parse_space(raw), out=str(tmp_path / "run"), settle_only=True, say=lambda s: None)
    assert all(c["n"] == 12 and not c["curtailed"] for c in full["settle"]["configs"])
    fresh = [r for r in read_records(tmp_path / "run" / "results.jsonl").records if r["stage"] == "confirmation"]
    assert len(fresh) == 24 and sum(r["settle"]["curtail"] == 0.05 for r in fresh) == 6


def _cli(tmp_path, raw, *extra) -> tuple[int, str]:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return main(["tune", str(path), "--out", str(tmp_path / "run"), *extra])


@pytest.mark.parametrize("change, message", [
    ({"settle": {"enabled": True, "top_k": 3, "total_budget": 5}}, "total seed budget (5) is smaller"),
    ({"objective": {"kind": "lower_bound", "delta": 0}}, "objective.delta"),
    ({"settle": {"enabled": True, "curtail": 1.5}}, "settle.curtail"),
    ({"objective": {"kind": "lower_bound", "delta": ".nan"}}, "objective.delta"),
])
def test_bad_settle_input_is_one_line_and_writes_nothing(tmp_path, capsys, change, message):
    raw = _raw(tmp_path, **change)
    if raw["objective"].get("delta") == ".nan":
        raw["objective"]["delta"] = float("nan")
    code = _cli(tmp_path, raw)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_settle_only_without_a_selection_is_refused(tmp_path, capsys):
    code = _cli(tmp_path, _raw(tmp_path), "--settle-only")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no finished selection yet" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_delta_flag_must_be_positive(tmp_path, capsys):
    assert _cli(tmp_path, _raw(tmp_path), "--delta", "-0.1") == 2
    assert "--delta must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
