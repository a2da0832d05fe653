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
