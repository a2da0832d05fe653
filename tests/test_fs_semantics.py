"""Records say which FS semantics made them: records of the old input gate are reported apart and a
resumed search refuses to pool them with new ones (issue: FS parity with the researchers' code)."""

from __future__ import annotations

import json

import pytest

from analysis.loaders import load
from analysis.schema import FS_SEMANTICS, append_record, semantics_mismatch
from fsray.errors import UsageError
from fsray.fsconfig import FSConfig, config_hash
from fsray.search.driver import prepare_run_dir
from fsray.search.space import SearchSpace
from test_search_tune import _space_dict


def record(cfg: FSConfig, seed: int, d: float, semantics: int | None) -> dict:
    run = lambda acc, mode: {"mode": mode, "status": "ok", "token_acc": acc, "loss": 1.0, "seq_acc": acc}  # noqa: E731
    rec = {"schema": "fsray.paired/1", "task": "kv", "config": cfg.model_dump(),
           "config_hash": config_hash(cfg), "config_label": cfg.label(), "seed": seed,
           "stage": "selection", "status": "ok", "baseline": run(0.5, "no_fs"),
           "fs": run(0.5 + d, "prompt_fs")}
    if semantics is not None:
        rec["fs_semantics"] = semantics
    return rec


def test_only_old_input_gate_records_changed_meaning():
    gate, head, plain = (FSConfig(fs_input_gate=True), FSConfig(fs_variant="head", head_alpha_init=0.0),
                         FSConfig())
    assert semantics_mismatch(record(gate, 0, 0.1, None)) is not None       # version 1 (no field)
    assert semantics_mismatch(record(gate, 0, 0.1, 1)) is not None
    assert semantics_mismatch(record(gate, 0, 0.1, FS_SEMANTICS)) is None
    assert semantics_mismatch(record(head, 0, 0.1, None)) is None            # explicit start still means the same
    assert semantics_mismatch(record(plain, 0, 0.1, None)) is None
    assert "unknown" in semantics_mismatch(record(gate, 0, 0.1, 99))


def test_report_keeps_old_input_gate_records_apart(tmp_path):
    path = tmp_path / "results.jsonl"
    gate = FSConfig(fs_input_gate=True)
    for seed in range(3):
        append_record(path, record(gate, seed, +0.2, None))          # old semantics: +0.2
        append_record(path, record(gate, seed + 10, -0.1, FS_SEMANTICS))  # new semantics: -0.1
    loaded = load([path])
    groups = loaded.df.groupby("config")["d_acc"].agg(["count", "mean"])
    assert len(groups) == 2
    old = groups.loc[[g for g in groups.index if "[FS semantics 1]" in g][0]]
    new = groups.loc[[g for g in groups.index if "[FS semantics" not in g][0]]
    assert old["count"] == 3 and old["mean"] == pytest.approx(0.2)
    assert new["count"] == 3 and new["mean"] == pytest.approx(-0.1)
    assert any("older FS semantics" in n for n in loaded.notes)


def test_resume_refuses_a_run_with_old_input_gate_records(tmp_path):
    space = SearchSpace.model_validate(_space_dict(tmp_path))
    run_dir = prepare_run_dir(space, str(tmp_path / "run"), resume=False)
    append_record(run_dir / "results.jsonl", record(FSConfig(), 0, 0.0, None))  # harmless old record
    assert prepare_run_dir(space, str(run_dir), resume=True) == run_dir
    append_record(run_dir / "results.jsonl", record(FSConfig(fs_input_gate=True), 1, 0.0, None))
    before = (run_dir / "results.jsonl").read_bytes()
    with pytest.raises(UsageError, match="meant something else"):
        prepare_run_dir(space, str(run_dir), resume=True)
    assert (run_dir / "results.jsonl").read_bytes() == before
    assert json.loads(before.splitlines()[-1])["config"]["fs_input_gate"] is True
