"""Every tensor the trainer hands a collective lives on the model's device (NCCL, the GPU runs' backend,
takes device tensors only), and 2-worker DDP equals 1 worker. Two processes on gloo, without Ray; every
collective of torch.distributed is wrapped to record the device of what it is given.

On the CPU the model's device is the CPU; where CUDA is present the same test also runs with the model
on cuda:0 (both ranks on one GPU: gloo takes CUDA tensors too), where a CPU tensor would be caught."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fsray.fsconfig import FSConfig
from fsray.spec import TrainSpec
from fsray.trainer import run_mode

SPEC = TrainSpec.model_validate({
    "model": {"n_layer": 2, "d_model": 32, "head_size": 8},
    "budget": {"steps": 4, "batch_size": 8, "eval_every": 2, "warmup": 1},
    "data": {"n_train": 32, "n_val": 16, "eval_batch_size": 8},
    "wkv_backend": "torch",
})
FS = FSConfig(fs_layer_start=1, alpha_init=0.0, alpha_lr=1e-2)
COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "reduce_scatter", "reduce", "all_gather_into_tensor")


def _worker(rank: int, world: int, store: str, device: str, out: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    seen = []
    for name in COLLECTIVES:
        original = getattr(dist, name)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            seen.append((_name, [str(t.device) for t in tensors]))
            return _original(*args, **kwargs)

        setattr(dist, name, wrapped)
    results = [run_mode(SPEC, 0, fs, device=device) for fs in (None, FS)]
    torch.save({"seen": seen, "results": results}, f"{out}.{rank}")
    dist.destroy_process_group()


DEVICES = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])


@pytest.mark.slow   # ~40 s: two spawned processes importing torch, each training both modes
@pytest.mark.parametrize("device", DEVICES)
def test_collectives_get_tensors_on_the_models_device_and_two_workers_equal_one(device, tmp_path):
    out = str(tmp_path / "out")
    mp.start_processes(_worker, args=(2, str(tmp_path / "store"), device, out), nprocs=2, start_method="spawn")
    got = [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]
    for rank, g in enumerate(got):
        calls = g["seen"]
        # the step's sync (loss normaliser, stop flag) every step, the eval totals every evaluation
        assert len([c for c in calls if c[0] == "all_reduce"]) >= 2 * (SPEC.budget.steps + 2), calls
        wrong = [c for c in calls if any(d != str(torch.device(device)) for d in c[1])]
        assert not wrong, f"rank {rank}: collectives given tensors off the model's device {device}: {wrong}"
    single = [run_mode(SPEC, 0, fs, device=device) for fs in (None, FS)]
    for two, one in zip(got[0]["results"], single):
        assert two["status"] == one["status"] == "ok" and two["steps"] == one["steps"]
        assert two["tokens"] == one["tokens"] and two["data_hash"] == one["data_hash"]
        for c2, c1 in zip(two["curve"], one["curve"], strict=True):
            assert c2[0] == c1[0]
            assert all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) for a, b in zip(c2[1:], c1[1:])), (c2, c1)
