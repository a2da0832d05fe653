"""The one Ray Train harness: long-lived worker groups that train seed runs on demand.

A ``TorchTrainer.fit()`` costs 14-20 s of fixed overhead on a small machine (docs/DESIGN.md §6), about as much
as a seed run of the embedded default, so a fit is never paid per run. ``SeedRunHarness`` starts
``groups`` fits up front (one per run that should train at once; each a worker group of ``workers``
Ray Train workers, DDP inside a run when > 1) whose training function asks for a job, trains it with
``fsray.trainer.run_mode`` and hands the RunResult back, until the harness closes.

Jobs go through ``Dispatcher``, an asyncio Ray actor: every wait is an awaited future or a blocking
``ray.get`` (nothing polls, so idle groups, trials and the driver use no CPU). It holds a lease per
group, so a run is never lost:

* a worker group that crashes is restarted by Ray Train (``FailureConfig``); when the restarted group
  asks for work, the run it held is queued again, first in line;
* a group whose node is lost (the node table says it is dead) gives its run back at once, to any
  group that is free (another pool slot, or the lost group restarted where resources allow), at most
  ``max_retries`` times per run; each retry is one line on the terminal (seed, who asked, node);
* when no group has been alive for ``capacity_timeout_s`` while runs wait, those runs fail with a
  message that says so: the search stops cleanly and ``--resume`` continues it (nothing completed is
  lost, the results store is durable).

A group whose fit ends (failures exhausted) is started again by its driver thread, so capacity that
comes back (a replacement node) is used. A seed run saves its state (``fsray.storage.RunCheckpoint``)
under ``<storage>/seed_runs/`` as it trains, so a run given back after a loss resumes from its last
saved evaluation on whichever node takes it, when the storage is one every node sees (a shared path
or an object-store URI).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from typing import Callable, Sequence

import ray

from analysis.schema import mode_name

from .errors import UsageError, first_line
from .fsconfig import FSConfig
from .storage import join_location

CLOSED = "closed"
IDLE = "idle"
NODE_CHECK_S = 1.0          # how often the dispatcher reads the node table while runs are leased
IDLE_WAKE_S = 60.0          # multi-worker groups: rank 0 wakes its peers this often while idle


class Dispatcher:
    """Runs in, RunResults out; a lease per worker group. Use as an async Ray actor."""

    def __init__(self, max_retries: int = 2, capacity_timeout_s: float = 600.0):
        self.max_retries = int(max_retries)
        self.capacity_timeout_s = float(capacity_timeout_s)
        self.pending: deque[dict] = deque()
        self.jobs: dict[int, dict] = {}              # job id -> job (seed, fs, tag, attempts)
        self.futures: dict[int, asyncio.Future] = {}
        self.leases: dict[str, tuple[int, str, int]] = {}   # group -> (job id, node id, pid)
        self.alive: dict[str, str] = {}              # group -> node id of its rank 0
        self.events: asyncio.Queue | None = None
        self.wakeup: asyncio.Event | None = None
        self.closed = False
        self.next_id = 0
        self.done = 0
        self.no_capacity_since: float | None = time.monotonic()
        self._watcher: asyncio.Task | None = None

    def _loop_objects(self) -> None:
        if self.events is None:
            self.events, self.wakeup = asyncio.Queue(), asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    # ---------------------------------------------------------------- callers
    async def submit(self, seed: int, fs, tag: str = "") -> int:
        self._loop_objects()
        job_id, self.next_id = self.next_id, self.next_id + 1
        job = {"id": job_id, "seed": int(seed), "fs": fs, "tag": tag, "attempts": 0}
        self.jobs[job_id] = job
        self.futures[job_id] = asyncio.get_running_loop().create_future()
        if self.closed:
            self._fail(job_id, "the harness is closed")
        else:
            self.pending.append(job)
            self.wakeup.set()
        return job_id

    async def result(self, job_id: int) -> dict:
        self._loop_objects()
        out = await self.futures[job_id]
        self.futures.pop(job_id, None)
        self.jobs.pop(job_id, None)
        return out

    async def next_event(self) -> dict | None:
        """The next thing worth a line on the terminal (a run done, a retry); None once closed."""
        self._loop_objects()
        return await self.events.get()

    def stats(self) -> dict:
        return {"pending": len(self.pending), "leased": len(self.leases), "groups": dict(self.alive),
                "done": self.done}

    def leases_now(self) -> dict:
        return {g: {"job": j, "node": n, "pid": p, "seed": self.jobs[j]["seed"] if j in self.jobs else None}
                for g, (j, n, p) in self.leases.items()}

    # ---------------------------------------------------------------- worker groups
    async def next_job(self, group: str, node: str, pid: int, wait_s: float | None = None):
        """A job for ``group`` (its rank 0 runs on ``node`` as ``pid``), waiting for one; IDLE after
        ``wait_s`` without work, CLOSED when the harness closes."""
        self._loop_objects()
        if group in self.leases:   # the group restarted (Ray Train) while holding a run
            self._requeue(group, "its worker group restarted")
        self.alive[group] = node
        self.no_capacity_since = None
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            if self.closed:
                return CLOSED
            if self.pending:
                job = self.pending.popleft()
                self.leases[group] = (job["id"], node, pid)
                return {"id": job["id"], "seed": job["seed"], "fs": job["fs"]}
            self.wakeup.clear()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                return IDLE

    async def finish(self, group: str, job_id: int, result: dict) -> None:
        self._loop_objects()
        if self.leases.get(group, (None,))[0] == job_id:
            del self.leases[group]
        fut = self.futures.get(job_id)
        if fut is not None and not fut.done():
            fut.set_result(result)
            self.done += 1
            job = self.jobs.get(job_id, {})
            self.events.put_nowait({"kind": "done", "seed": job.get("seed"), "tag": job.get("tag"),
                                    "status": result.get("status"), "mode": result.get("mode"),
                                    "seconds": result.get("seconds")})

    async def group_lost(self, group: str, reason: str) -> None:
        """``group`` can no longer run anything (its fit ended, or its node is gone)."""
        self._loop_objects()
        self.alive.pop(group, None)
        if group in self.leases:
            self._requeue(group, reason)
        if not self.alive and self.no_capacity_since is None:
            self.no_capacity_since = time.monotonic()

    def _requeue(self, group: str, reason: str) -> None:
        job_id, node, _pid = self.leases.pop(group)
        job = self.jobs.get(job_id)
        fut = self.futures.get(job_id)
        if job is None or fut is None or fut.done():
            return
        job["attempts"] += 1
        where = f"{job['tag']} " if job["tag"] else ""
        mode = mode_name(job["fs"])
        if job["attempts"] > self.max_retries:
            self._fail(job_id, f"seed run lost {job['attempts']} times (last: {reason} on node "
                               f"{node[:8]}); no retry left")
            return
        self.events.put_nowait({"kind": "retry", "line":
                                f"seed {job['seed']} ({where}{mode}) lost: {reason} (node {node[:8]}); "
                                f"running it again on another worker group "
                                f"(retry {job['attempts']} of {self.max_retries})"})
        self.pending.appendleft(job)
        self.wakeup.set()

    def _fail(self, job_id: int, failure: str) -> None:
        job = self.jobs.get(job_id, {})
        fut = self.futures.get(job_id)
        if fut is not None and not fut.done():
            fut.set_result({"mode": mode_name(job.get("fs")), "status": "failed",
                            "failure": failure, "lost": True})

    async def _watch(self) -> None:
        """Leases on dead nodes are given back; runs waiting with no capacity for too long fail."""
        while not self.closed:
            await asyncio.sleep(NODE_CHECK_S)
            if self.leases or self.alive:
                nodes = await asyncio.to_thread(ray.nodes)
                dead = {n["NodeID"] for n in nodes if not n.get("Alive")}
                for group, node in list(self.alive.items()):
                    if node in dead:
                        await self.group_lost(group, "its node was lost")
            waiting = bool(self.pending) or any(not f.done() for f in self.futures.values())
            if (waiting and not self.alive and self.no_capacity_since is not None
                    and time.monotonic() - self.no_capacity_since > self.capacity_timeout_s):
                reason = (f"no worker group was alive for {self.capacity_timeout_s:.0f} s "
                          f"(no capacity on the cluster); --resume continues the search")
                for job in list(self.pending):
                    self._fail(job["id"], reason)
                self.pending.clear()
                self.events.put_nowait({"kind": "capacity", "line": reason})
                self.no_capacity_since = time.monotonic()

    async def close(self) -> None:
        self._loop_objects()
        self.closed = True
        for job in list(self.pending):
            self._fail(job["id"], "the harness closed before the run started")
        self.pending.clear()
        self.wakeup.set()
        self.events.put_nowait(None)


# ------------------------------------------------------------------------------- in the worker
def run_key(spec, seed: int, fs: FSConfig | None) -> str:
    """Content key of one seed run (its checkpoint's folder name)."""
    import hashlib
    import json

    blob = json.dumps([spec.model_dump(), int(seed), fs.model_dump() if fs else None], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_seed_job(spec, seed: int, fs: FSConfig | None, device=None, checkpoint=None) -> dict:
    """``run_mode`` that never raises: an exception is a failed RunResult naming it in one line."""
    from .trainer import run_mode

    try:
        return run_mode(spec, seed, fs, device=device, checkpoint=checkpoint)
    except Exception as exc:  # noqa: BLE001 - the caller records it as a failure
        return {"mode": mode_name(fs), "status": "failed",
                "failure": first_line(exc)}


def worker_resources(threads: int, gpus_per_worker: float) -> dict[str, float]:
    """What one Ray Train worker asks Ray for. CPU runs: their threads. GPU runs: the GPU share, and the
    same share of their threads in CPUs: a seed run on a quarter of a GPU is one Python thread feeding
    it a quarter of the time, and GPU nodes have many cores per GPU, so the GPU share is what limits
    how many runs share a node (4 at 0.25, as Ray's own fractional-GPU scheduling places them)."""
    if gpus_per_worker <= 0:
        return {"CPU": float(threads)}
    return {"CPU": float(threads) * min(gpus_per_worker, 1.0), "GPU": float(gpus_per_worker)}


def process_group_backend(use_gpu: bool) -> str:
    """NCCL for the CUDA tensors of GPU runs, with gloo beside it for any CPU tensor a collective is given
    (``broadcast_object_list`` of idle workers, say); gloo alone where this torch has no NCCL (a CPU
    build driving fake or remote GPU resources)."""
    import torch.distributed as dist

    return "cuda:nccl,cpu:gloo" if use_gpu and dist.is_nccl_available() else "gloo"


def _group_loop(config: dict) -> None:
    """Training function of one worker group (runs on every worker of the group)."""
    import ray.train
    import torch
    import torch.distributed as dist

    from .spec import TrainSpec

    spec = TrainSpec.model_validate(config["spec"])
    dispatcher, group = config["dispatcher"], config["group"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node = ray.get_runtime_context().get_node_id()
    device = None
    # The device follows what the worker can use, not what was asked of Ray: a GPU resource declared
    # on a CPU machine (tests, a mislabelled node) trains on the CPU instead of failing on CUDA.
    if config.get("use_gpu") and torch.cuda.is_available():
        import ray.train.torch

        device = ray.train.torch.get_device()
    wait_s = None if world == 1 else IDLE_WAKE_S
    while True:
        job = ray.get(dispatcher.next_job.remote(group, node, os.getpid(), wait_s)) if rank == 0 else None
        if world > 1:   # every rank trains the same job (DDP inside run_mode)
            box = [job]
            dist.broadcast_object_list(box, src=0)
            job = box[0]
        if job == CLOSED:
            return
        if job == IDLE:
            continue
        fs = job["fs"]
        checkpoint = None
        if config.get("checkpoints"):   # resumable: a run lost with its node continues from here
            from .storage import RunCheckpoint

            checkpoint = RunCheckpoint(join_location(config["checkpoints"], run_key(spec, job["seed"], fs)),
                                       every_s=config["checkpoint_every_s"])
        result = run_seed_job(spec, job["seed"], fs, device=device, checkpoint=checkpoint)
        result["node"] = node   # where it ran (a run-time field, like its seconds)
        if rank == 0:
            ray.get(dispatcher.finish.remote(group, job["id"], result))


# ------------------------------------------------------------------------------- the driver side
class HarnessClient:
    """Picklable handle for whoever submits runs: the driver, Tune trials, tests."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def submit(self, seed: int, fs: FSConfig | None, tag: str = "") -> int:
        if fs is not None and not isinstance(fs, FSConfig):
            raise UsageError(f"seed {seed}: expected an FSConfig or None, got {type(fs).__name__}")
        # the FSConfig itself travels (pickled by Ray): built once from the search, never rebuilt
        return ray.get(self.dispatcher.submit.remote(int(seed), fs, tag))

    def result(self, job_id: int) -> dict:
        return ray.get(self.dispatcher.result.remote(job_id))

    def run(self, seed: int, fs: FSConfig | None, tag: str = "") -> dict:
        return self.result(self.submit(seed, fs, tag))

    def run_many(self, jobs: Sequence[tuple[int, FSConfig | None]], tag: str = "") -> list[dict]:
        """Every job submitted at once (free groups share them out); results in job order."""
        ids = [self.submit(seed, fs, tag) for seed, fs in jobs]
        return ray.get([self.dispatcher.result.remote(i) for i in ids])


class SeedRunHarness(HarnessClient):
    """``groups`` long-lived Ray Train worker groups serving seed runs of ``spec``.

    Use as a context manager (closing ends the fits). ``on_event(event)`` is called in a driver thread
    for each finished run (``kind`` done) and each retry or capacity message (``kind`` retry /
    capacity, with a ready ``line``).
    """

    def __init__(self, spec, groups: int = 1, workers: int = 1, use_gpu: bool = False,
                 storage_path: str | None = None, name: str = "fsray", max_retries: int = 2,
                 capacity_timeout_s: float = 600.0, group_restarts: int = 2,
                 on_event: Callable[[dict], None] | None = None, checkpoint_every_s: float | None = 300.0,
                 gpus_per_worker: float | None = None):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .spec import TrainSpec

        if isinstance(spec, dict):
            spec = TrainSpec.model_validate(spec)
        if groups < 1 or workers < 1:
            raise UsageError(f"groups and workers must be >= 1, got {groups} and {workers}")
        if spec.budget.batch_size < workers:
            raise UsageError(f"batch_size {spec.budget.batch_size} is smaller than workers {workers}")
        # gpus_per_worker (a fraction packs several seed runs on one GPU) implies use_gpu; use_gpu alone
        # is one whole GPU per worker, as before.
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if use_gpu else 0.0
        if gpus_per_worker < 0 or (gpus_per_worker > 1 and gpus_per_worker != int(gpus_per_worker)):
            raise UsageError(f"gpus_per_worker must be a fraction of one GPU or a whole number, got {gpus_per_worker}")
        self.gpus_per_worker = float(gpus_per_worker)
        use_gpu = self.gpus_per_worker > 0
        self.spec, self.workers, self.use_gpu = spec, workers, use_gpu
        self.storage_path = storage_path or os.path.join(os.path.expanduser("~"), ".cache", "fsray", "ray_train")
        self.name, self.group_restarts = name, group_restarts
        # Seed-run checkpoints live beside Ray Train's state, in the same storage (a URI on a
        # cluster, so that any node can resume a run); None turns them off.
        self.checkpoint_every_s = checkpoint_every_s
        node = ray.get_runtime_context().get_node_id()
        actor = ray.remote(num_cpus=0)(Dispatcher).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        super().__init__(actor.remote(max_retries, capacity_timeout_s))
        self._closing = threading.Event()
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._serve, args=(f"g{k}",), daemon=True,
                                          name=f"fsray-group-{k}") for k in range(groups)]
        if on_event is not None:
            self._threads.append(threading.Thread(target=self._events, args=(on_event,), daemon=True,
                                                  name="fsray-events"))
        for t in self._threads:
            t.start()

    def _trainer(self, group: str, attempt: int):
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer

        return TorchTrainer(
            _group_loop,
            train_loop_config={"spec": self.spec.model_dump(), "dispatcher": self.dispatcher,
                               "group": group, "use_gpu": self.use_gpu,
                               "checkpoints": None if self.checkpoint_every_s is None
                               else join_location(self.storage_path, "seed_runs"),
                               "checkpoint_every_s": self.checkpoint_every_s},
            torch_config=TorchConfig(backend=process_group_backend(self.use_gpu)),
            scaling_config=ray.train.ScalingConfig(
                num_workers=self.workers, use_gpu=self.use_gpu,
                resources_per_worker=worker_resources(self.spec.threads, self.gpus_per_worker)),
            run_config=ray.train.RunConfig(
                name=f"{self.name}_{group}_{attempt}_{time.time_ns()}", storage_path=self.storage_path,
                failure_config=ray.train.FailureConfig(max_failures=self.group_restarts)),
        )

    def _serve(self, group: str) -> None:
        """Keep one worker group up: a fit that ends in failure is started again while open."""
        attempt = 0
        while not self._closing.is_set():
            try:
                self._trainer(group, attempt).fit()
                reason = "its fit ended"
            except Exception as exc:  # noqa: BLE001 - recorded; the group is started again
                reason = f"its fit failed: {first_line(exc)}"
                self.errors.append(f"worker group {group}: {reason}")
            if self._closing.is_set():
                return
            try:
                ray.get(self.dispatcher.group_lost.remote(group, reason))
            except Exception:  # noqa: BLE001 - the dispatcher is gone: the harness is closing
                return
            attempt += 1
            self._closing.wait(min(30.0, 2.0 * attempt))

    def _events(self, on_event) -> None:
        while True:
            try:
                event = ray.get(self.dispatcher.next_event.remote())
            except Exception:  # noqa: BLE001 - the dispatcher is gone
                return
            if event is None:
                return
            try:
                on_event(event)
            except Exception:  # noqa: BLE001 - a progress display never stops the harness
                pass

    def close(self, wait: bool = True) -> None:
        """End the fits; ``wait=False`` (a search stopped by a signal) does not wait for them."""
        self._closing.set()
        if not wait:
            self.dispatcher.close.remote()
            return
        try:
            ray.get(self.dispatcher.close.remote())
        except Exception:  # noqa: BLE001 - already gone
            pass
        for t in self._threads:
            t.join(timeout=120)

    def __enter__(self) -> "SeedRunHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train_paired(spec, seeds: Sequence[int], fs: FSConfig | None,
                 on_seed: Callable[[int, dict, dict | None], None], workers: int = 1,
                 storage_path: str | None = None) -> None:
    """The paired runs of ``fsray train --ray-workers``: every run of ``seeds`` (no_fs, and prompt_fs
    unless ``fs`` is None) submitted at once to one short-lived worker group of ``workers`` workers
    (DDP inside each run); ``on_seed(seed, baseline, fs_run)`` gets each seed's runs in seed order,
    as soon as both are back. Starts (or joins, with RAY_ADDRESS) Ray when it is not running."""
    from .cluster import start_ray

    started = start_ray()
    try:
        with SeedRunHarness(spec, groups=1, workers=workers, name="train", storage_path=storage_path) as harness:
            modes = (None,) if fs is None else (None, fs)
            jobs = {s: [harness.submit(s, m) for m in modes] for s in seeds}
            for s in seeds:
                runs = [harness.result(j) for j in jobs[s]]
                on_seed(s, runs[0], runs[1] if fs is not None else None)
    finally:
        if started:
            ray.shutdown()


__all__ = ["Dispatcher", "HarnessClient", "SeedRunHarness", "run_seed_job", "train_paired", "CLOSED"]
