"""A seed run resumed from its checkpoint (fsray.storage.RunCheckpoint) equals an uninterrupted one:
weights, FS gates, optimizer, curve and data position all come back."""

from __future__ import annotations

import pytest

from fsray.fsconfig import FSConfig
from fsray.spec import TrainSpec
from fsray.storage import RunCheckpoint
from fsray.trainer import run_mode

SPEC = TrainSpec.model_validate({
    "model": {"n_layer": 2, "d_model": 32, "head_size": 8},
    "budget": {"steps": 12, "batch_size": 16, "eval_every": 3, "warmup": 2},
    "data": {"n_train": 64, "n_val": 32, "eval_batch_size": 32},
})
FS_ON = FSConfig(fs_layer_start=1, alpha_init=0.0, alpha_lr=1e-2, fs_variant="head", fs_input_gate=True)


class Preempted(Exception):
    pass


def _preempt_at(step: int):
    def progress(p: dict) -> None:
        if p["step"] >= step:
            raise Preempted(f"preempted at step {p['step']}")
    return progress


@pytest.mark.parametrize("fs", [None, FS_ON])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, fs):
    whole = run_mode(SPEC, 3, fs)
    ckpt = RunCheckpoint(str(tmp_path / "run"), every_s=0.0)   # save at every evaluation
    with pytest.raises(Preempted):
        run_mode(SPEC, 3, fs, checkpoint=ckpt, progress=_preempt_at(8), log_every=1)
    assert (tmp_path / "run" / RunCheckpoint.FILE).exists()
    resumed = run_mode(SPEC, 3, fs, checkpoint=RunCheckpoint(str(tmp_path / "run"), every_s=0.0))
    assert resumed["resumed_from_step"] == 6          # the last evaluation before the preemption
    for key in ("token_acc", "loss", "seq_acc", "best_step", "steps", "tokens", "curve", "data_hash",
                "init_hash", "status"):
        assert resumed[key] == whole[key], key
    assert not (tmp_path / "run").exists()             # cleared once the run returned


def test_a_run_without_saved_state_starts_from_step_zero(tmp_path):
    out = run_mode(SPEC, 1, None, checkpoint=RunCheckpoint(str(tmp_path / "fresh")))
    assert "resumed_from_step" not in out and out["steps"] == SPEC.budget.steps
