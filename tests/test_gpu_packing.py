"""Fractional ``gpus_per_worker`` through Ray's own resource requests: on a local Ray instance that
declares one GPU on this CPU machine, 0.25 puts four seed runs in flight at once, 1.0 one. The runs
themselves train on the CPU (the device follows torch.cuda.is_available(), not the Ray resource).

A fresh Python runs it: the suite's shared Ray instance (tests/conftest.py) declares no GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fsray.harness import process_group_backend, worker_resources

SCRIPT = r"""
import json, sys, threading, time
import ray
from fsray.harness import SeedRunHarness
from fsray.trainer import TrainSpec

spec = TrainSpec.model_validate({
    "model": {"n_layer": 1, "d_model": 16, "head_size": 8},
    "budget": {"steps": 20, "batch_size": 8, "eval_every": 20, "warmup": 1},
    "data": {"n_train": 64, "n_val": 8, "eval_batch_size": 8},
    "wkv_backend": "torch",
})
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
out = {}
for fraction, groups, settle in ((0.25, 4, 0.0), (1.0, 2, 5.0)):
    with SeedRunHarness(spec, groups=groups, gpus_per_worker=fraction, storage_path=sys.argv[1],
                        name=f"pack{fraction}", checkpoint_every_s=None) as h:
        expect = min(groups, int(1 / fraction))
        deadline = time.monotonic() + 240
        while len(ray.get(h.dispatcher.stats.remote())["groups"]) < expect and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(settle)  # at 1.0: time for a second group to come up, were the GPU not taken
        alive = len(ray.get(h.dispatcher.stats.remote())["groups"])
        jobs = [(seed, None) for seed in range(groups)]
        results, peak = [], 0
        runner = threading.Thread(target=lambda: results.extend(h.run_many(jobs)))
        runner.start()
        while runner.is_alive():
            peak = max(peak, len(ray.get(h.dispatcher.leases_now.remote())))
            time.sleep(0.02)
        runner.join()
        out[str(fraction)] = {"alive": alive, "peak_in_flight": peak,
                              "status": [r["status"] for r in results]}
print("RESULT " + json.dumps(out))
ray.shutdown()
"""


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
    # ~100 s (the longest here, and why: it is the only proof of packing on this machine): six Ray Train worker groups start (14-20 s of fixed cost each on 2 cores), four at once.
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=500)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["0.25"] == {"alive": 4, "peak_in_flight": 4, "status": ["ok"] * 4}
    assert out["1.0"] == {"alive": 1, "peak_in_flight": 1, "status": ["ok"] * 2}
