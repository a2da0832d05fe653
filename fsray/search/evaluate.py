"""Evaluating one FS configuration over seeds: cache lookups, seed runs, records, racing.

One trial of the search = ``evaluate_config``. The same function confirms the winner on fresh seeds
(stage "confirmation", no racing). Seed runs come from a runner:

* ``SimulatedRunner``: the known effect surface of ``fsray.search.simulated``; no Ray Train.
* ``RealRunner``: the paired trainer through Ray Train. A ``TorchTrainer.fit()`` costs 14-20 s of
  fixed overhead here (SPEC §8), so fits are paid rarely: all baselines of a stage in ONE fit up
  front (shared by every candidate, cached on disk across searches), then ONE fit per trial that
  trains its FS runs seed after seed, the racing rule running inside the fit (``fit_runs``'
  ``stop_rule``, asked before each job) and appending each finished seed's record on the spot.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Callable

import ray

from analysis.schema import SCHEMA
from fsray.errors import RunFailed, UsageError
from fsray.fsconfig import FS_SEMANTICS, FSConfig, config_hash
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


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite_run(run: dict | None) -> bool:
    if run is None:
        return False
    return all(isinstance(run.get(k), (int, float)) and math.isfinite(run[k])
               for k in ("token_acc", "seq_acc"))


def _failure_of(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text or type(exc).__name__}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# runners


class SimulatedRunner:
    def __init__(self, space: SearchSpace):
        self.space = space
        self.sim = space.simulated

    @property
    def n_layer(self) -> int:
        return self.sim.n_layer

    def task_label(self) -> str:
        opts = self.space.task.options
        order = opts.get("order") or opts.get("ordering")
        return f"{self.space.task.name}/{order}" if order else self.space.task.name

    def baseline_key(self, seed: int) -> str:
        from fsray.search.simulated import baseline_key

        return baseline_key(self.sim, seed)

    def train_baselines(self, seeds: list[int]) -> dict[int, dict]:
        from fsray.search.simulated import baseline_run

        return {s: baseline_run(self.sim, s) for s in seeds}

    def make_record(self, cfg: FSConfig, seed: int, baseline, fs_run, stage, trial_id,
                    noop_reason=None, failure=None) -> dict:
        status = "noop" if noop_reason else ("failed" if failure else "ok")
        if status == "noop" and baseline is not None:
            fs_run = {**baseline, "mode": "prompt_fs"}
        return {
            "schema": SCHEMA, "task": self.task_label(), "config": cfg.model_dump(),
            "config_hash": config_hash(cfg), "config_label": cfg.label(), "seed": int(seed),
            "stage": stage, "trial_id": trial_id, "status": status, "failure": failure,
            "noop_reason": noop_reason, "baseline": baseline, "fs": fs_run,
            "baseline_key": self.baseline_key(seed), "model": {"simulated": True},
            "fs_semantics": FS_SEMANTICS,
            "code_version": "simulated", "time": _now(),
        }

    def fs_runs(self, cfg: FSConfig, seeds: list[int], baselines: dict[int, dict],
                on_run: Callable[[int, dict | None, str | None], bool]) -> None:
        """Train the FS run of each seed in order; ``on_run(seed, run, failure)`` returns True to stop."""
        from fsray.search.simulated import fs_run

        for seed in seeds:
            try:
                run, failure = fs_run(self.sim, cfg, seed, baselines[seed]), None
            except Exception as exc:  # noqa: BLE001 - any crash of a seed run is a recorded failure
                run, failure = None, _failure_of(exc)
            if on_run(seed, run, failure):
                return


class RealRunner:
    """Seed runs through Ray Train: through the search's long-lived worker pool when ``queue``
    is given (fsray.search.pool), else one ``fit_runs`` fit per batch of runs."""

    def __init__(self, space: SearchSpace, storage_path: str, queue=None):
        from fsray.trainer import TrainSpec

        self.space = space
        self.queue = queue
        self.known_keys: dict[int, str] = {}
        self.storage_path = storage_path
        # threads = the CPUs a worker holds (fit_runs reserves spec.threads CPUs per worker)
        threads = max(1, int(space.resources.cpus_per_worker))
        raw = {"task": space.task.model_dump(), "model": space.model, "budget": space.budget,
               "data": space.data, "threads": threads}
        if space.base == "embedded_default":
            from fsray.trainer import embedded_default_spec

            order = space.task.options.get("order", "query_after")
            base = embedded_default_spec(order).model_dump()
            if space.task.name != base["task"]["name"]:
                raise UsageError(f"task.name: base embedded_default trains {base['task']['name']!r}, "
                                 f"not {space.task.name!r}")
            raw = _merged(base, raw)
        self.spec = TrainSpec.model_validate(raw)
        self.concurrency = space.search.concurrency

    @property
    def n_layer(self) -> int:
        if self.space.n_layer is not None:
            return self.space.n_layer
        if self.spec.model.checkpoint is None:
            return self.spec.model.n_layer
        from fsray.checkpoint import load_blinkdl
        from fsray.trainer import resolve_checkpoint

        return load_blinkdl(str(resolve_checkpoint(self.spec.model.checkpoint))).config.n_layer

    def baseline_key(self, seed: int) -> str:
        # The driver's keys win: a trial process that imported a different code version must
        # still find the baselines the driver trained for this search (never retrain them).
        if int(seed) in self.known_keys:
            return self.known_keys[int(seed)]
        from fsray.trainer import baseline_key

        return baseline_key(self.spec, seed)

    def _fit(self, jobs, stop_rule=None, name=None) -> list[dict]:
        from fsray.ray_train import fit_runs

        r = self.space.resources
        return fit_runs(self.spec, jobs, num_workers=r.workers, use_gpu=r.gpus_per_worker > 0,
                        storage_path=self.storage_path, name=name, stop_rule=stop_rule)

    def train_baselines(self, seeds: list[int]) -> dict[int, dict]:
        """All missing baselines up front, split over ``concurrency`` fits that run side by side
        (as many worker groups as the search runs trials at once)."""
        from concurrent.futures import ThreadPoolExecutor

        if self.queue is not None:  # all at once: the pool's slots share them out
            with ThreadPoolExecutor(len(seeds)) as pool:
                runs = pool.map(lambda s: self._pool_run(s, None), seeds)
            return dict(zip(seeds, runs))
        chunks = [seeds[i::self.concurrency] for i in range(min(self.concurrency, len(seeds)))]
        with ThreadPoolExecutor(len(chunks)) as pool:
            results = pool.map(lambda c: self._fit([(s, None) for s in c]), chunks)
        return {s: run for chunk, runs in zip(chunks, results) for s, run in zip(chunk, runs)}

    def make_record(self, cfg, seed, baseline, fs_run, stage, trial_id, noop_reason=None,
                    failure=None) -> dict:
        from fsray.trainer import make_record

        if failure is not None:
            fs_run = {"mode": "prompt_fs", "status": "failed", "failure": failure}
        return make_record(self.spec, cfg, seed, baseline, fs_run, stage, trial_id,
                           noop_reason=noop_reason)

    @staticmethod
    def _deliver(seed, run, on_run) -> bool:
        failure = None if run.get("status") == "ok" else (run.get("failure") or "failed")
        return on_run(seed, run, failure)

    def _pool_run(self, seed: int, cfg: FSConfig | None) -> dict:
        from fsray.search.pool import run_job

        return run_job(self.queue, seed, cfg.model_dump() if cfg is not None else None)

    def fs_runs(self, cfg, seeds, baselines, on_run) -> None:
        if self.queue is not None:
            # Racing cannot stop a config before racing.min_seeds, so those seeds go to the pool
            # at once (idle slots take them); the rest seed by seed, racing between them.
            from concurrent.futures import ThreadPoolExecutor

            first = list(seeds[: max(1, self.space.racing.min_seeds)])
            with ThreadPoolExecutor(len(first)) as pool:
                futures = [pool.submit(self._pool_run, s, cfg) for s in first]
                for seed, fut in zip(first, futures):
                    if self._deliver(seed, fut.result(), on_run):
                        return
            for seed in seeds[len(first):]:
                if self._deliver(seed, self._pool_run(seed, cfg), on_run):
                    return
            return
        rule = _FitStopRule(cfg, list(seeds), on_run)
        results = self._fit([(s, cfg) for s in seeds], stop_rule=rule)
        rule(results, final=True)


def _merged(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s fields replacing it, dicts merged recursively."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


class _FitStopRule:
    """``fit_runs``' stop rule: records each finished seed the moment the fit moves on, then races.

    It runs inside the Ray Train worker(s) (a pickled copy) before each job, with the results of
    the fit so far; the store ignores duplicates (several ranks, a restarted worker group), so
    recording is idempotent. After the fit the trial replays it on all results in its own process
    (``final``): that records the last job and sets the trial's racing/failure state and reports.
    """

    def __init__(self, cfg, seeds, on_run):
        self.cfg, self.seeds, self.on_run = cfg, seeds, on_run
        self._seen = 0
        self._stopped = False

    def __call__(self, results: list[dict], final: bool = False) -> bool:
        for k in range(self._seen, len(results)):
            run = results[k]
            failure = None if run.get("status") == "ok" else (run.get("failure") or "failed")
            self._seen = k + 1
            if self.on_run(self.seeds[k], run, failure, in_worker=not final):
                self._stopped = True
                break
        return self._stopped


def make_runner(space: SearchSpace, storage_path: str, queue=None):
    if space.trainable == "simulated":
        return SimulatedRunner(space)
    return RealRunner(space, storage_path, queue)


# ---------------------------------------------------------------------------------------------
# baselines


def ensure_baselines(runner, store: StoreClient, seeds: list[int]) -> dict[int, dict]:
    """Cached no_fs runs of ``seeds``; the missing ones are trained together (one fit) and cached."""
    have = {s: store.baseline(runner.baseline_key(s)) for s in seeds}
    missing = [s for s, run in have.items() if run is None]
    if missing:
        for seed, run in runner.train_baselines(missing).items():
            if run.get("status") == "ok" and _finite_run(run):
                store.put_baseline(runner.baseline_key(seed), seed, run)
            have[seed] = {**run, "cached": False}
    for s, run in have.items():
        if s not in missing:
            have[s] = {**run, "cached": True}
    return have


# ---------------------------------------------------------------------------------------------
# one configuration


def evaluate_config(space: SearchSpace, runner, store: StoreClient, params: dict, seeds: list[int],
                    stage: str = "selection", trial_id: str | None = None, race: bool = True,
                    report: Callable[[dict], None] | None = None) -> dict:
    """Evaluate one configuration over ``seeds`` and return its stats (see ``objective``).

    Seeds already in the results store are reused, never retrained. A provable no-op is recorded
    as such without training. A seed run that raises, returns NaN or runs out of memory is recorded
    as failed and the trial raises ``RunFailed`` (Tune then marks it errored and goes on).
    """
    cfg = space.fs_config(params)
    chash = config_hash(cfg)
    n_full = len(seeds)
    state = {"failure": None, "raced": None}

    def records() -> list[dict]:
        return [r for r in (store.lookup(chash, s, stage) for s in seeds) if r is not None]

    def after_record(report_now: bool = True) -> bool:
        recs = records()
        stats = obj.config_stats(recs, space.objective)
        metrics = obj.tune_metrics(stats, space.objective)
        if race and not state["raced"]:
            incumbent = store.incumbent(n_full)
            state["raced"] = obj.race_decision(stats["deltas"], n_full, incumbent, space.racing,
                                               space.objective.interval)
        if report is not None and metrics is not None and report_now:
            done = len(recs) >= n_full or state["raced"] is not None
            report({**metrics, "runs_saved": (n_full - len(recs)) if state["raced"] else 0,
                    "raced": bool(state["raced"]), "done": done})
        return state["raced"] is not None

    cached = [s for s in seeds if store.lookup(chash, s, stage) is not None]
    failed = [r for r in records() if r["status"] == "failed"]
    if failed:
        raise RunFailed(f"config {chash} failed on seed {failed[0]['seed']}: {failed[0]['failure']}")
    todo = [s for s in seeds if s not in cached]
    if cached and after_record():
        todo = []

    reason = cfg.noop_reason(runner.n_layer)
    if reason is not None:
        for seed in todo:
            base = store.baseline(runner.baseline_key(seed))
            store.append(runner.make_record(cfg, seed, base, None, stage, trial_id, noop_reason=reason))
        todo = []
        after_record()

    if todo:
        baselines = ensure_baselines(runner, store, todo)

        def on_run(seed: int, run: dict | None, failure: str | None, in_worker: bool = False) -> bool:
            # in_worker: called inside a Ray Train worker, where Tune's report is not available
            if failure is None and not _finite_run(run):
                failure = "diverged: the FS run returned a NaN or infinite metric"
            base = baselines[seed]
            if failure is None and not _finite_run(base):
                failure = f"baseline run failed: {base.get('failure') or 'non-finite metric'}"
            if failure is not None:
                state["failure"] = failure
                store.append(runner.make_record(cfg, seed, base, None, stage, trial_id,
                                                failure=failure))
                return True
            store.append(runner.make_record(cfg, seed, base, run, stage, trial_id))
            later = todo[todo.index(seed) + 1:]
            if later:
                store.mark_running(trial_id or "", cfg.model_dump(), chash, later[0], stage)
            return after_record(report_now=not in_worker)

        # The seed about to run is marked so that a trial process killed outright (a real OOM)
        # can still be recorded as failed on that seed by the driver's callback.
        store.mark_running(trial_id or "", cfg.model_dump(), chash, todo[0], stage)
        try:
            runner.fs_runs(cfg, todo, baselines, on_run)
        except Exception as exc:  # noqa: BLE001 - a crashed fit fails the first seed it left undone
            undone = [s for s in todo if store.lookup(chash, s, stage) is None]
            if undone and state["failure"] is None:
                on_run(undone[0], None, _failure_of(exc))
    if state["failure"] is not None:
        raise RunFailed(f"config {cfg.label()} failed: {state['failure']}")
    stats = obj.config_stats(records(), space.objective)
    stats.update(config_hash=chash, raced=state["raced"], params=params)
    return stats
