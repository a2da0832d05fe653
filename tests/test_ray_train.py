"""One Ray Train fit runs a list of seed runs: 1 and 2 CPU workers match the in-process trainer,
a crashed fit resumes from its last checkpoint, and a stop rule ends the list early."""

from __future__ import annotations

import math
import sys

import pytest

from fsray.fsconfig import FSConfig
from fsray.ray_train import fit_runs
from fsray.trainer import TrainSpec, run_mode

pytestmark = pytest.mark.slow

SPEC = TrainSpec.model_validate({
    "model": {"n_layer": 2, "d_model": 32, "head_size": 8},
    "budget": {"steps": 4, "batch_size": 16, "eval_every": 2, "warmup": 1},
    "data": {"n_train": 64, "n_val": 32, "eval_batch_size": 32},
    "wkv_backend": "torch",
})
FS_ON = FSConfig(fs_layer_start=1, alpha_init=0.0, alpha_lr=1e-2)


def _close(a: dict, b: dict, tol: float) -> None:
    assert a["mode"] == b["mode"] and a["status"] == b["status"] == "ok"
    assert (a["steps"], a["tokens"], a["init_hash"], a["data_hash"]) == (b["steps"], b["tokens"], b["init_hash"], b["data_hash"])
    for ca, cb in zip(a["curve"], b["curve"], strict=True):
        assert ca[0] == cb[0]
        assert all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(ca[1:], cb[1:]))


def stop_after_one(results: list[dict]) -> bool:
    return len(results) >= 1


# Ray workers cannot import this test module: ship the stop rule by value.
ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_one_worker_runs_every_job_and_resumes_after_a_crash(ray_local, tmp_path):
    jobs = [(0, None), (0, FS_ON)]
    got = fit_runs(SPEC, jobs, num_workers=1, storage_path=tmp_path, name="one", fault_after_jobs=1)
    assert [r["job"] for r in got] == [0, 1]
    assert (tmp_path / "one.fault_marker").exists()   # the fault fired and the fit recovered
    for r, (seed, fs) in zip(got, jobs):
        _close(r, run_mode(SPEC, seed, fs), tol=1e-6)


def test_two_workers_match_the_in_process_run_and_stop_rule_ends_early(ray_local, tmp_path):
    got = fit_runs(SPEC, [(1, FS_ON), (2, None)], num_workers=2, storage_path=tmp_path, name="two",
                   stop_rule=stop_after_one)
    assert len(got) == 1   # the rule saw one finished job and ended the fit
    _close(got[0], run_mode(SPEC, 1, FS_ON), tol=1e-4)
