"""`fsray train` refuses a model-shape flag that its checkpoint overrides (one line naming both
values, exit 2) instead of silently training the checkpoint's shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsray.cli import build_parser, main
from fsray.commands.train import build_inputs

FSRAY = str(Path(sys.executable).parent / "fsray")


def _inputs(*argv):
    return build_inputs(build_parser("train").parse_args(["train", *argv]))


def test_shape_flags_the_embedded_checkpoint_overrides_are_an_error(tmp_path):
    """The issue's case, through the console script: the embedded default is 64 wide."""
    out = tmp_path / "results.jsonl"
    res = subprocess.run([FSRAY, "train", "--d-model", "60", "--head-size", "16", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in res.stderr
    # the flag and its value, and what the checkpoint has instead
    assert "--d-model 60" in err[0] and "d_model 64" in err[0] and "embedded:base" in err[0]
    assert "--head-size" not in err[0].split("would be ignored")[0]   # 16 agrees with the checkpoint
    assert not out.exists() and "fsray train:" not in res.stdout   # nothing was trained


@pytest.mark.parametrize("argv, named", [
    (["--n-layer", "4"], ["--n-layer 4", "n_layer 2"]),
    (["--head-size", "8"], ["--head-size 8", "head_size 16"]),
    (["--n-layer", "3", "--d-model", "128"], ["--n-layer 3", "--d-model 128", "n_layer 2", "d_model 64"]),
    (["--checkpoint", "embedded:base", "--d-model", "32"], ["--d-model 32", "d_model 64"]),
])
def test_every_overridden_shape_flag_is_named_with_the_checkpoint_value(tmp_path, capsys, argv, named):
    assert main(["train", *argv, "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in named), err


def test_config_file_shape_under_a_checkpoint_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"checkpoint": "embedded:base", "n_layer": 6}}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--config model.n_layer 6" in err[0] and "n_layer 2" in err[0]


def test_shape_flags_that_agree_with_the_checkpoint_are_accepted():
    spec, _, _ = _inputs("--n-layer", "2", "--d-model", "64", "--head-size", "16")
    assert spec.model.checkpoint == "embedded:base"


def test_checkpoint_none_trains_the_flags_shape_from_its_init(capsys):
    spec, _, _ = _inputs("--checkpoint", "none", "--n-layer", "3", "--d-model", "32", "--head-size", "8")
    assert spec.model.checkpoint is None
    assert (spec.model.n_layer, spec.model.d_model, spec.model.head_size) == (3, 32, 8)
    # without a checkpoint the shape is checked on its own: 60 is not a multiple of 16
    assert main(["train", "--checkpoint", "none", "--d-model", "60", "--head-size", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "60" in err[0] and "16" in err[0]


def test_ray_workers_train_the_same_records_through_the_harness(ray_local, tmp_path, capsys):
    """`fsray train --ray-workers 1` (fsray.harness.train_paired: one short-lived worker group)
    writes the records the in-process loop writes, one per seed in seed order, equal to float
    rounding (the same process-independent initial weights and data order)."""
    import json
    import math

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
        "model": {"n_layer": 2, "d_model": 32, "head_size": 8, "checkpoint": None},
        "budget": {"steps": 4, "batch_size": 16, "eval_every": 2, "warmup": 1},
        "data": {"n_train": 64, "n_val": 32, "eval_batch_size": 32},
        "wkv_backend": "torch",
        "fs": {"fs_layer_start": 1, "alpha_init": 0.0, "alpha_lr": 1e-2},
        "seeds": [1, 0],
    }))
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(["train", "--config", str(config), "--out", str(local), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--out", str(remote), "--ray-workers", "1"]) == 0
    a, b = ([json.loads(line) for line in p.read_text().splitlines()] for p in (local, remote))
    assert [r["seed"] for r in b] == [r["seed"] for r in a] == [1, 0]
    for ra, rb in zip(a, b):
        assert ra["status"] == rb["status"] == "ok" and ra["config_hash"] == rb["config_hash"]
        for side in ("baseline", "fs"):
            assert ra[side]["mode"] == rb[side]["mode"] and ra[side]["data_hash"] == rb[side]["data_hash"]
            for key in ("token_acc", "loss", "seq_acc"):
                assert math.isclose(ra[side][key], rb[side][key], rel_tol=1e-6, abs_tol=1e-6), (side, key)
