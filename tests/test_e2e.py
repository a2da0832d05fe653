"""End to end, as a user drives it: `fsray tune` on a shrunken embedded-default search (real tiny
model, real Ray Train worker groups, SQLite Optuna study), then `fsray report` on its output.
Everything goes through the console script in subprocesses."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.schema import read_records

REPO = Path(__file__).resolve().parents[1]
FSRAY = str(Path(sys.executable).parent / "fsray")


def _fsray(*args, cwd, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run([FSRAY, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_shrunken_demo_search_then_report(tmp_path):
    demo = yaml.safe_load((REPO / "search_spaces" / "demo_cpu.yaml").read_text())
    # Same search, shrunk: a few steps, 2 seeds, 3 trials, one at a time, private caches.
    demo.update(
        name="e2e",
        budget={"steps": 12, "eval_every": 6, "warmup": 2},
        data={"n_train": 256, "n_val": 32, "eval_batch_size": 32},
        seeds={"count": 2, "confirm": 0},
        tuner={"sampler": "tpe", "trials": 3, "concurrency": 1, "sampler_seed": 0},
        results_dir=str(tmp_path / "runs"),
        baseline_cache=str(tmp_path / "cache"),
    )
    space = tmp_path / "e2e.yaml"
    space.write_text(yaml.safe_dump(demo))
    run_dir = tmp_path / "runs" / "e2e"

    tune = _fsray("tune", str(space), "--out", str(run_dir), cwd=tmp_path)
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    assert "full report: fsray report" in tune.stdout
    assert "HTML report:" in tune.stdout

    # The results store: schema-valid paired records, one per (config, seed), 2 seeds each.
    store = read_records(run_dir / "results.jsonl")
    assert store.problems == []
    recs = store.records
    assert recs, "no records written"
    by_cfg: dict[str, list[dict]] = {}
    for r in recs:
        assert r["schema"] == "fsray.paired/1" and r["task"] == "kv_retrieval/query_after"
        by_cfg.setdefault(r["config_hash"], []).append(r)
    ok_cfgs = {h: rs for h, rs in by_cfg.items() if all(r["status"] in ("ok", "noop") for r in rs)}
    assert ok_cfgs, by_cfg
    for rs in by_cfg.values():
        assert len({r["seed"] for r in rs}) == len(rs)          # no (config, seed) duplicates
    # The baseline of a seed is shared: every candidate saw the same no_fs metrics for it.
    base_acc: dict[int, float] = {}
    for r in recs:
        if r["status"] == "ok":
            base_acc.setdefault(r["seed"], r["baseline"]["token_acc"])
            assert r["baseline"]["token_acc"] == base_acc[r["seed"]]
    assert (run_dir / "optuna.db").stat().st_size > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    # one configuration per trial (alpha_init is continuous: no two trials share one), each trained
    # on both seeds (racing needs 2 seeds, so it cannot stop any), every seed's baseline once
    assert summary["counts"]["configs"] == len(by_cfg) == 3
    selection = {h: sorted(r["seed"] for r in rs if r["stage"] == "selection") for h, rs in by_cfg.items()}
    assert selection == {h: [0, 1] for h in by_cfg}
    assert all(r["status"] == "ok" for r in recs), [r["failure"] for r in recs if r["status"] != "ok"]
    # the demo settles its best configuration on 3 fresh seeds (settle.total_budget), one round
    fresh = [r for r in recs if r["stage"] == "confirmation"]
    assert sorted(r["seed"] for r in fresh) == [2, 3, 4]
    assert len({r["config_hash"] for r in fresh}) == 1 and fresh[0]["config_hash"] == summary["best"]["config_hash"]
    assert all(r["settle"] == {"round": 0, "horizon": 20, "design": "sprt", "curtail": 0.05} for r in fresh)
    (settled,) = summary["settle"]["configs"]
    assert settled["n"] == 3 and settled["verdict"] in ("helps", "hurts", "no effect", "undecided", "no-op")
    assert "settled on fresh seeds" in tune.stdout and "no_fs on the selection seeds [0, 1]" in tune.stdout
    assert summary["counts"]["baselines_trained"] == 5 and summary["counts"]["fs_runs"] == 9

    # fsray report on the run: JSON numbers equal the records' own paired deltas.
    rep = _fsray("report", str(run_dir), "--format", "json", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(rep.stdout)
    rows = [row for row in doc["summary"] if row.get("stage") == "selection"]
    assert rows
    for h, rs in ok_cfgs.items():
        deltas = [r["fs"]["token_acc"] - r["baseline"]["token_acc"] for r in rs
                  if r["status"] == "ok" and r["stage"] == "selection"]
        if not deltas:
            continue
        row = next(x for x in rows if x.get("config_hash") == h)
        assert row["n"] == len(deltas)
        assert row["mean"] == pytest.approx(sum(deltas) / len(deltas), abs=1e-12)

    # The terminal table and the HTML report written by the search itself.
    table = _fsray("report", str(run_dir), cwd=tmp_path)
    assert table.returncode == 0 and "95% CI" in table.stdout
    html = (run_dir / "report.html").read_text()
    images = re.findall(r"src=['\"]data:image/png;base64,([^'\"]+)", html)
    assert images and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: [unclosed\n")
    res = _fsray("tune", str(bad), cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "bad.yaml" in res.stderr

    missing = _fsray("report", str(tmp_path / "nope.jsonl"), cwd=tmp_path, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr

    impossible = tmp_path / "imp.yaml"
    impossible.write_text(yaml.safe_dump({
        "name": "imp", "task": {"name": "kv_retrieval"}, "seeds": 3,
        "space": {"fs_clip": {"type": "float", "low": -1.0, "high": 1.0}}}))
    res = _fsray("tune", str(impossible), cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "fs_clip" in res.stderr and "Traceback" not in res.stderr


def test_every_subcommand_has_help_with_examples(tmp_path):
    for cmd in ("train", "tune", "report", "pretrain"):
        res = _fsray(cmd, "--help", cwd=tmp_path, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "example" in res.stdout.lower() and f"fsray {cmd}" in res.stdout
