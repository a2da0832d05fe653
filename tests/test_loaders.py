"""analysis.loaders: every input format (small files written here), detection by content, and every
bad-input case named in issue 3 (one clear line naming file and line; the rest still loaded)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.loaders import COLUMNS, detect, load
from analysis.schema import SCHEMA, append_record


def fsray_record(seed, base_acc, fs_acc, *, task="kv/query_after", config_hash="aaaaaaaaaaaa",
                 label="lstart=1", stage="selection", status="ok", base_learned=None,
                 fs_learned=None, loss=(1.0, 0.9), seq=None, chance=None, margin=None,
                 learned_metric=None):
    def run(mode, acc, l, sq, learned):
        r = {"mode": mode, "status": "ok", "failure": None, "token_acc": acc, "loss": l,
             "seq_acc": sq, "best_step": 10, "steps": 20, "tokens": 100, "seconds": 1.0,
             "curve": [], "learned": learned, "cached": False}
        return r
    rec = {"schema": SCHEMA, "task": task, "config": {"alpha_init": -2.0}, "config_hash": config_hash,
           "config_label": label, "seed": seed, "stage": stage, "status": status, "failure": None}
    if status == "failed":
        rec["failure"] = "diverged"
        rec["baseline"] = rec["fs"] = None
        return rec
    sb, sf = (None, None) if seq is None else seq
    rec["baseline"] = run("no_fs", base_acc, loss[0], sb, base_learned)
    rec["fs"] = run("prompt_fs", fs_acc, loss[1], sf, fs_learned)
    if chance is not None:
        rec["chance"] = {"token_acc": chance, "seq_acc": chance}
    if margin is not None:
        rec["learned_margin"] = margin
    if learned_metric is not None:
        rec["learned_metric"] = learned_metric
    return rec


def write_store(path: Path, records) -> Path:
    for r in records:
        append_record(path, r)
    return path


def test_fsray_store_normalised_columns(tmp_path):
    p = write_store(tmp_path / "results.jsonl", [
        fsray_record(0, 0.50, 0.55, seq=(0.1, 0.3)),
        fsray_record(1, 0.40, 0.38),
        fsray_record(2, 0.0, 0.0, status="failed"),
    ])
    got = load([p])
    assert list(got.df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert got.problems == [] and got.skipped == []
    df = got.df.sort_values("seed")
    assert df["d_acc"].iloc[0] == pytest.approx(0.05)
    assert df["d_acc"].iloc[1] == pytest.approx(-0.02)
    assert df["d_loss"].iloc[0] == pytest.approx(-0.1)
    assert df["d_seq"].iloc[0] == pytest.approx(0.2) and math.isnan(df["d_seq"].iloc[1])
    assert list(df["status"]) == ["ok", "ok", "failed"]  # failed kept, flagged
    assert list(df["line"]) == [1, 2, 3]
    assert set(df["config"]) == {"lstart=1"} and set(df["stage"]) == {"selection"}


def test_detection_is_by_content_not_extension(tmp_path):
    store = write_store(tmp_path / "results.txt", [fsray_record(0, 0.5, 0.6)])  # JSONL named .txt
    csv = tmp_path / "pairs.log.dat"
    csv.write_text("config,task,seed,baseline_acc,fs_acc\na,t,0,0.5,0.6\na,t,1,0.4,0.45\n")
    got = load([store, csv])
    assert got.formats == {str(store): "fsray", str(csv): "plain_csv"}
    assert len(got.df) == 3


@pytest.mark.parametrize("header,base,fs", [
    ("config,task,seed,baseline_acc,fs_acc", "baseline_acc", "fs_acc"),
    ("config,task,seed,no_fs,prompt_fs", "no_fs", "prompt_fs"),
    ("Config,Task,Seed,base_acc,fs_acc,base_loss,fs_loss", "base_acc", "fs_acc"),
])
def test_plain_csv_column_aliases(tmp_path, header, base, fs):
    p = tmp_path / "t.csv"
    extra = ",2.0,1.5" if "loss" in header else ""
    p.write_text(f"{header}\nc1,arc,0,0.30,0.35{extra}\nc1,arc,1,0.32,0.31{extra}\n")
    got = load(p)
    assert got.problems == []
    assert list(got.df["d_acc"].round(6)) == [0.05, -0.01]
    if extra:
        assert list(got.df["d_loss"]) == [-0.5, -0.5]
    assert set(got.df["task"]) == {"arc"} and set(got.df["stage"]) == {"import"}


def test_plain_jsonl_and_delta_only_column(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"config": "x", "task": "kv", "seed": 0, "no_fs_acc": 0.2, "prompt_fs_acc": 0.3,
         "base_learned": True, "fs_learned": "false"},
        {"config": "y", "task": "kv", "seed": 0, "d_acc": -0.01},
    ]) + "\n")
    got = load(p)
    assert got.formats[str(p)] == "plain_jsonl"
    df = got.df.set_index("config")
    assert df.loc["x", "d_acc"] == pytest.approx(0.1)
    assert df.loc["x", "base_learned"] is True and df.loc["x", "fs_learned"] is False
    assert df.loc["y", "d_acc"] == -0.01 and math.isnan(df.loc["y", "base_acc"])


def test_directory_walk_and_importance(tmp_path):
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    write_store(run / "results.jsonl", [fsray_record(0, 0.5, 0.6)])
    write_store(run / "sub" / "more.jsonl", [fsray_record(1, 0.5, 0.4)])
    (run / "importance.json").write_text(json.dumps({"mean_delta": {"alpha_init": 0.7},
                                                     "spread": {"alpha_init": 0.2}}))
    # what else a search directory holds is passed over: configs, pictures, the search's own
    # metadata and Ray Tune's experiment state
    (run / "search.yaml").write_text("metric: acc\n")
    (run / "forest.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    (run / "space.json").write_text('{"objective": {}}')
    (run / "baselines.jsonl").write_text('{"baseline_key": "k"}\n')
    (run / "tune" / "trial_1").mkdir(parents=True)
    (run / "tune" / "experiment_state-2026.json").write_text("{}")
    (run / "tune" / "trial_1" / "result.json").write_text('{"objective": 1}\n')
    got = load(run)
    assert sorted(got.df["seed"]) == [0, 1]
    assert got.importance == {"mean_delta": {"alpha_init": 0.7}, "spread": {"alpha_init": 0.2}}
    assert got.skipped == [] and got.problems == []
    assert got.notes == [f"{run / 'tune'}: Ray Tune experiment state, not results: passed over"]
    # named explicitly, a file is always examined
    assert load(run / "space.json").skipped[0].startswith(f"{run / 'space.json'}: JSON lines")


# -------------------------------------------------------------------------------------------------
# bad input: one line naming file and line; the rest still loaded


def test_missing_and_empty_files(tmp_path):
    good = write_store(tmp_path / "good.jsonl", [fsray_record(0, 0.5, 0.6)])
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    got = load([tmp_path / "nope.jsonl", empty, good])
    assert got.skipped == [f"{tmp_path / 'nope.jsonl'}: no such file or directory",
                           f"{empty}: empty file"]
    assert len(got.df) == 1


def test_truncated_and_malformed_lines(tmp_path):
    p = write_store(tmp_path / "r.jsonl", [fsray_record(0, 0.5, 0.6), fsray_record(1, 0.5, 0.6)])
    with open(p, "a") as fh:
        fh.write('{"schema": "fsray.paired/1", "task": "kv", "seed": 3, "sta')  # crash mid-write
    got = load(p)
    assert len(got.df) == 2
    assert len(got.problems) == 1 and got.problems[0].startswith(f"{p}:3: not valid JSON")


def test_record_without_seed(tmp_path):
    rec = fsray_record(0, 0.5, 0.6)
    del rec["seed"]
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(fsray_record(1, 0.5, 0.6)) + "\n" + json.dumps(rec) + "\n")
    csv = tmp_path / "t.csv"
    csv.write_text("config,task,seed,baseline_acc,fs_acc\na,t,,0.5,0.6\na,t,1.5,0.5,0.6\n"
                   "a,t,2,0.5,oops\na,t,3,0.5\n")
    got = load([p, csv])
    assert got.problems == [
        f"{p}:2: missing field 'seed'",
        f"{csv}:2: record without a seed; skipped",
        f"{csv}:3: seed must be an integer, got '1.5'; skipped",
        f"{csv}:4: column 'fs_acc' is not a number ('oops'); skipped",
        f"{csv}:5: 4 fields, header has 5 (truncated or malformed row); skipped",
    ]
    assert len(got.df) == 1


def test_unknown_formats_are_skipped_by_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("we tried FS on arc, it looked good\n")
    table = tmp_path / "t.csv"
    table.write_text("config,task,baseline_acc,fs_acc\na,t,0.5,0.6\n")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"experiments": [{"id": "x"}]}))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02")
    got = load(tmp_path)
    reasons = dict(s.split(": ", 1) for s in got.skipped)
    assert reasons[str(notes)].startswith("unknown format")
    assert reasons[str(table)] == "a table without a 'seed' column"
    assert reasons[str(manifest)] == "an experiment manifest (no per-seed results)"
    assert reasons[str(binary)] == "binary file, not a results file"
    assert len(got.df) == 0 and not got.usable


def test_duplicates_identical_counted_once_conflicting_dropped(tmp_path):
    a = write_store(tmp_path / "a.jsonl", [fsray_record(0, 0.5, 0.6), fsray_record(1, 0.5, 0.7)])
    b = write_store(tmp_path / "b.jsonl", [fsray_record(0, 0.5, 0.6), fsray_record(1, 0.5, 0.2),
                                           fsray_record(2, 0.5, 0.5)])
    got = load([a, b])
    assert sorted(got.df["seed"]) == [0, 2]
    assert got.problems[0] == (f"{b}:1: duplicate of {a}:1 (lstart=1, seed 0, same values): "
                               "counted once")
    assert got.problems[1].startswith(f"{b}:2: conflicts with {a}:2 (lstart=1, seed 1")
    assert got.problems[1].endswith("both dropped")


def test_same_seed_in_other_stage_or_config_is_not_a_duplicate(tmp_path):
    p = write_store(tmp_path / "a.jsonl", [
        fsray_record(0, 0.5, 0.6), fsray_record(0, 0.5, 0.6, stage="confirmation"),
        fsray_record(0, 0.5, 0.6, config_hash="bbbbbbbbbbbb", label="other")])
    got = load(p)
    assert got.problems == [] and len(got.df) == 3


def test_detect_reasons():
    assert detect('{"schema": "fsray.paired/2", "seed": 0}\n') == (
        None, "fsray schema 'fsray.paired/2' is not 'fsray.paired/1' (newer fsray?)")
    assert detect('{"mode": "fs", "val_r1": 0.1}\n')[0] is None
    assert detect("config,task,seed,no_fs,prompt_fs\n")[0] == "plain_csv"
