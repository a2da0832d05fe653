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

Damage is survived, never trusted and never spread:

* a line of ``results.jsonl`` that is not a record (a fragment a crash or a full disk left, bytes that
  are not UTF-8) is set aside by the single writer when it opens the store: appended to
  ``results.jsonl.damaged`` with a note of why, and the store rewritten (temp file + rename) with
  every good line as it was; its seed has no record, so the search runs it again.
* a baseline cache entry is an envelope ``{"fsray_baseline": 1, "key", "seed", "run"}``, checked
  against what it is used for before use (its key and seed are the ones asked for, the run is a
  finished no_fs run of that seed with finite metrics); one that fails (garbage bytes, ``{}``,
  another seed's run under this key) is moved to ``<key>.json.damaged`` and retrained, and the store
  keeps one note of it (``take_notes``) for the driver to say.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
import time
from pathlib import Path

from analysis.schema import append_record, read_records
from fsray.records import utc_now

RESULTS = "results.jsonl"
DAMAGED = "results.jsonl.damaged"   # lines set aside, with a note of why
BASELINE_FORMAT = 1
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
        self.notes: list[str] = []   # what the driver should say once (damage set aside)
        self._index: dict[tuple, dict] = {}
        self._running: dict[str, tuple] = {}  # trial_id -> (config, config_hash, seed, stage)
        if self.path.exists():
            read = read_records(self.path)
            self.problems = read.problems
            if read.bad and single_writer:
                self._set_aside(read)
            for rec in read.records:
                self._remember(rec)

    def _set_aside(self, read) -> None:
        """Move the lines that are not records to ``results.jsonl.damaged`` (with why) and rewrite
        the store with the others, byte for byte, atomically: a report of it then reads clean and
        an append never follows a fragment; nothing is deleted."""
        bad = {n for n, _ in read.bad}
        damaged = self.run_dir / DAMAGED
        with open(damaged, "ab") as fh:
            for (n, raw), why in zip(read.bad, read.problems):
                note = json.dumps({"set_aside": utc_now(), "line": n, "why": why}) + "\n"
                fh.write(note.encode() + raw.rstrip(b"\n") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=".results.", suffix=".tmp")
        with os.fdopen(fd, "wb") as out, open(self.path, "rb") as src:
            for n, raw in enumerate(src, 1):
                if n not in bad and raw.strip():
                    out.write(raw if raw.endswith(b"\n") else raw + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        self.notes.append(f"{self.path}: {len(bad)} damaged line(s) set aside in {damaged} "
                          f"({read.problems[0]}); their seeds run again")
        self.problems = []

    def take_notes(self) -> list[str]:
        """The notes not said yet (each is said once)."""
        notes, self.notes = self.notes, []
        return notes

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

    def baseline(self, key: str, seed: int | None = None) -> dict | None:
        """The cached no_fs run under ``key`` (for ``seed`` when given), or None: missing, or an
        entry that fails its checks, which is set aside (``<key>.json.damaged``) and noted once, so
        the caller trains it again."""
        path = self.cache_dir / f"{key}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._discard(path, key, seed, f"cannot be read ({exc.strerror or exc})")
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._discard(path, key, seed, "not valid JSON")
        run, why = check_baseline_entry(entry, key, seed)
        if why is not None:
            return self._discard(path, key, seed, why)
        return run

    def discard_baseline(self, key: str, seed: int | None, why: str) -> None:
        """Set a cache entry aside that its use showed wrong (not this seed's data order)."""
        path = self.cache_dir / f"{key}.json"
        if path.exists():
            self._discard(path, key, seed, why)

    def _discard(self, path: Path, key: str, seed: int | None, why: str) -> None:
        try:
            os.replace(path, path.with_name(path.name + ".damaged"))
        except FileNotFoundError:
            return None   # another process set it aside first
        except OSError:
            pass
        of = "" if seed is None else f" (seed {seed})"
        self.notes.append(f"baseline cache entry {path}{of}: {why}: discarded, trained again")
        return None

    def put_baseline(self, key: str, seed: int, run: dict) -> None:
        """Write atomically (temp file + rename) and log that this search trained it."""
        entry = {"fsray_baseline": BASELINE_FORMAT, "key": key, "seed": int(seed), "run": run}
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh, allow_nan=False)
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
        keys = set()
        for line in path.read_bytes().splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):   # a fragment a crash left: not counted
                continue
        return len(keys)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_baseline_entry(entry, key: str, seed: int | None) -> tuple[dict | None, str | None]:
    """(the run, None) when a cache entry is the finished no_fs run that ``key`` and ``seed`` name,
    else (None, why not). Entries written before the envelope (a bare run) pass when the run is
    well formed and, where it records its seed, of this seed."""
    if not isinstance(entry, dict):
        return None, f"not a cache entry (a JSON {type(entry).__name__})"
    if "fsray_baseline" in entry:
        if entry.get("key") != key:
            return None, f"holds the entry of key {entry.get('key')!r}, not this one"
        if seed is not None and entry.get("seed") != int(seed):
            return None, f"holds seed {entry.get('seed')!r}'s run"
        run = entry.get("run")
    else:
        run = entry
    if not isinstance(run, dict) or not run:
        return None, "holds no run"
    if run.get("mode", "no_fs") != "no_fs":
        return None, f"holds a {run.get('mode')!r} run, not a no_fs baseline"
    if run.get("status") != "ok" or not (_finite(run.get("token_acc")) and _finite(run.get("seq_acc"))):
        return None, "holds a run that did not finish with finite metrics"
    want = entry.get("seed") if "fsray_baseline" in entry else seed
    if want is not None and "seed" in run and run["seed"] != want:
        return None, f"holds seed {run['seed']!r}'s run under seed {want}'s key"
    return run, None


def say_notes(store, say) -> None:
    """Say, once each, what the store set aside (damaged lines, cache entries retrained)."""
    for note in store.take_notes():
        say(f"[tune] {note}")


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
