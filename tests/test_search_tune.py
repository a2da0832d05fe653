"""The search through Ray Tune + Optuna on the simulated trainable: end to end, failures,
confirmation, importance, the Optuna RDB study, and resume after SIGKILL of the driver.

The searches that need a failing seed run or a log of every run made run their driver through
``tests/sim_faults.py`` (which injects both in the driver and in every Ray worker of its own local
Ray instance); the others share the session's local Ray (``ray_local``). The SIGKILLed driver runs
in its own process group, which the test kills whole so no Ray process outlives it.
"""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from analysis.schema import read_records
from fsray.search.evaluate import SimulatedRunner, evaluate_config
from fsray.search.space import parse_space
from fsray.search.store import ResultsStore
from fsray.search.summary import config_rows

REPO = Path(__file__).resolve().parents[1]
SIM_FAULTS = str(Path(__file__).resolve().parent / "sim_faults.py")
# the FS run of every configuration with fs_layer_start 3 crashes on seed 1
CRASH_L3_SEED1 = [{"when": {"fs_layer_start": 3}, "kind": "raise", "at_seed": 1}]


def _space_dict(tmp_path: Path, **changes) -> dict:
    raw = {
        "name": "tune_test", "trainable": "simulated",
        "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
        "seeds": {"count": 4, "confirm": 2},
        "space": {
            "fs_layer_start": {"type": "categorical", "choices": [3, 6, 8, 12]},
            "alpha_init": {"type": "float", "low": -4.0, "high": -1.0},
            "fs_norm": {"type": "categorical", "choices": [True, False]},
        },
        "objective": {"kind": "lower_bound"},
        "search": {"sampler": "random", "sampler_seed": 3, "trials": 8, "concurrency": 2},
        "simulated": {
            "n_layer": 12, "noise_sd": 0.01,
            "effects": {"fs_layer_start": {"peak": 8, "width": 2, "height": 0.04},
                        "alpha_init": {"peak": -2, "width": 1, "height": 0.01},
                        "fs_norm": {"values": {"true": 0.0, "false": -0.05}}},
        },
        "baseline_cache": str(tmp_path / "cache"),
    }
    raw.update(changes)
    return raw


def _write(tmp_path: Path, raw: dict, name="space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _tune_cmd(tmp_path: Path, *fsray_args, faults=()) -> list[str]:
    """``fsray tune`` with ``faults`` injected and every run logged to tmp_path/runs.log."""
    from sim_faults import write_spec

    spec = write_spec(tmp_path / "faults.json", faults, run_log=tmp_path / "runs.log")
    return [sys.executable, SIM_FAULTS, str(spec), "tune", *map(str, fsray_args)]


_ENV = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}   # its own local Ray


def test_simulated_search_end_to_end(tmp_path):
    raw = _space_dict(tmp_path)
    out = tmp_path / "run"
    res = subprocess.run(_tune_cmd(tmp_path, _write(tmp_path, raw), "--out", out, faults=CRASH_L3_SEED1),
                         cwd=REPO, env=_ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    printed = res.stdout
    assert "trials done 8/8" in printed and "runs made" in printed and "best lower_bound" in printed
    assert f"full report: fsray report {out}" in printed
    assert "knob importance (PED-ANOVA) for the mean delta:" in printed
    # the answer closes the output (issue 22): verdict counts per family, the best candidate,
    # the one command that would decide it, and no stability legend unless --explain
    tail = printed[printed.rindex("\n== answer (δ="):].strip().splitlines()
    assert re.match(r"kv_retrieval/query_after \[selection\]: \d+ configurations: .*; decided: ", tail[1])
    assert any(ln.startswith("best candidate: C") for ln in tail)
    assert re.fullmatch(rf"  fsray tune {re.escape(str(tmp_path / 'space.yaml'))} --out "
                        rf"{re.escape(str(out))} --settle-only --settle-budget \d+", tail[-1]), tail
    assert "verdict: helps / hurts" not in printed and "HTML report: " in printed

    records = read_records(out / "results.jsonl")
    assert not records.problems
    sel = [r for r in records.records if r["stage"] == "selection"]
    assert len({r["config_hash"] for r in sel}) == 8  # one configuration per trial

    summary = json.loads((out / "summary.json").read_text())
    rows = summary["selection"]
    # failures: recorded with their reason, listed, and the search went on to all 8 trials
    failed = [r for r in sel if r["status"] == "failed"]
    assert failed and all("simulated crash" in r["failure"] and r["seed"] == 1 for r in failed)
    assert {f["config_hash"] for f in summary["failures"]} == {r["config_hash"] for r in failed}
    assert "failed configurations" in printed
    # no-op configurations (fs_layer_start 12 of 12 layers) were recorded, never trained
    runs_log = (tmp_path / "runs.log").read_text().splitlines()
    noop_hashes = {r["config_hash"] for r in sel if r["status"] == "noop"}
    assert not any(line.split()[1] in noop_hashes for line in runs_log if line.startswith("prompt_fs"))
    # baselines: one per seed (selection + confirmation), never one per candidate (sharing across
    # searches through the on-disk cache: tests/test_search_evaluate.py)
    assert sorted(line for line in runs_log if line.startswith("no_fs")) == [f"no_fs {s}" for s in range(6)]
    counts = summary["counts"]
    assert counts["baselines_trained"] == 6
    assert counts["runs_made"] == len([l for l in runs_log]) and counts["runs_made"] < counts["fresh_baseline_protocol_runs"]

    # the winner was confirmed on fresh seeds, kept apart from selection
    best = summary["best"]
    conf = [r for r in records.records if r["stage"] == "confirmation"]
    assert {r["seed"] for r in conf} == {4, 5} and {r["config_hash"] for r in conf} == {best["config_hash"]}
    assert best["status"] == "complete"   # a provable no-op is never the answer
    assert best["objective"] == max(r["objective"] for r in rows if r["status"] == "complete")

    importance = json.loads((out / "importance.json").read_text())
    assert set(importance) == {"mean_delta", "spread", "n_configs"}
    assert importance["n_configs"] == len(rows) - len(summary["failures"])   # computed from these
    assert set(importance["mean_delta"]) <= {"fs_layer_start", "alpha_init", "fs_norm"}
    assert importance["mean_delta"], "importance needs >= 4 finished configurations"

    # the Optuna study lives in the run directory's SQLite file, failures included
    import optuna

    study = optuna.load_study(study_name="tune_test", storage=f"sqlite:///{out / 'optuna.db'}")
    states = Counter(t.state.name for t in study.trials)
    assert sum(states.values()) == 8 and states["FAIL"] == len({r["config_hash"] for r in failed})
    # each trial's user attrs carry the stability question (optuna-dashboard shows them; issue 22)
    by_hash = {r["config_hash"]: r for r in rows}
    for t in study.trials:
        a = t.user_attrs
        assert {"config", "config_hash", "mean_delta", "spread", "interval", "interval_level",
                "n_seeds", "seeds", "signs", "status"} <= set(a), (t.number, a)
        row = by_hash[a["config_hash"]]
        assert a["config"] == row["label"] and a["n_seeds"] == row["n"]
        failed_seeds = {r["seed"] for r in failed if r["config_hash"] == a["config_hash"]}
        assert a["status"] == row["status"]
        assert a["seeds"] == [s for s in row["seeds"] if s not in failed_seeds]
        if row["status"] == "failed":
            assert t.state.name == "FAIL" and "simulated crash" in a["failure"]
            continue
        assert a["mean_delta"] == row["mean"] and a["spread"] == row["std"]
        assert a["interval"] == ([0.0, 0.0] if row["status"] == "noop" else [row["lo"], row["hi"]])
        assert a["verdict"].startswith(("helps", "hurts", "no effect", "undecided", "no-op"))
        assert (a["verdict"] == "no-op (A/A)") == (row["status"] == "noop")
        if row["objective"] is not None:
            assert t.value == row["objective"]   # the objective is what it was



def test_multi_objective_front(ray_local, tmp_path):
    """objective.kind multi: Optuna gets (mean delta, spread) to maximise / minimise."""
    import optuna

    from fsray.search.driver import run_search

    raw = _space_dict(tmp_path, name="multi", objective={"kind": "multi"},
                      search={"sampler": "tpe", "sampler_seed": 1, "trials": 4, "concurrency": 2})
    raw["seeds"] = {"count": 3}
    summary = run_search(parse_space(raw), out=str(tmp_path / "run"), say=lambda s: None)
    study = optuna.load_study(study_name="multi", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4
    rows = {tuple(sorted((k, r["config"][k]) for k in raw["space"])): r for r in summary["selection"]}
    for t in done:
        row = rows[tuple(sorted(t.params.items()))]
        assert t.values == pytest.approx([row["mean"], row["std"]])
    assert study.best_trials  # the Pareto front


def test_rerun_without_resume_refuses(ray_local, tmp_path, capsys):
    from fsray.cli import main

    out = tmp_path / "run"
    (out).mkdir()
    (out / "results.jsonl").write_text("")
    assert main(["tune", str(_write(tmp_path, _space_dict(tmp_path))), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_retrains_nothing(tmp_path):
    raw = _space_dict(tmp_path, search={"sampler": "tpe", "sampler_seed": 0, "trials": 6,
                                         "concurrency": 1})
    raw["simulated"]["seconds_per_run"] = 0.5
    raw["seeds"] = {"count": 4, "confirm": 0}
    path = _write(tmp_path, raw)
    out = tmp_path / "run"
    results = out / "results.jsonl"
    proc = subprocess.Popen(_tune_cmd(tmp_path, path, "--out", out), cwd=REPO, env=_ENV,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 150
        while time.time() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 7:
                break
            assert proc.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the search made no progress")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver's own Ray processes
        except ProcessLookupError:
            pass
        proc.wait()
    before = results.read_text()
    n_before = len(before.splitlines())
    assert 7 <= n_before < 24

    # the resumed driver logs its runs to the same file
    resumed = subprocess.run(_tune_cmd(tmp_path, path, "--out", out, "--resume"), cwd=REPO, env=_ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    space = parse_space(raw)
    after = results.read_text()
    assert after.startswith(before.rstrip("\n"))  # nothing completed was lost or rewritten
    records = read_records(results).records
    keys = Counter((r["config_hash"], r["seed"], r["stage"]) for r in records)
    assert max(keys.values()) == 1
    # nothing trained twice: the simulated trainable logged every run it made, in both processes
    runs = Counter((tmp_path / "runs.log").read_text().splitlines())
    assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1]
    assert len({r["config_hash"] for r in records}) >= 6
    assert summary["counts"]["configs"] == len({r["config_hash"] for r in records})

    # the final table equals an uninterrupted evaluation of the same configurations and seeds
    fresh = ResultsStore(str(tmp_path / "fresh"), str(tmp_path / "fresh_cache"),
                         space.objective.model_dump())
    for row in summary["selection"]:
        params = {k: row["config"][k] for k in space.knobs}
        evaluate_config(space, SimulatedRunner(space), fresh, params, row["seeds"], race=False)
    ref = {r["config_hash"]: r for r in config_rows(fresh.all_records(), space)}
    for row in summary["selection"]:
        assert row["deltas"] == ref[row["config_hash"]]["deltas"]
        assert row["objective"] == ref[row["config_hash"]]["objective"]
