"""A long-lived Ray Train worker pool for seed runs: the fit overhead is paid once per search.

A ``TorchTrainer.fit()`` costs 14-20 s of fixed overhead on a small machine (SPEC §8); a seed run
of the embedded default costs about as much. So instead of a fit per run (or per trial), the search
starts ``slots`` fits up front (one per concurrent trial, each a worker group of
``resources.workers`` workers: DDP within a run when > 1) whose training function loops: take the
next job from a queue actor, run it with ``fsray.trainer.run_mode``, hand the RunResult back.
Trials submit jobs and wait for them; racing stays in the trial, seed by seed.

A worker group that crashes is restarted by Ray Train (FailureConfig); the job it had taken is
requeued when the slot asks for work again, so no job is lost.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import ray

CLOSED = "closed"


class JobQueue:
    """Jobs in, RunResults out; one lease per slot (its in-flight job)."""

    def __init__(self):
        self.pending: deque = deque()
        self.results: dict[int, dict] = {}
        self.leased: dict[int, tuple] = {}  # slot -> job
        self.closed = False
        self.dead: str | None = None
        self.next_id = 0

    def submit(self, seed: int, fs: dict | None) -> int:
        job = (self.next_id, int(seed), fs)
        self.next_id += 1
        if self.dead:
            self.results[job[0]] = {"status": "failed", "failure": self.dead}
        else:
            self.pending.append(job)
        return job[0]

    def abort(self, reason: str) -> None:
        """The pool cannot serve any more: every waiting job fails with ``reason``."""
        self.dead = self.dead or reason
        for job in list(self.pending) + list(self.leased.values()):
            self.results[job[0]] = {"status": "failed", "failure": reason}
        self.pending.clear()
        self.leased.clear()

    def take(self, slot: int):
        if slot in self.leased:  # the slot restarted mid-job: run that job again
            self.pending.appendleft(self.leased.pop(slot))
        if self.closed:
            return CLOSED
        if not self.pending:
            return None
        job = self.pending.popleft()
        self.leased[slot] = job
        return job

    def finish(self, slot: int, job_id: int, result: dict) -> None:
        self.leased.pop(slot, None)
        self.results[job_id] = result

    def result(self, job_id: int) -> dict | None:
        return self.results.pop(job_id, None)

    def close(self) -> None:
        self.closed = True


def _pool_loop(config: dict) -> None:
    """Training function of one pool slot (runs on every worker of its group)."""
    import ray.train
    import torch.distributed as dist

    from fsray.fsconfig import FSConfig
    from fsray.trainer import TrainSpec, run_mode

    spec = TrainSpec.model_validate(config["spec"])
    queue, slot = config["queue"], config["slot"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = None
    if config.get("use_gpu"):
        import ray.train.torch

        device = ray.train.torch.get_device()
    while True:
        job = ray.get(queue.take.remote(slot)) if rank == 0 else None
        if world > 1:  # every rank trains the same job (DDP inside run_mode)
            box = [job]
            dist.broadcast_object_list(box, src=0)
            job = box[0]
        if job == CLOSED:
            return
        if job is None:
            time.sleep(0.05)
            continue
        job_id, seed, fs_dict = job
        fs = FSConfig.model_validate(fs_dict) if fs_dict is not None else None
        try:
            result = run_mode(spec, seed, fs, device=device)
        except Exception as exc:  # noqa: BLE001 - the trial records it as a failure
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result = {"mode": "prompt_fs" if fs else "no_fs", "status": "failed",
                      "failure": f"{type(exc).__name__}: {text}"}
        if rank == 0:
            ray.get(queue.finish.remote(slot, job_id, result))


class WorkerPool:
    """``slots`` long-lived fits serving a JobQueue; ``run(seed, fs)`` blocks for the result."""

    def __init__(self, spec, slots: int, workers: int, use_gpu: bool, storage_path: str):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = ray.get_runtime_context().get_node_id()
        self.queue = ray.remote(num_cpus=0)(JobQueue).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._fit, args=(spec, slot, workers, use_gpu, storage_path),
                             daemon=True, name=f"fsray-pool-{slot}")
            for slot in range(slots)
        ]
        for t in self.threads:
            t.start()

    def _fit(self, spec, slot, workers, use_gpu, storage_path) -> None:
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer

        trainer = TorchTrainer(
            _pool_loop,
            train_loop_config={"spec": spec.model_dump(), "queue": self.queue, "slot": slot,
                               "use_gpu": use_gpu},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers, use_gpu=use_gpu,
                resources_per_worker=None if use_gpu else {"CPU": spec.threads}),
            run_config=ray.train.RunConfig(
                name=f"pool_{slot}_{time.time_ns()}", storage_path=storage_path,
                failure_config=ray.train.FailureConfig(max_failures=3)),
        )
        try:
            trainer.fit()
        except Exception as exc:  # noqa: BLE001 - surfaced to waiting trials
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.errors.append(f"worker pool slot {slot} died: {text}")
            if len(self.errors) == len(self.threads):  # no slot left to serve jobs
                ray.get(self.queue.abort.remote("; ".join(self.errors)))

    def close(self) -> None:
        ray.get(self.queue.close.remote())
        for t in self.threads:
            t.join(timeout=120)


def run_job(queue, seed: int, fs: dict | None, poll_s: float = 0.1, timeout_s: float | None = None) -> dict:
    """Submit one job to the pool's queue and wait for its RunResult (from any process)."""
    job_id = ray.get(queue.submit.remote(seed, fs))
    t0 = time.monotonic()
    while True:
        result = ray.get(queue.result.remote(job_id))
        if result is not None:
            return result
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"seed run {seed} got no result within {timeout_s:.0f} s")
        time.sleep(poll_s)
