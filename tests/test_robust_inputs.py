"""Bad input and damaged stores never cost data (issue 24), without Ray: output paths
(fsray.paths), settings checked with their ranges, duplicate YAML keys, results readers that skip a
damaged line of any kind, fragments set aside, and the checked baseline cache.

The classes that need a search through Ray (the run lock between two real searches, signals,
resume after SIGKILL, the Optuna study rebuilt) are in tests/test_search_faults.py.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml

from analysis.schema import append_record, read_records
from fsray.cli import main
from fsray.errors import UsageError
from fsray.fsconfig import FSConfig
from fsray.records import build_record
from fsray.paths import RunLock, check_output_file, check_run_dir, resolve_run_dir
from fsray.search.space import parse_space
from fsray.search.store import ResultsStore, check_baseline_entry


def _run(acc: float, mode: str = "no_fs", seed: int | None = None) -> dict:
    run = {"mode": mode, "status": "ok", "failure": None, "token_acc": acc, "loss": 1.0, "seq_acc": acc * acc,
           "best_step": 1, "steps": 1, "tokens": 0, "seconds": 0.0, "curve": [], "learned": None,
           "cached": False}
    return run if seed is None else {**run, "seed": seed}


def _record(seed: int, d: float = 0.01, layer: int = 3) -> dict:
    return build_record("kv_retrieval/query_after", FSConfig(fs_layer_start=layer), seed, _run(0.5),
                        _run(0.5 + d, "prompt_fs"), "selection", "t0")


def _store_file(path: Path, n: int = 4) -> Path:
    for s in range(n):
        append_record(path, _record(s, 0.01 * (s + 1)))
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fsray: error: "), err
    assert "Traceback" not in err[0] and "Errno" not in err[0]
    return err[0]


# ---------------------------------------------------------------------------------------------
# 1. output paths


def test_run_dir_from_a_name_stays_inside_results_dir(tmp_path):
    root = tmp_path / "runs"
    assert resolve_run_dir(None, str(root), "demo") == (root / "demo").resolve()
    for bad in ("../escaped", "", ".", "..", "a/b", "x" * 300):
        with pytest.raises(UsageError, match="name"):
            resolve_run_dir(None, str(root), bad)
    # and the search file refuses such names before any path is made of them
    base = {"name": "x", "trainable": "simulated", "task": {"name": "kv_retrieval"}, "seeds": 3,
            "space": {"fs_layer_start": {"type": "int", "low": 1, "high": 12}}, "simulated": {}}
    for bad in ("../escaped", "", "x" * 300, ".hidden", "a b/c"):
        with pytest.raises(UsageError, match="name"):
            parse_space({**base, "name": bad})
    assert parse_space({**base, "name": "ok.name-1_b"}).name == "ok.name-1_b"


def test_run_dir_refuses_a_file_the_input_and_a_foreign_directory(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("name: x\n")
    with pytest.raises(UsageError, match="search file itself"):
        resolve_run_dir(space_file, "runs", "x", inputs=(space_file,))
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(UsageError, match="is a file"):
        resolve_run_dir(other, "runs", "x")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "summary.json").write_text("{}")   # a name fsray writes, but not fsray's directory
    (foreign / "cat.png").write_bytes(b"\x89PNG")
    with pytest.raises(UsageError, match="not an fsray run directory"):
        check_run_dir(foreign)
    assert (foreign / "summary.json").read_text() == "{}"
    empty = tmp_path / "empty"
    empty.mkdir()
    check_run_dir(empty)            # empty: fine
    check_run_dir(tmp_path / "new")  # missing: fine
    run = tmp_path / "run"
    _store_file(run / "results.jsonl", 1)
    check_run_dir(run)              # an fsray run: fine


def test_run_lock_refuses_a_second_holder_and_a_killed_holder_leaves_it_free(tmp_path):
    import subprocess
    import sys

    lock = RunLock(tmp_path).acquire()
    code = ("import sys; from fsray.paths import RunLock; from fsray.errors import UsageError\n"
            "try:\n RunLock(sys.argv[1]).acquire(); print('took')\n"
            "except UsageError as e: print('refused', e)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert other.stdout.startswith("refused") and f"pid {os.getpid()}" in other.stdout
    lock.release()
    # a holder killed with SIGKILL: the kernel drops its lock, nothing is left stuck
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fsray.paths import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match="in use by another fsray search"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    RunLock(tmp_path).acquire().release()


def test_output_file_os_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="is a directory"):
        check_output_file(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot be written"):
        check_output_file(blocker / "sub" / "out.jsonl")         # a file where a folder goes
    with pytest.raises(UsageError, match="file name too long"):
        check_output_file(tmp_path / ("x" * 300 + ".jsonl"))
    with pytest.raises(UsageError, match="file name too long"):
        check_output_file(tmp_path / ("y" * 300) / "out.jsonl")

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(UsageError, match="read-only file system"):
        check_output_file(tmp_path / "ro" / "out.jsonl")


def test_report_out_never_replaces_an_input(tmp_path, capsys):
    run = tmp_path / "run"
    results = _store_file(run / "results.jsonl")
    before = results.read_bytes()
    for out in (results, run / "results.jsonl", tmp_path / "run" / ".." / "run" / "results.jsonl"):
        assert main(["report", str(run), "--format", "json", "--out", str(out)]) == 2
        assert "one of the inputs" in _one_error_line(capsys)
        assert main(["report", str(results), "--format", "json", "--out", str(out)]) == 2
        assert "one of the inputs" in _one_error_line(capsys)
    assert results.read_bytes() == before
    assert main(["report", str(run), "--format", "json", "--out", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys)
    assert main(["report", str(run), "--format", "json", "--out", str(tmp_path / ("z" * 300))]) == 2
    assert "file name too long" in _one_error_line(capsys)
    good = tmp_path / "report.json"
    assert main(["report", str(run), "--format", "json", "--out", str(good)]) == 0
    assert json.loads(good.read_text()) and not list(tmp_path.glob(".report.json.*"))


def test_train_out_refuses_directories_foreign_files_and_the_config(tmp_path, capsys):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("my notes\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("fs: {alpha_init: -2}\n")
    for out, why in ((tmp_path, "is a directory"), (foreign, "not an fsray results store"),
                     (cfg, "one of the inputs"), (tmp_path / ("q" * 300), "file name too long")):
        args = ["train", "--checkpoint", "none", "--steps", "1", "--out", str(out)]
        if out == cfg:
            args += ["--config", str(cfg)]
        assert main(args) == 2
        assert why in _one_error_line(capsys)
    assert foreign.read_text() == "my notes\n"


# ---------------------------------------------------------------------------------------------
# 2. settings checked with their ranges, duplicate keys


_BASE = {"name": "x", "trainable": "simulated", "task": {"name": "kv_retrieval"}, "seeds": 3,
         "space": {"fs_layer_start": {"type": "int", "low": 1, "high": 12}}, "simulated": {}}


@pytest.mark.parametrize("change, field", [
    ({"objective": {"delta": 2.0}}, "objective.delta"),
    ({"objective": {"delta": 1.0}}, "objective.delta"),
    ({"objective": {"delta": float("nan")}}, "objective.delta"),
    ({"objective": {"interval": "bogus"}}, "objective.interval"),
    ({"seeds": {"count": 10**12}}, "seeds.count"),
    ({"seeds": {"ids": [0, 1, 2**40]}}, "seeds"),
    ({"seeds": {"count": 3, "confirm": 10**9}}, "seeds.confirm"),
    ({"seeds": {"count": 3, "start": -1}}, "seeds.start"),
    ({"search": {"trials": 10**9}}, "search.trials"),
    ({"settle": {"max_seeds_per_config": 10**9}}, "settle.max_seeds_per_config"),
    ({"resources": {"workers": -1}}, "resources.workers"),
])
def test_search_settings_out_of_range_are_one_line(change, field):
    with pytest.raises(UsageError) as err:
        parse_space({**_BASE, **change})
    line = str(err.value)
    assert field in line and "\n" not in line


def test_duplicate_yaml_keys_are_refused_everywhere(tmp_path, capsys):
    from fsray.search.space import load_space

    path = tmp_path / "dup.yaml"
    text = yaml.safe_dump(_BASE) + "seeds: 5\n"
    path.write_text(text)
    assert yaml.safe_load(text)["seeds"] == 5   # what PyYAML alone does: the last one wins
    with pytest.raises(UsageError, match="duplicate key 'seeds'"):
        load_space(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump({**_BASE, "objective": {"delta": 0.01}}).replace(
        "delta: 0.01", "delta: 0.01\n  delta: 0.05"))
    with pytest.raises(UsageError, match=r"line \d+: duplicate key 'delta'"):
        load_space(nested)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("fs:\n  alpha_init: -2\n  alpha_init: -3\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "duplicate key 'alpha_init'" in _one_error_line(capsys)
    assert main(["tune", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "duplicate key 'seeds'" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, needle", [
    (["report", "{run}", "--delta", "2"], "--delta must lie in (0, 1)"),
    (["report", "{run}", "--delta", "inf"], "--delta"),
    (["tune", "{space}", "--top", "-1"], "--top must be >= 1"),
    (["tune", "{space}", "--delta", "1.5"], "objective.min_effect"),
    (["train", "--seeds=-3"], "non-negative"),
    (["train", "--seeds", "0-10000000"], "more than"),
    (["train", "--lr", "inf"], "finite"),
    (["train", "--alpha-init", "nan"], "finite"),
    (["train", "--ray-workers", "-1"], "must be >= 0"),
])
def test_cli_numbers_out_of_range_exit_2(tmp_path, capsys, argv, needle):
    run = tmp_path / "run"
    _store_file(run / "results.jsonl")
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(_BASE))
    argv = [a.format(run=run, space=space) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_report_delta_for_loss_may_exceed_one(tmp_path, capsys):
    run = tmp_path / "run"
    _store_file(run / "results.jsonl")
    assert main(["report", str(run), "--metric", "loss", "--delta", "2", "--format", "json"]) == 0


def test_head_alpha_init_is_a_float_flag():
    import argparse

    from fsray.commands.train import add_arguments, build_inputs

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--fs-variant", "head", "--head-alpha-init", "0.5", "--checkpoint", "none",
                         "--n-layer", "2", "--d-model", "32", "--head-size", "8"])
    _, fs, _ = build_inputs(args)
    assert fs.fs_variant == "head" and fs.head_alpha_init == 0.5 and fs.head_logit_init() == 0.5
    assert p.parse_args([]).fs__head_alpha_init is None
    with pytest.raises(SystemExit):
        p.parse_args(["--head-alpha-init", "inf"])


# ---------------------------------------------------------------------------------------------
# 3. stores that survive damage


def test_a_bad_byte_skips_one_line_and_names_it(tmp_path, capsys):
    path = _store_file(tmp_path / "run" / "results.jsonl", 4)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:20] + b"\xff\xfe" + lines[1][22:]    # one line with bytes that are not UTF-8
    path.write_bytes(b"".join(lines))
    read = read_records(path)
    assert [r["seed"] for r in read.records] == [0, 2, 3] and read.lines == [1, 3, 4]
    assert len(read.problems) == 1 and ":2: not UTF-8 (byte 0xff" in read.problems[0]
    # the report reads the other records and names the line (exit 1: something was skipped)
    assert main(["report", str(tmp_path / "run"), "--format", "json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["summary"][0]["n"] == 3
    assert "results.jsonl:2: not UTF-8" in out.out + out.err


def test_fragments_are_set_aside_by_the_writer_and_nothing_good_is_lost(tmp_path):
    path = _store_file(tmp_path / "results.jsonl", 4)
    good = path.read_bytes().splitlines(keepends=True)
    damaged = good[0] + good[1][:37] + b"\n" + good[2] + b"\xff\xff garbage\n" + good[3] + good[3][:50]
    path.write_bytes(damaged)
    reader = ResultsStore(str(tmp_path), str(tmp_path / "cache"))   # a reader leaves the file alone
    assert path.read_bytes() == damaged and len(reader.problems) == 3
    store = ResultsStore(str(tmp_path), str(tmp_path / "cache"), single_writer=True)
    assert path.read_bytes() == good[0] + good[2] + good[3]         # the good lines, byte for byte
    assert sorted(r["seed"] for r in store.all_records()) == [0, 2, 3]
    aside = (tmp_path / "results.jsonl.damaged").read_bytes().splitlines()
    assert len(aside) == 6 and aside[1] == good[1][:37] and aside[3] == b"\xff\xff garbage"
    assert json.loads(aside[0])["line"] == 2 and "truncated" in json.loads(aside[0])["why"]
    notes = store.take_notes()
    assert len(notes) == 1 and "3 damaged line(s) set aside" in notes[0] and store.take_notes() == []
    # seed 1 has no record any more: it is what a resumed search runs again
    assert store.lookup(_record(1)["config_hash"], 1, "selection") is None
    assert store.append(_record(1)) and read_records(path).problems == []
    # and the run directory reports clean: what was set aside is not read as results
    assert main(["report", str(tmp_path), "--format", "json"]) == 0


# ---------------------------------------------------------------------------------------------
# 6. the baseline cache checked against what it is used for


@pytest.mark.parametrize("content, why", [
    (b"\x00\x01garbage", "not valid JSON"),
    (b'{"fsray_baseline": 1, "key": "k0", "seed": 0, "run": {"token_acc": 0.5}', "not valid JSON"),
    (b"{}", "holds no run"),
    (b"[1, 2]", "not a cache entry"),
    (json.dumps({"fsray_baseline": 1, "key": "k1", "seed": 1, "run": _run(0.4)}).encode(), "key 'k1'"),
    (json.dumps({"fsray_baseline": 1, "key": "k0", "seed": 1, "run": _run(0.4)}).encode(), "seed 1"),
    (json.dumps({"fsray_baseline": 1, "key": "k0", "seed": 0, "run": _run(0.4, seed=5)}).encode(),
     "seed 5's run"),
    (json.dumps({"fsray_baseline": 1, "key": "k0", "seed": 0, "run": _run(0.4, "prompt_fs")}).encode(),
     "not a no_fs"),
    (json.dumps({"fsray_baseline": 1, "key": "k0", "seed": 0,
                 "run": {**_run(0.4), "status": "failed"}}).encode(), "did not finish"),
    (json.dumps(_run(0.4, seed=3)).encode(), "seed 3's run"),            # an old bare entry
])
def test_a_bad_baseline_entry_is_discarded_and_said_once(tmp_path, content, why):
    store = ResultsStore(str(tmp_path / "run"), str(tmp_path / "cache"))
    (tmp_path / "cache" / "k0.json").write_bytes(content)
    assert store.baseline("k0", 0) is None
    notes = store.take_notes()
    assert len(notes) == 1 and why in notes[0] and "trained again" in notes[0]
    assert store.baseline("k0", 0) is None and store.take_notes() == []   # said once
    assert (tmp_path / "cache" / "k0.json.damaged").read_bytes() == content
    store.put_baseline("k0", 0, _run(0.45, seed=0))
    assert store.baseline("k0", 0)["token_acc"] == 0.45 and store.take_notes() == []


def test_good_baseline_entries_pass_their_checks():
    run = _run(0.4, seed=2)
    assert check_baseline_entry({"fsray_baseline": 1, "key": "k", "seed": 2, "run": run}, "k", 2) == (run, None)
    assert check_baseline_entry(run, "k", 2) == (run, None)                    # written before the envelope
    assert check_baseline_entry(_run(0.4), "k", 2) == (_run(0.4), None)        # simulated: no seed field


def test_a_search_retrains_a_damaged_baseline_and_pairs_with_the_right_seed(tmp_path):
    from fsray.search.evaluate import SimulatedRunner, evaluate_config

    space = parse_space({**_BASE, "seeds": {"count": 3}, "simulated": {"noise_sd": 0.01},
                         "baseline_cache": str(tmp_path / "cache")})
    runner = SimulatedRunner(space)
    store = ResultsStore(str(tmp_path / "a"), space.baseline_cache, space.objective.model_dump())
    evaluate_config(space, runner, store, {"fs_layer_start": 4}, [0, 1, 2], race=False)
    truth = {s: store.baseline(runner.baseline_key(s), s)["token_acc"] for s in range(3)}
    cache = Path(space.baseline_cache)
    # seed 1's entry replaced by seed 2's (a copy under the wrong name), seed 0's by garbage
    (cache / f"{runner.baseline_key(1)}.json").write_bytes((cache / f"{runner.baseline_key(2)}.json").read_bytes())
    (cache / f"{runner.baseline_key(0)}.json").write_bytes(b"\xde\xad")
    store2 = ResultsStore(str(tmp_path / "b"), space.baseline_cache, space.objective.model_dump())
    evaluate_config(space, runner, store2, {"fs_layer_start": 5}, [0, 1, 2], race=False)
    got = {r["seed"]: r["baseline"]["token_acc"] for r in store2.all_records()}
    assert got == truth   # each seed paired with its own baseline, retrained where the cache was bad
    assert store2.baselines_trained() == 2 and len(store2.take_notes()) == 2


def test_a_cached_baseline_of_other_data_is_retrained(tmp_path, monkeypatch):
    """The pairing check: a cached entry whose data order (data_hash) is not the FS run's over the
    same steps is set aside and the seed's baseline trained again before the pair is recorded."""
    from fsray.search import simulated
    from fsray.search.evaluate import SimulatedRunner, evaluate_config

    real_base, real_fs = simulated.baseline_run, simulated.fs_run
    monkeypatch.setattr(simulated, "baseline_run", lambda sim, seed, *a: {**real_base(sim, seed, *a), "data_hash": f"d{seed}"})
    monkeypatch.setattr(simulated, "fs_run", lambda sim, cfg, seed, b, *a: {**real_fs(sim, cfg, seed, b, *a),
                                                                         "data_hash": f"d{seed}"})
    space = parse_space({**_BASE, "seeds": {"count": 3}, "baseline_cache": str(tmp_path / "cache")})
    runner = SimulatedRunner(space)
    store = ResultsStore(str(tmp_path / "a"), space.baseline_cache, space.objective.model_dump())
    evaluate_config(space, runner, store, {"fs_layer_start": 4}, [0, 1, 2], race=False)
    entry_path = Path(space.baseline_cache) / f"{runner.baseline_key(1)}.json"
    entry = json.loads(entry_path.read_text())
    entry["run"]["data_hash"] = "other"
    entry_path.write_text(json.dumps(entry))
    store2 = ResultsStore(str(tmp_path / "b"), space.baseline_cache, space.objective.model_dump())
    evaluate_config(space, runner, store2, {"fs_layer_start": 5}, [0, 1, 2], race=False)
    assert {r["seed"]: r["baseline"]["data_hash"] for r in store2.all_records()} == {0: "d0", 1: "d1", 2: "d2"}
    notes = store2.take_notes()
    assert len(notes) == 1 and "data order (other) is not seed 1's (d1)" in notes[0]
    assert store2.baselines_trained() == 1


def test_a_full_disk_during_an_append_leaves_no_fragment(tmp_path, monkeypatch):
    path = _store_file(tmp_path / "results.jsonl", 2)
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        append_record(path, _record(2))
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before and read_records(path).problems == []
    append_record(path, _record(2))
    assert [r["seed"] for r in read_records(path).records] == [0, 1, 2]


def test_non_finite_settings_are_refused_before_anything_is_written(tmp_path, capsys):
    space = {"name": "lr", "task": {"name": "kv_retrieval"}, "seeds": 2, "budget": {"lr": float("inf")},
             "space": {"alpha_init": {"type": "float", "low": -3.0, "high": -1.0}},
             "results_dir": str(tmp_path / "runs")}
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["tune", str(path)]) == 2
    assert "lr" in _one_error_line(capsys).split("error: ", 1)[1]
    assert not (tmp_path / "runs").exists()          # not even the run directory
    sim = {**_BASE, "simulated": {"noise_sd": float("nan")}}
    with pytest.raises(UsageError, match="simulated.noise_sd"):
        parse_space(sim)
    with pytest.raises(UsageError, match="fixed"):
        parse_space({**_BASE, "fixed": {"alpha_init": float("-inf")}})
    cfg = tmp_path / "train.yaml"
    cfg.write_text("budget: {lr: .inf}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "lr" in _one_error_line(capsys)
    assert not (tmp_path / "r.jsonl").exists()
