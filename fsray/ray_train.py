"""Run lists of seed runs through ONE Ray Train ``TorchTrainer`` fit.

A fit costs 14-20 s of fixed overhead on a small machine (SPEC §8), more than a tiny seed run, so
one fit (one worker group) trains a whole list of ``(seed, FSConfig | None)`` jobs in order. Each
finished RunResult is reported with a checkpoint holding every result so far: Train V2 only keeps
metrics that come with a checkpoint, and a preempted or crashed fit (FailureConfig retries) restarts
the worker group from that checkpoint, keeping the completed jobs and re-running the current one.

With N workers each job trains data-parallel (DDP over gloo on CPU, nccl on GPU); see
``fsray.trainer`` for how the batches are split so the result does not depend on N.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import RunFailed, UsageError
from .fsconfig import FSConfig
from .trainer import TrainSpec

RESULTS_FILE = "results.json"
Job = tuple[int, FSConfig | None]


def _job_payload(jobs: Sequence[Job]) -> list[list]:
    out = []
    for seed, fs in jobs:
        if fs is not None and not isinstance(fs, FSConfig):
            raise UsageError(f"job for seed {seed}: expected an FSConfig or None, got {type(fs).__name__}")
        out.append([int(seed), fs.model_dump() if fs is not None else None])
    return out


def _load_results(checkpoint) -> list[dict]:
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / RESULTS_FILE).read_text())


def _train_loop(config: dict) -> None:
    """The per-worker training function: run the jobs not yet completed, report each one."""
    import ray.train
    import torch.distributed as torch_dist

    from .trainer import run_mode

    spec = TrainSpec.model_validate(config["spec"])
    stop_rule = config.get("stop_rule")
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    results = _load_results(ray.train.get_checkpoint())
    device = None
    if config.get("use_gpu"):
        import ray.train.torch

        device = ray.train.torch.get_device()

    fault = config.get("fault_after_jobs")
    for k, (seed, fs_dict) in enumerate(config["jobs"]):
        if k < len(results):
            continue   # completed before a restart
        if stop_rule is not None and stop_rule(list(results)):
            break
        if fault is not None and k == fault and not Path(config["fault_marker"]).exists():
            # Fault injection for the resume test: crash once, after `fault` jobs were reported.
            if torch_dist.is_initialized():
                torch_dist.barrier()
            if rank == 0:
                Path(config["fault_marker"]).write_text("crashed once")
            raise RuntimeError(f"injected fault before job {k}")
        fs = FSConfig.model_validate(fs_dict) if fs_dict is not None else None
        result = run_mode(spec, seed, fs, device=device)
        result["job"] = k
        results.append(result)
        metrics = {"jobs_done": len(results), "job": k, "seed": seed, "mode": result["mode"],
                   "status": result["status"], "token_acc": result["token_acc"],
                   "seq_acc": result["seq_acc"], "seconds": result["seconds"]}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / RESULTS_FILE).write_text(json.dumps(results))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"jobs_{len(results):05d}")
        else:
            ray.train.report(metrics, checkpoint=None)


def fit_runs(spec: TrainSpec, jobs: Sequence[Job], num_workers: int = 1, use_gpu: bool = False,
             storage_path: str | os.PathLike | None = None, name: str | None = None,
             stop_rule: Callable[[list[dict]], bool] | None = None, max_failures: int = 2,
             resume_from=None, fault_after_jobs: int | None = None) -> list[dict]:
    """Run ``jobs`` (each ``(seed, fs or None)``) in order in one TorchTrainer fit; return RunResults.

    ``stop_rule(results_so_far) -> bool`` (picklable) is asked before each job; True ends the fit early
    (the tuner races seeds with it). The returned list is in job order and may be shorter than
    ``jobs`` when the stop rule fired. ``fault_after_jobs`` crashes the fit once before that job
    (testing the checkpoint resume).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if isinstance(spec, dict):
        spec = TrainSpec.model_validate(spec)
    if num_workers < 1:
        raise UsageError(f"num_workers must be >= 1, got {num_workers}")
    if spec.budget.batch_size < num_workers:
        raise UsageError(f"batch_size {spec.budget.batch_size} is smaller than num_workers {num_workers}")
    payload = _job_payload(jobs)
    if not payload:
        return []
    storage = Path(storage_path).resolve() if storage_path else Path(tempfile.gettempdir()) / "fsray_ray_train"
    name = name or f"fit_{os.getpid()}_{abs(hash(json.dumps(payload))) % 10**8:08d}"
    config: dict[str, Any] = {"spec": spec.model_dump(), "jobs": payload, "stop_rule": stop_rule,
                              "use_gpu": use_gpu}
    if fault_after_jobs is not None:
        config |= {"fault_after_jobs": fault_after_jobs,
                   "fault_marker": str(storage / f"{name}.fault_marker")}
        storage.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": spec.threads}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)),
        resume_from_checkpoint=resume_from,
    )
    try:
        result = trainer.fit()
    except Exception as exc:   # TrainingFailedError and friends: one line for the caller
        raise RunFailed(f"Ray Train fit {name!r} failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
    return _load_results(result.checkpoint)
