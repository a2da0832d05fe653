"""Evaluating one FS configuration over seeds: cache lookups, seed runs, records, racing.

One trial of the search = ``evaluate_config``. The same function confirms the winner on fresh seeds
(stage "confirmation", no racing). Seed runs come from a runner:

* ``SimulatedRunner``: the known effect surface of ``fsray.search.simulated``; no Ray Train.
* ``RealRunner``: the paired trainer on the search's Ray Train worker groups (``fsray.harness``):
  baselines are submitted all at once and shared by every candidate (cached on disk across
  searches); a trial's first ``racing.min_seeds`` FS runs go out together, the rest seed by seed so
  racing can stop a hopeless configuration early. Each finished seed's record is appended at once.

Both runners read the model's depth once (for deciding no-op configurations) and build records with
``fsray.records.build_record``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import ray

from analysis.schema import task_label
from fsray.errors import CapacityLost, RunFailed, UsageError, first_line
from fsray.fsconfig import FSConfig, config_hash
from fsray.records import build_record
from fsray.search import objective as obj
from fsray.search.space import SearchSpace


class StoreClient:
    """Synchronous, picklable handle on the store actor (usable from the driver, trials, workers)."""

    def __init__(self, actor):
        self.actor = actor

    def __getattr__(self, name):
        if name.startswith("__") or name == "actor":  # unpickling probes these before __init__
            raise AttributeError(name)
        method = getattr(self.actor, name)
        return lambda *a, **k: ray.get(method.remote(*a, **k))


def _finite_run(run: dict | None) -> bool:
    if run is None:
        return False
    return all(isinstance(run.get(k), (int, float)) and math.isfinite(run[k])
               for k in ("token_acc", "seq_acc"))


def _unpaired(base: dict | None, run: dict | None) -> bool:
    """A cached baseline whose data order differs from the FS run's over the same steps."""
    if not base or not run or not base.get("cached"):
        return False
    hashes = base.get("data_hash"), run.get("data_hash")
    return None not in hashes and base.get("steps") == run.get("steps") and hashes[0] != hashes[1]


def _checked_depth(space: SearchSpace, depth: int, source: str) -> int:
    """The model's depth, read once; a search file that says otherwise is an error."""
    if space.n_layer is not None and space.n_layer != depth:
        raise UsageError(f"n_layer: the search file says {space.n_layer}, but {source} has {depth} layers")
    return depth


# ---------------------------------------------------------------------------------------------
# runners


class SimulatedRunner:
    def __init__(self, space: SearchSpace, n_layer: int | None = None):
        self.space = space
        self.sim = space.simulated
        self.n_layer = n_layer or _checked_depth(space, self.sim.n_layer, "the simulated section")
        self.task = task_label(space.task.name, space.task.options)

    def baseline_key(self, seed: int) -> str:
        from fsray.search.simulated import baseline_key

        return baseline_key(self.sim, seed, self.space.task.options)

    def train_baselines(self, seeds: list[int]) -> dict[int, dict]:
        from fsray.search.simulated import baseline_run

        return {s: baseline_run(self.sim, s, self.space.task.options) for s in seeds}

    def make_record(self, cfg: FSConfig, seed: int, baseline, fs_run, stage, trial_id,
                    noop_reason=None, failure=None) -> dict:
        context = {"baseline_key": self.baseline_key(seed), "model": {"simulated": True},
                   "code_version": "simulated", "task_options": dict(self.space.task.options)}
        return build_record(self.task, cfg, seed, baseline, fs_run, stage, trial_id, noop_reason,
                            failure, context)

    def fs_runs(self, cfg: FSConfig, seeds: list[int], baselines: dict[int, dict],
                on_run: Callable[[int, dict | None, str | None], bool], trial_id: str | None = None,
                race: bool = True) -> None:
        """Train the FS run of each seed in order; ``on_run(seed, run, failure)`` returns True to stop."""
        from fsray.search.simulated import fs_run

        for seed in seeds:
            try:
                run, failure = fs_run(self.sim, cfg, seed, baselines[seed], self.space.task.options), None
            except Exception as exc:  # noqa: BLE001 - any crash of a seed run is a recorded failure
                run, failure = None, first_line(exc)
            if on_run(seed, run, failure):
                return


class RealRunner:
    """Seed runs on the search's Ray Train worker groups, through a ``fsray.harness`` client."""

    def __init__(self, space: SearchSpace, client=None, n_layer: int | None = None):
        from fsray.spec import TrainSpec

        self.space = space
        self.client = client
        self.known_keys: dict[int, str] = {}
        # threads = the CPUs a worker holds (the harness reserves spec.threads CPUs per worker)
        threads = max(1, int(space.resources.cpus_per_worker))
        raw = {"task": space.task.model_dump(), "model": space.model, "budget": space.budget,
               "data": space.data, "threads": threads, "precision": space.precision}
        if space.base == "embedded_default":
            from fsray.spec import embedded_default_spec

            order = space.task.options.get("order", "query_after")
            base = embedded_default_spec(order).model_dump()
            if space.task.name != base["task"]["name"]:
                raise UsageError(f"task.name: base embedded_default trains {base['task']['name']!r}, "
                                 f"not {space.task.name!r}")
            raw = _merged(base, raw)
        self.spec = TrainSpec.model_validate(raw)
        self.n_layer = n_layer or self._read_depth()

    def _read_depth(self) -> int:
        model = self.spec.model
        if model.checkpoint is None:
            return _checked_depth(self.space, model.n_layer, "model.n_layer")
        from fsray.checkpoint import read_config
        from fsray.spec import resolve_checkpoint

        path = resolve_checkpoint(model.checkpoint)
        return _checked_depth(self.space, read_config(path).n_layer, f"checkpoint {path.name}")

    def baseline_key(self, seed: int) -> str:
        # The driver's keys win: a trial process that imported a different code version must
        # still find the baselines the driver trained for this search (never retrain them).
        if int(seed) in self.known_keys:
            return self.known_keys[int(seed)]
        from fsray.precision import resolve
        from fsray.spec import baseline_key

        # auto resolves on the workers' device: bf16 where the search gives them GPUs
        device = "cuda" if self.space.resources.gpus_per_worker > 0 else "cpu"
        return baseline_key(self.spec, seed, resolve(self.spec.precision, device))

    def train_baselines(self, seeds: list[int]) -> dict[int, dict]:
        """All missing baselines at once: the free worker groups share them out."""
        return dict(zip(seeds, self.client.run_many([(s, None) for s in seeds], tag="baseline")))

    def make_record(self, cfg, seed, baseline, fs_run, stage, trial_id, noop_reason=None,
                    failure=None) -> dict:
        from fsray.trainer import make_record

        return make_record(self.spec, cfg, seed, baseline, fs_run, stage, trial_id,
                           noop_reason=noop_reason, failure=failure)

    def fs_runs(self, cfg, seeds, baselines, on_run, trial_id: str | None = None, race: bool = True) -> None:
        """Racing cannot stop a config before its first look, so those seeds go out at once (free
        groups take them); the rest go seed by seed, racing between them. Without racing (or when
        it could never act) every seed goes out at once."""
        from analysis.sequential import MIN_SEEDS

        tag = f"trial {trial_id}" if trial_id else ""
        first_look = max(MIN_SEEDS, self.space.racing.min_seeds)
        can_race = race and self.space.racing.enabled and len(seeds) > first_look
        first = list(seeds[: first_look if can_race else len(seeds)])
        ids = [self.client.submit(s, cfg, tag) for s in first]
        for seed, job in zip(first, ids):
            if _deliver(seed, self.client.result(job), on_run):
                return
        for seed in seeds[len(first):]:
            if _deliver(seed, self.client.run(seed, cfg, tag), on_run):
                return


def _deliver(seed, run, on_run) -> bool:
    failure = None if run.get("status") == "ok" else (run.get("failure") or "failed")
    return on_run(seed, run, failure)


def _merged(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s fields replacing it, dicts merged recursively."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def make_runner(space: SearchSpace, client=None, n_layer: int | None = None):
    if space.trainable == "simulated":
        return SimulatedRunner(space, n_layer)
    return RealRunner(space, client, n_layer)


# ---------------------------------------------------------------------------------------------
# baselines


# Baselines being trained by this process, by key: two callers that need the same baseline at once
# (the settling rounds of several configurations, a selection's trials in one process) share one run.
_IN_FLIGHT: dict[str, Future] = {}
_IN_FLIGHT_LOCK = threading.Lock()


def ensure_baselines(runner, store: StoreClient, seeds: list[int]) -> dict[int, dict]:
    """Cached no_fs runs of ``seeds``; the missing ones are trained together and cached (a baseline
    another caller is already training is waited for, not trained twice)."""
    have = {s: store.baseline(runner.baseline_key(s), s) for s in seeds}
    missing = [s for s, run in have.items() if run is None]
    mine, theirs = [], {}
    with _IN_FLIGHT_LOCK:
        for s in missing:
            key = runner.baseline_key(s)
            if key in _IN_FLIGHT:
                theirs[s] = _IN_FLIGHT[key]
            else:
                _IN_FLIGHT[key] = Future()
                mine.append(s)
    lost = []
    if mine:
        try:
            trained = runner.train_baselines(mine)
        except BaseException as exc:
            with _IN_FLIGHT_LOCK:
                for s in mine:
                    _IN_FLIGHT.pop(runner.baseline_key(s)).set_exception(exc)
            raise
        for seed, run in trained.items():
            if run.get("status") == "ok" and _finite_run(run):
                store.put_baseline(runner.baseline_key(seed), seed, run)
            lost += [run] if run.get("lost") else []
            have[seed] = {**run, "cached": False}
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.pop(runner.baseline_key(seed)).set_result(have[seed])
    for seed, fut in theirs.items():
        have[seed] = fut.result()
        lost += [have[seed]] if have[seed].get("lost") else []
    if lost:   # the finished ones are cached; the lost ones are trained again on --resume
        raise CapacityLost(f"baseline runs lost: {lost[0]['failure']}")
    for s, run in have.items():
        if s not in missing:
            have[s] = {**run, "cached": True}
    return have


class _BaselinesLater(Mapping):
    """The baselines of ``seeds`` as they are being trained in the background: reading one waits.
    FS runs that do not need their baseline to train (the real trainer's) are submitted at once,
    so baselines and FS runs share the worker groups instead of queueing one behind the other."""

    def __init__(self, runner, store, seeds: list[int]):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fsray-baselines")
        self._future = self._pool.submit(ensure_baselines, runner, store, seeds)
        self._pool.shutdown(wait=False)

    def _all(self) -> dict[int, dict]:
        return self._future.result()

    def __getitem__(self, seed):
        return self._all()[seed]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())


# ---------------------------------------------------------------------------------------------
# one configuration


def evaluate_config(space: SearchSpace, runner, store: StoreClient, params: dict, seeds: list[int],
                    stage: str = "selection", trial_id: str | None = None, race: bool = True,
                    report: Callable[[dict], None] | None = None, record_extra: dict | None = None) -> dict:
    """Evaluate one configuration over ``seeds`` and return its stats (see ``objective``).
    ``record_extra``: fields added to every record this call writes (a settling round's ``settle``).

    Seeds already in the results store are reused, never retrained. A provable no-op is recorded
    as such without training. A seed run that raises, returns NaN or runs out of memory is recorded
    as failed and the trial raises ``RunFailed`` (Tune then marks it errored and goes on).
    """
    return ConfigEvaluation(space, runner, store, params, seeds, stage, trial_id, race, report,
                            record_extra).run()


class ConfigEvaluation:
    """One configuration over its seeds, step by step (``run``): the seeds already recorded, then a
    provable no-op recorded without training, then the FS runs, racing after each record
    (``look``). A failed seed is recorded and ends the evaluation (``failure``); a run lost with
    the cluster's capacity is recorded nowhere (``CapacityLost``)."""

    def __init__(self, space: SearchSpace, runner, store: StoreClient, params: dict, seeds: list[int],
                 stage: str = "selection", trial_id: str | None = None, race: bool = True,
                 report: Callable[[dict], None] | None = None, record_extra: dict | None = None):
        self.space, self.runner, self.store, self.params = space, runner, store, params
        self.seeds, self.stage, self.trial_id, self.race, self.report = seeds, stage, trial_id, race, report
        self.extra = dict(record_extra or {})
        self.cfg = space.fs_config(params)
        self.chash = config_hash(self.cfg)
        self.n_full = len(seeds)
        self.failure: str | None = None   # why a seed failed (the evaluation then raises RunFailed)
        self.raced: str | None = None     # why racing stopped the configuration
        self.todo: list[int] = []         # the seeds being trained
        self.baselines: Mapping[int, dict] = {}

    def run(self) -> dict:
        todo = self.reuse_recorded()
        todo = self.record_noop(todo)
        if todo:
            self.train(todo)
        if self.failure is not None:
            raise RunFailed(f"config {self.cfg.label()} failed: {self.failure}")
        stats = obj.config_stats(self.records(), self.space.objective)
        stats.update(config_hash=self.chash, raced=self.raced, params=self.params)
        return stats

    # ------------------------------------------------------------------------------ the steps
    def reuse_recorded(self) -> list[int]:
        """The seeds left to train: a recorded failure fails at once; recorded seeds count (and
        can already race the configuration out)."""
        cached = [s for s in self.seeds if self.store.lookup(self.chash, s, self.stage) is not None]
        failed = [r for r in self.records() if r["status"] == "failed"]
        if failed:
            raise RunFailed(f"config {self.chash} failed on seed {failed[0]['seed']}: {failed[0]['failure']}")
        todo = [s for s in self.seeds if s not in cached]
        if cached and self.look():
            todo = []
        return todo

    def record_noop(self, todo: list[int]) -> list[int]:
        """A provable no-op: each seed left is recorded as one, against its cached baseline."""
        reason = self.cfg.noop_reason(self.runner.n_layer)
        if reason is None:
            return todo
        for seed in todo:
            base = self.store.baseline(self.runner.baseline_key(seed), seed)
            self._record(seed, base, None, noop_reason=reason)
        self.look()
        return []

    def train(self, todo: list[int]) -> None:
        """The FS runs of ``todo``, their baselines trained beside them (``_BaselinesLater``)."""
        self.todo, self.baselines = todo, _BaselinesLater(self.runner, self.store, todo)
        # The seed about to run is marked so that a trial process killed outright (a real OOM)
        # can still be recorded as failed on that seed by the driver's callback.
        self._mark_running(todo[0])
        try:
            self.runner.fs_runs(self.cfg, todo, self.baselines, self.on_run, trial_id=self.trial_id,
                                race=self.race)
        except CapacityLost:
            raise
        except Exception as exc:  # noqa: BLE001 - a crash fails the first seed it left undone
            undone = [s for s in todo if self.store.lookup(self.chash, s, self.stage) is None]
            if undone and self.failure is None:
                self.on_run(undone[0], None, first_line(exc))

    def on_run(self, seed: int, run: dict | None, failure: str | None) -> bool:
        """One FS run back: record it (or its failure); True to stop (failed, or raced out)."""
        if run is not None and run.get("lost"):   # the cluster's fault: record nothing
            raise CapacityLost(f"config {self.cfg.label()}, seed {seed}: {run['failure']}")
        if failure is None and not _finite_run(run):
            failure = "diverged: the FS run returned a NaN or infinite metric"
        base = self.baselines[seed]
        if failure is None and _unpaired(base, run):
            # a cached baseline that saw other data than this seed's FS run is not its pair: set it
            # aside and train the right one (the cache key said it was this seed's)
            self.store.discard_baseline(self.runner.baseline_key(seed), seed,
                                        f"its data order ({base['data_hash']}) is not seed {seed}'s "
                                        f"({run['data_hash']})")
            base = ensure_baselines(self.runner, self.store, [seed])[seed]
        if failure is None and not _finite_run(base):
            failure = f"baseline run failed: {base.get('failure') or 'non-finite metric'}"
        if failure is not None:
            self.failure = failure
            self._record(seed, base, None, failure=failure)
            return True
        self._record(seed, base, run)
        later = self.todo[self.todo.index(seed) + 1:]
        if later:
            self._mark_running(later[0])
        return self.look()

    def look(self) -> bool:
        """After a record: the statistics so far, the racing decision, Tune's report; True when
        racing stopped the configuration."""
        recs = self.records()
        stats = obj.config_stats(recs, self.space.objective)
        metrics = obj.tune_metrics(stats, self.space.objective)
        if self.race and not self.raced:
            incumbent = self.store.incumbent(self.n_full)
            prior = self.store.family_prior(self.chash, self.stage) if self.space.racing.enabled else None
            self.raced = obj.race_decision(stats["deltas"], self.n_full, incumbent, self.space.racing,
                                           prior=prior)
        if self.report is not None and metrics is not None:
            done = len(recs) >= self.n_full or self.raced is not None
            self.report({**metrics, "runs_saved": (self.n_full - len(recs)) if self.raced else 0,
                         "raced": bool(self.raced), "done": done})
        return self.raced is not None

    # ------------------------------------------------------------------------------ helpers
    def records(self) -> list[dict]:
        found = (self.store.lookup(self.chash, s, self.stage) for s in self.seeds)
        return [r for r in found if r is not None]

    def _record(self, seed: int, base: dict | None, run: dict | None, **why) -> None:
        self.store.append(self.runner.make_record(self.cfg, seed, base, run, self.stage, self.trial_id, **why)
                          | self.extra)

    def _mark_running(self, seed: int) -> None:
        self.store.mark_running(self.trial_id or "", self.cfg.model_dump(), self.chash, seed, self.stage)
