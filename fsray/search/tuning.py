"""The selection: Ray Tune + Optuna trials over the selection seeds.

``select`` trains the selection baselines every trial shares, then runs a Tuner. On --resume the
Tuner is a fresh one too: what is left to run is planned from the records, and the Optuna study
rebuilt from them (``fsray.search.resume``), never taken from Tune's saved trial states, which a kill
leaves RUNNING or ERRORED. Each trial (``_trial``) is one FS configuration evaluated
over the selection seeds with racing (``fsray.search.evaluate.evaluate_config``); Optuna proposes the
configurations (``searcher``); ``SearchCallback`` runs in the driver: progress lines, and a failed
record for a trial whose process died mid-seed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ray import tune

from fsray.errors import UsageError
from fsray.harness import HarnessClient
from fsray.search.evaluate import StoreClient, ensure_baselines, evaluate_config, make_runner
from fsray.search.progress import Progress
from fsray.search.rundir import TUNE_DIR
from fsray.search.space import SearchSpace
from fsray.search.store import say_notes
from fsray.search.summary import best_row, config_rows, run_counts, short_label


# ---------------------------------------------------------------------------------------------
# the trial (runs in a Tune trial process)


def _trial(config: dict, space_json: str, store_actor, client=None, baseline_keys: dict | None = None,
           n_layer: int | None = None) -> None:
    """One Tune trial: one FS configuration evaluated over the selection seeds. (Tune names the
    trials of a run directory after this function: keep the name.)"""
    space = SearchSpace.model_validate_json(space_json)
    runner = make_runner(space, client, n_layer)
    if baseline_keys:
        runner.known_keys = {int(s): k for s, k in baseline_keys.items()}
    trial_id = tune.get_context().get_trial_id()
    evaluate_config(space, runner, StoreClient(store_actor), dict(config),
                    space.seeds.selection(), stage="selection", trial_id=trial_id,
                    race=space.racing.enabled, report=tune.report)


# ---------------------------------------------------------------------------------------------
# the callback (runs in the driver)


class SearchCallback(tune.Callback):
    """Progress lines, and a failed record for a trial whose process died mid-seed."""

    def __init__(self, store: StoreClient, space: SearchSpace, runner, total: int, say,
                 on_running: Callable[[int], None] | None = None, done: int = 0):
        self.store, self.space, self.runner, self.total, self.say = store, space, runner, total, say
        self.on_running = on_running
        self.done = done   # trials finished before this run (a resumed search)
        self.capacity_lost: str | None = None
        self.running: set[str] = set()
        self.finished: set[str] = set()  # config hashes of finished trials

    def _running(self, trial, started: bool) -> None:
        (self.running.add if started else self.running.discard)(trial.trial_id)
        if self.on_running is not None:
            self.on_running(len(self.running))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._running(trial, True)

    def _finish(self, trial):
        from fsray.fsconfig import config_hash

        self._running(trial, False)
        self.done += 1
        try:
            self.finished.add(config_hash(self.space.fs_config(dict(trial.config))))
        except Exception:  # noqa: BLE001 - progress only
            pass

    def __reduce__(self):
        # Tune pickles its run config with the experiment state; a callback holding a live
        # store handle is rebuilt by the driver on --resume, so it pickles as nothing.
        return (tune.Callback, ())

    def _line(self, event: str):
        space, store = self.space, self.store
        say_notes(store, self.say)
        records = store.all_records()
        rows = config_rows(records, space)
        best = best_row(rows)
        counts = run_counts(records, store.baselines_trained(), space)
        # a config still running has fewer seeds than planned too: count only finished ones
        counts["racing_runs_saved"] = sum(
            len(space.seeds.selection()) - r["n"] for r in rows
            if r["status"] == "raced" and r["config_hash"] in self.finished)
        best_txt = (f"best {space.objective.kind} {best['objective']:+.4f} "
                    f"({short_label(best['config'], space.knobs)})"
                    if best else "best: none yet")
        self.say(f"[tune] {event} | trials done {self.done}/{self.total} | {best_txt} | "
                 f"runs made {counts['runs_made']} (saved by racing {counts['racing_runs_saved']})")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not result.get("done"):
            self.say(f"[tune] trial {trial.trial_id}: {result.get('n_seeds')} seeds, mean d "
                     f"{result.get('mean_delta', float('nan')):+.4f}, objective "
                     f"{result.get('objective', float('nan')):+.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial)
        self._line(f"trial {trial.trial_id} complete")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial)
        err = trial_error(trial)
        if "CapacityLost" in err:
            # lost with the cluster's capacity: nothing recorded, --resume runs it again
            self.capacity_lost = self.capacity_lost or err
            self._line(f"trial {trial.trial_id} stopped: its seed runs were lost with the cluster's capacity")
            return
        store, runner = self.store, self.runner
        running = store.running(trial.trial_id)
        if running is not None:
            config, chash, seed, stage = running
            if store.lookup(chash, seed, stage) is None:
                from fsray.fsconfig import FSConfig

                rec = runner.make_record(FSConfig(**config), seed,
                                         store.baseline(runner.baseline_key(seed), seed), None,
                                         stage, trial.trial_id, failure=err)
                store.append(rec)
        self._line(f"trial {trial.trial_id} FAILED")


def trial_error(trial) -> str:
    """One line saying why a trial's process died (out of memory named as such)."""
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001 - the error object is best effort
        err = None
    text = str(err).strip().splitlines() if err is not None else []
    last = [t for t in text if t.strip()][-1] if text else "the trial process died"
    if "OutOfMemory" in str(err) or "out of memory" in str(err).lower():
        return f"out of memory: {last}"
    return f"trial process died: {last}"


# ---------------------------------------------------------------------------------------------
# Optuna and the trials' resources


def sampler(space: SearchSpace, resumed: int = 0):
    """The Optuna sampler. ``resumed``: configurations a resumed search already holds; its sampler
    is seeded past them (the same seed would propose the first run's configurations again)."""
    import optuna

    s = space.tuner
    if s.sampler_seed is not None and resumed:
        s = s.model_copy(update={"sampler_seed": s.sampler_seed + resumed})
    if s.sampler == "tpe":
        # constant_liar keeps concurrent trials from all proposing the same point
        return optuna.samplers.TPESampler(seed=s.sampler_seed, constant_liar=s.concurrency > 1,
                                          multivariate=True, n_startup_trials=min(5, s.trials))
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.sampler_seed)
    if s.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=s.sampler_seed)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=s.sampler_seed)
    try:
        return optuna.samplers.CmaEsSampler(seed=s.sampler_seed)
    except ImportError as exc:  # pragma: no cover - depends on the optional cmaes package
        raise UsageError(f"search.sampler cmaes needs the 'cmaes' package: {exc}") from None


def optuna_storage(space: SearchSpace, run_dir: Path):
    """The Optuna study's storage: the search's ``optuna_storage:`` URL, else ``<run>/optuna.db``."""
    import optuna

    url = space.optuna_storage or f"sqlite:///{run_dir / 'optuna.db'}"
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - a bad URL is bad input
        raise UsageError(f"storage: cannot open {url!r}: {exc}") from None


def searcher(space: SearchSpace, run_dir: Path, resumed: int = 0):
    """Optuna proposes the configurations; each finished trial's user attrs carry its stability
    (``fsray.search.dashboard``: what optuna-dashboard shows beside the objective), read from
    the source ``select`` registers under the run directory. ``resumed``: see ``sampler``."""
    from ray.tune.search import ConcurrencyLimiter

    from fsray.search.dashboard import StabilityOptunaSearch
    from fsray.search.space import optuna_distributions

    if space.objective.kind == "multi":
        metric, mode = ["mean_delta", "spread"], ["max", "min"]
    else:
        metric, mode = "objective", "max"
    search = StabilityOptunaSearch(space=optuna_distributions(space), metric=metric, mode=mode,
                                   sampler=sampler(space, resumed), study_name=space.name,
                                   storage=optuna_storage(space, run_dir), attrs_source=str(run_dir))
    return ConcurrencyLimiter(search, max_concurrent=space.tuner.concurrency)


def trial_resources(space: SearchSpace):
    if space.trainable == "simulated":
        return {"cpu": 1}
    # The trial only drives Ray Train workers, which hold the CPUs/GPUs; a trial holding a CPU of
    # its own would starve them on a 2-CPU machine (docs/DESIGN.md §6). It runs on the driver's node (a
    # sliver of that node's own resource), so losing a worker node never takes a trial with it:
    # only the seed run there is lost, and the harness runs it again elsewhere.
    return tune.PlacementGroupFactory([{"CPU": 0, "memory": 2**20, driver_node_resource(): 0.001}])


def driver_node_resource() -> str:
    """A resource only the driver's node has: the head's marker when the driver runs on the head
    (``ray job submit``, ``ray attach``, a local instance), else the node's ``node:<ip>``."""
    import ray

    me = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == me:
            res = node.get("Resources", {})
            if "node:__internal_head__" in res:
                return "node:__internal_head__"
            return f"node:{node['NodeManagerAddress']}"
    return "node:__internal_head__"


# ---------------------------------------------------------------------------------------------
# the selection


def select(space: SearchSpace, run_dir: Path, resume: bool, runner, store: StoreClient, actor, harness,
           n_layer: int, progress: Progress, callbacks: list | None = None) -> None:
    """The selection: shared baselines, then the Tune + Optuna trials over the selection seeds.
    ``callbacks``: more Tune callbacks (the experiment trackers' logger callbacks,
    ``fsray.search.tracking``)."""
    from fsray.search.dashboard import register_source, stability_attrs

    say = progress.say
    register_source(str(run_dir), lambda params: stability_attrs(space, store.all_records(), params))
    more = list(callbacks or [])
    # All selection baselines at once (the worker groups share them out).
    tb = time.perf_counter()
    seeds = space.seeds.selection()
    trials, done, resumed = space.tuner.trials, 0, 0
    if resume:
        # the records are the truth: plan what is left from them and rebuild the Optuna study
        from fsray.search.resume import plan_resume, rebuild_study, set_aside_tune_state

        plan = plan_resume(space, store.all_records())
        say(f"[tune] {rebuild_study(space, run_dir, plan)}")
        set_aside_tune_state(run_dir, TUNE_DIR)
        trials, done, resumed = plan.new_trials, plan.done, plan.configs
    missing = sum(store.baseline(runner.baseline_key(s), s) is None for s in seeds)
    progress.plan(missing + trials * len(seeds))
    ensure_baselines(runner, store, seeds)
    say(f"[tune] baselines ready ({store.baselines_trained()} trained by this search, "
        f"{time.perf_counter() - tb:.1f}s)")
    say_notes(store, say)
    if trials == 0:
        say("[tune] the selection is complete: nothing left to run")
        return

    trainable = tune.with_resources(
        tune.with_parameters(_trial, space_json=space.model_dump_json(), store_actor=actor,
                             client=None if harness is None else HarnessClient(harness.dispatcher),
                             baseline_keys={s: runner.baseline_key(s) for s in seeds},
                             n_layer=n_layer),
        trial_resources(space))
    callback = SearchCallback(store, space, runner, space.tuner.trials, say, progress.trials, done=done)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher(space, run_dir, resumed), num_samples=trials,
                                    # keep trial processes (and their imports) alive
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(run_dir), callbacks=[callback, *more], verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()
    if callback.capacity_lost:
        from fsray.errors import CapacityLost

        raise CapacityLost("the search stopped: seed runs were lost with the cluster's capacity "
                           "(no worker group came back in time); nothing completed was lost: "
                           "--resume continues it")
