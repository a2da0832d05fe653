"""Fractional ``gpus_per_worker`` through Ray's own resource requests: on a local Ray instance that
declares one GPU on this CPU machine, 0.25 puts four seed runs in flight at once, 1.0 one. The runs
themselves train on the CPU (the device follows torch.cuda.is_available(), not the Ray resource).

bench/gpu_packing.py measures it, in a fresh Python: the suite's shared Ray instance (tests/conftest.py)
declares no GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fsray.harness import process_group_backend, worker_resources

REPO = Path(__file__).resolve().parents[1]


def test_worker_resources_follow_the_fraction():
    assert worker_resources(2, 0.0) == {"CPU": 2.0}
    assert worker_resources(1, 0.25) == {"CPU": 0.25, "GPU": 0.25}
    assert worker_resources(1, 1.0) == {"CPU": 1.0, "GPU": 1.0}
    assert worker_resources(3, 2.0) == {"CPU": 3.0, "GPU": 2.0}
    assert process_group_backend(False) == "gloo"
    import torch.distributed as dist

    assert process_group_backend(True) == ("cuda:nccl,cpu:gloo" if dist.is_nccl_available() else "gloo")


@pytest.mark.slow
def test_a_quarter_gpu_puts_four_seed_runs_in_flight_and_a_whole_one_one(tmp_path):
    # ~100 s (the longest here, and why: it is the only proof of packing on this machine): six Ray
    # Train worker groups start (14-20 s of fixed cost each on 2 cores), four at once.
    out = tmp_path / "packing.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_packing.py"), "--jobs", "4", "--steps", "20",
                           "--json", str(out)], capture_output=True, text=True, timeout=500)
    assert done.returncode == 0 and out.exists(), done.stdout[-2000:] + done.stderr[-3000:]
    quarter, whole = json.loads(out.read_text())
    assert (quarter["alive"], quarter["peak_in_flight"], quarter["status"]) == (4, 4, ["ok"] * 4)
    assert (whole["alive"], whole["peak_in_flight"], whole["status"]) == (1, 1, ["ok"] * 2)
