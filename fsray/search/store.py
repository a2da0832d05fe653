"""The results store of a search and the baseline cache, behind one single writer.

``<run>/results.jsonl`` (``analysis.schema``) is both the search's durable output and its cache:
a (config, seed, stage) that has a record is never trained again, which is what makes
``--resume`` after a SIGKILL lose nothing and retrain nothing. Baselines (no_fs runs) live in a
content-addressed cache directory shared by all searches: ``<cache>/<baseline_key>.json``.

In a search the store runs as one Ray actor pinned to the driver's node, so trials on any node of
a cluster append through it and there is exactly one writer of each file. That actor also holds an
exclusive lock on ``<run>/.writer.lock`` for its lifetime: after a SIGKILL of the driver, the old
run's actor can outlive it by a few seconds and still append what its trials finish, so a
``--resume`` waits for that lock (the old writer's exit) before it reads ``results.jsonl``;
otherwise it would miss those records and train their seeds again.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from pathlib import Path

from analysis.schema import append_record, read_records

RESULTS = "results.jsonl"
BASELINE_LOG = "baselines.jsonl"  # which baselines this search trained itself
WRITER_LOCK = ".writer.lock"
WRITER_WAIT_S = 60.0  # how long a new writer waits for an old one to exit


class WriterBusy(RuntimeError):
    """Another live process holds the run directory's writer lock."""


def take_writer_lock(run_dir: Path, wait_s: float = WRITER_WAIT_S):
    """Open and exclusively lock ``<run_dir>/.writer.lock``, waiting up to ``wait_s`` for a previous
    holder to exit; returns the open file (the lock lives as long as it stays open)."""
    fh = open(Path(run_dir) / WRITER_LOCK, "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise WriterBusy(
                    f"{run_dir} is still being written by another fsray process ({holder}) after "
                    f"{wait_s:.0f} s: stop it, or wait for it to finish, then --resume"
                ) from None
            time.sleep(0.2)
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    fh.flush()
    return fh


class ResultsStore:
    def __init__(self, run_dir: str, cache_dir: str, objective: dict | None = None,
                 single_writer: bool = False):
        """single_writer: hold the run directory's writer lock for this object's lifetime (the
        search's store actor does), waiting first for any previous writer to exit."""
        self.objective = objective
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir).expanduser()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._writer_lock = take_writer_lock(self.run_dir) if single_writer else None
        self.path = self.run_dir / RESULTS
        self.records: list[dict] = []
        self.problems: list[str] = []
        self._index: dict[tuple, dict] = {}
        self._running: dict[str, tuple] = {}  # trial_id -> (config, config_hash, seed, stage)
        if self.path.exists():
            read = read_records(self.path)
            self.problems = read.problems
            for rec in read.records:
                self._remember(rec)

    # --- records ---------------------------------------------------------------------------

    @staticmethod
    def _key(config_hash: str, seed: int, stage: str) -> tuple:
        return (config_hash, int(seed), stage)

    def _remember(self, rec: dict) -> None:
        key = self._key(rec["config_hash"], rec["seed"], rec.get("stage", "selection"))
        if key not in self._index:
            self.records.append(rec)
        self._index[key] = rec

    def lookup(self, config_hash: str, seed: int, stage: str) -> dict | None:
        return self._index.get(self._key(config_hash, seed, stage))

    def append(self, rec: dict) -> bool:
        """Append a record unless (config, seed, stage) already has one; True if written."""
        key = self._key(rec["config_hash"], rec["seed"], rec.get("stage", "selection"))
        if key in self._index:
            return False
        append_record(self.path, rec)
        self._remember(rec)
        return True

    def all_records(self) -> list[dict]:
        return list(self.records)

    def incumbent(self, n_full: int) -> float | None:
        """Best lower bound of the mean delta among selection configs done on all seeds."""
        from fsray.search.objective import incumbent_bound
        from fsray.search.space import ObjectiveSection

        groups: dict[str, list[dict]] = {}
        for rec in self.records:
            if rec.get("stage", "selection") == "selection":
                groups.setdefault(rec["config_hash"], []).append(rec)
        return incumbent_bound(groups, n_full, ObjectiveSection(**(self.objective or {})))

    def family_prior(self, config_hash: str, stage: str = "selection"):
        """The borrowed-variance prior racing judges ``config_hash`` with (``objective.family_prior_of``)."""
        from fsray.search.objective import family_prior_of
        from fsray.search.space import ObjectiveSection

        return family_prior_of(self.records, config_hash, stage, ObjectiveSection(**(self.objective or {})))

    # --- trials in flight (to attribute a crash that killed the trial process) ---------------

    def mark_running(self, trial_id: str, config: dict, config_hash: str, seed: int, stage: str):
        self._running[trial_id] = (config, config_hash, int(seed), stage)

    def running(self, trial_id: str) -> tuple | None:
        return self._running.get(trial_id)

    # --- baseline cache ---------------------------------------------------------------------

    def baseline(self, key: str) -> dict | None:
        path = self.cache_dir / f"{key}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # a torn write cannot happen (rename), but never trust a cache blindly

    def put_baseline(self, key: str, seed: int, run: dict) -> None:
        """Write atomically (temp file + rename) and log that this search trained it."""
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(run, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.cache_dir / f"{key}.json")
        with open(self.run_dir / BASELINE_LOG, "a") as fh:
            fh.write(json.dumps({"key": key, "seed": int(seed)}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def baselines_trained(self) -> int:
        path = self.run_dir / BASELINE_LOG
        if not path.exists():
            return 0
        return len({json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()})


def start_store_actor(run_dir: Path, baseline_cache: str | None, objective: dict):
    """The search's one writer: a ``ResultsStore`` Ray actor pinned to this node (so the files land
    in this run directory), holding the run directory's writer lock."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from fsray.errors import UsageError

    # A killed run's store actor can outlive its driver for a few seconds: wait for it here, where a
    # timeout is one clear error, before the new actor takes the lock for good.
    try:
        take_writer_lock(run_dir).close()
    except WriterBusy as exc:
        raise UsageError(str(exc)) from None
    node = ray.get_runtime_context().get_node_id()
    Actor = ray.remote(num_cpus=0, max_concurrency=1)(ResultsStore)
    return Actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        str(run_dir), baseline_cache, objective, single_writer=True)
