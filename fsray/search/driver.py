"""The search driver: Ray Tune + Optuna over FS configurations, seed variance in the objective.

Layout of a run directory::

    <run>/space.json         the validated search (what --resume continues)
    <run>/results.jsonl      one fsray.paired/1 record per finished paired seed (the cache)
    <run>/baselines.jsonl    baselines this search trained (the rest came from the shared cache)
    <run>/optuna.db          the Optuna study (SQLite; any SQLAlchemy URL via `storage:`)
    <run>/tune/              Tune's experiment state (Tuner.restore on --resume)
    <run>/summary.json, <run>/importance.json

Flow: start (or join, with RAY_ADDRESS) Ray; start the store actor on this node; train the missing
selection baselines in one go; run the Tuner, each trial = ``evaluate_config`` over the seeds with
racing; confirm the best configuration on fresh seeds; summarise.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from fsray.errors import UsageError
from fsray.search.evaluate import StoreClient, ensure_baselines, evaluate_config, make_runner
from fsray.search.importance import knob_importance, write_importance
from fsray.harness import HarnessClient
from fsray.records import task_label
from fsray.search.progress import Progress, quiet_output
from fsray.search.space import SearchSpace
from fsray.search.summary import best_row, config_rows, run_counts, short_label

# Tune writes its experiment state at most this often; small so a SIGKILL loses little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

TUNE_DIR = "tune"
RAY_LOG = "ray.log"   # Ray's own output during a search (the terminal gets it with --debug)


# ---------------------------------------------------------------------------------------------
# the trial


def _trial(config: dict, space_json: str, store_actor, client=None, baseline_keys: dict | None = None,
           n_layer: int | None = None) -> None:
    """One Tune trial: one FS configuration evaluated over the selection seeds."""
    from ray import tune

    space = SearchSpace.model_validate_json(space_json)
    runner = make_runner(space, client, n_layer)
    if baseline_keys:
        runner.known_keys = {int(s): k for s, k in baseline_keys.items()}
    trial_id = tune.get_context().get_trial_id()
    evaluate_config(space, runner, StoreClient(store_actor), dict(config),
                    space.seeds.selection(), stage="selection", trial_id=trial_id,
                    race=space.racing.enabled, report=tune.report)


# ---------------------------------------------------------------------------------------------
# callbacks (run in the driver)


def _make_callback(store: StoreClient, space: SearchSpace, runner, total: int, say,
                   on_running: Callable[[int], None] | None = None):
    from ray.tune import Callback

    class SearchCallback(Callback):
        """Progress lines, and a failed record for a trial whose process died mid-seed."""

        def __init__(self):
            self.done = 0
            self.capacity_lost: str | None = None
            self.running: set[str] = set()
            self.finished: set[str] = set()  # config hashes of finished trials

        def _running(self, trial, started: bool) -> None:
            (self.running.add if started else self.running.discard)(trial.trial_id)
            if on_running is not None:
                on_running(len(self.running))

        def on_trial_start(self, iteration, trials, trial, **info):
            self._running(trial, True)

        def _finish(self, trial):
            from fsray.fsconfig import config_hash

            self._running(trial, False)
            self.done += 1
            try:
                self.finished.add(config_hash(space.fs_config(dict(trial.config))))
            except Exception:  # noqa: BLE001 - progress only
                pass

        def __reduce__(self):
            # Tune pickles its run config with the experiment state; a callback holding a live
            # store handle is rebuilt by the driver on --resume, so it pickles as nothing.
            return (Callback, ())

        def _line(self, event: str):
            records = store.all_records()
            rows = config_rows(records, space)
            best = best_row(rows)
            counts = run_counts(records, store.baselines_trained(), space)
            # a config still running has fewer seeds than planned too: count only finished ones
            counts["racing_runs_saved"] = sum(
                len(space.seeds.selection()) - r["n"] for r in rows
                if r["status"] == "raced" and r["config_hash"] in self.finished)
            best_txt = (f"best {space.objective.kind} {best['objective']:+.4f} "
                        f"({short_label(best['config'], space.space)})"
                        if best else "best: none yet")
            say(f"[tune] {event} | trials done {self.done}/{total} | {best_txt} | "
                f"runs made {counts['runs_made']} (saved by racing {counts['racing_runs_saved']})")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not result.get("done"):
                say(f"[tune] trial {trial.trial_id}: {result.get('n_seeds')} seeds, mean d "
                    f"{result.get('mean_delta', float('nan')):+.4f}, objective "
                    f"{result.get('objective', float('nan')):+.4f}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finish(trial)
            self._line(f"trial {trial.trial_id} complete")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finish(trial)
            err = _trial_error(trial)
            if "CapacityLost" in err:
                # lost with the cluster's capacity: nothing recorded, --resume runs it again
                self.capacity_lost = self.capacity_lost or err
                self._line(f"trial {trial.trial_id} stopped: its seed runs were lost with the cluster's capacity")
                return
            running = store.running(trial.trial_id)
            if running is not None:
                config, chash, seed, stage = running
                if store.lookup(chash, seed, stage) is None:
                    from fsray.fsconfig import FSConfig

                    rec = runner.make_record(FSConfig(**config), seed,
                                             store.baseline(runner.baseline_key(seed)), None,
                                             stage, trial.trial_id, failure=err)
                    store.append(rec)
            self._line(f"trial {trial.trial_id} FAILED")

    return SearchCallback()


def _trial_error(trial) -> str:
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
# Ray, the store, Tune


def _sampler(space: SearchSpace):
    import optuna

    s = space.search
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


def _storage(space: SearchSpace, run_dir: Path):
    import optuna

    url = space.storage or f"sqlite:///{run_dir / 'optuna.db'}"
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - a bad URL is bad input
        raise UsageError(f"storage: cannot open {url!r}: {exc}") from None


def _searcher(space: SearchSpace, run_dir: Path):
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from fsray.search.space import optuna_distributions

    if space.objective.kind == "multi":
        metric, mode = ["mean_delta", "spread"], ["max", "min"]
    else:
        metric, mode = "objective", "max"
    searcher = OptunaSearch(space=optuna_distributions(space), metric=metric, mode=mode,
                            sampler=_sampler(space), study_name=space.name,
                            storage=_storage(space, run_dir))
    return ConcurrencyLimiter(searcher, max_concurrent=space.search.concurrency)


def _trial_resources(space: SearchSpace):
    from ray import tune

    if space.trainable == "simulated":
        return {"cpu": 1}
    # The trial only drives Ray Train workers, which hold the CPUs/GPUs; a trial holding a CPU of
    # its own would starve them on a 2-CPU machine (SPEC §8). It runs on the driver's node (a
    # sliver of that node's own resource), so losing a worker node never takes a trial with it:
    # only the seed run there is lost, and the harness runs it again elsewhere.
    return tune.PlacementGroupFactory([{"CPU": 0, "memory": 2**20, _driver_node_resource(): 0.001}])


def _driver_node_resource() -> str:
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


def _start_ray(log_dir: Path | None = None) -> bool:
    # A cluster when RAY_ADDRESS names one (checked: it answers, token auth as Ray sets it up, one
    # line otherwise); otherwise always a fresh local instance of our own. fsray/cluster.py.
    from fsray.cluster import start_ray

    return start_ray(log_dir=log_dir)


def _store_actor(run_dir: Path, space: SearchSpace):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from fsray.search.store import ResultsStore, WriterBusy, take_writer_lock

    # A killed run's store actor can outlive its driver for a few seconds: wait for it here, where a
    # timeout is one clear error, before the new actor takes the lock for good.
    try:
        take_writer_lock(run_dir).close()
    except WriterBusy as exc:
        raise UsageError(str(exc)) from None
    # One writer, pinned to this node so the files land in this run directory.
    node = ray.get_runtime_context().get_node_id()
    Actor = ray.remote(num_cpus=0, max_concurrency=1)(ResultsStore)
    return Actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        str(run_dir), space.baseline_cache, space.objective.model_dump(), single_writer=True)


def _write_space(run_dir: Path, space: SearchSpace) -> None:
    (run_dir / "space.json").write_text(space.model_dump_json(indent=2) + "\n")


def run_dir_of(space: SearchSpace, out: str | None) -> Path:
    """The run directory: ``--out``, else ``<results_dir>/<name>``."""
    return Path(out or Path(space.results_dir) / space.name).expanduser().resolve()


def prepare_run_dir(space: SearchSpace, out: str | None, resume: bool) -> Path:
    run_dir = run_dir_of(space, out)
    has_run = (run_dir / "results.jsonl").exists() or (run_dir / TUNE_DIR).exists()
    if has_run and not resume:
        raise UsageError(f"{run_dir} already holds a search: pass --resume to continue it, or --out DIR")
    if resume and not run_dir.exists():
        raise UsageError(f"--resume: {run_dir} does not exist (nothing to resume)")
    if resume and (run_dir / "results.jsonl").exists():
        _refuse_other_semantics(run_dir / "results.jsonl")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _refuse_other_semantics(path: Path) -> None:
    """A resumed search must not pool its new records with records whose FS knobs meant another
    transform (``analysis.schema.semantics_mismatch``): it would skip their seeds as done."""
    from analysis.schema import read_records, semantics_mismatch

    stale = [(r, why) for r in read_records(path).records if (why := semantics_mismatch(r))]
    if stale:
        rec, why = stale[0]
        raise UsageError(f"--resume: {path} holds {len(stale)} record(s) whose FS configuration meant "
                         f"something else when recorded (seed {rec['seed']}: {why}); start a new run "
                         f"with --out DIR (fsray report still shows the old records apart)")


def run_search(space: SearchSpace, out: str | None = None, resume: bool = False,
               confirm_seeds: int | None = None, say: Callable[[str], None] | None = None,
               debug: bool = False, settle_only: bool = False) -> dict:
    """Run (or resume) a search to its summary; returns the summary dict. Unless ``debug``, Ray's
    own output goes to ``<run>/ray.log``. ``settle_only``: no more selection; settle the finished
    selection of an existing run directory (``--settle-only``)."""
    if space.settle.enabled or settle_only:
        check_settle_inputs(space)
    if settle_only:
        _check_settle_only(space, out)
        space = space.model_copy(update={"settle": space.settle.model_copy(update={"enabled": True})})
    run_dir = prepare_run_dir(space, out, resume or settle_only)
    if resume and (run_dir / "space.json").exists():
        saved = SearchSpace.model_validate_json((run_dir / "space.json").read_text())
        # what only steers the search or the settling may change between runs; what decides a
        # seed run's result may not
        same = {"search": True, "settle": True, "objective": {"delta"}}
        if saved.model_dump(exclude=same) != space.model_dump(exclude=same):
            raise UsageError(f"--resume: {run_dir} was made by a different search file")
    _write_space(run_dir, space)
    with quiet_output(run_dir / RAY_LOG, enabled=not debug) as terminal:
        progress = Progress(say, stream=terminal)
        try:
            return _run_search(space, run_dir, resume, confirm_seeds, progress, settle_only)
        finally:
            progress.close()


def _run_search(space: SearchSpace, run_dir: Path, resume: bool, confirm_seeds: int | None,
                progress: Progress, settle_only: bool = False) -> dict:
    import ray

    say = progress.say
    started = _start_ray()
    t0 = time.perf_counter()
    harness = actor = None
    try:
        actor = _store_actor(run_dir, space)
        store = StoreClient(actor)
        runner = make_runner(space)   # reads the model's depth once; trials get it handed over
        if space.trainable == "real":
            from fsray.harness import SeedRunHarness

            r = space.resources
            harness = SeedRunHarness(runner.spec, groups=space.search.concurrency, workers=r.workers,
                                     use_gpu=r.gpus_per_worker > 0, storage_path=_train_storage(space, run_dir),
                                     name=space.name, max_retries=r.max_retries,
                                     capacity_timeout_s=r.capacity_timeout_s, on_event=progress.on_event)
            runner.client = harness
        n_layer = runner.n_layer
        say(f"[tune] {space.name}: {space.search.trials} trials x {len(space.space)} knobs, "
            f"seeds {space.seeds.selection()}, objective {space.objective.kind}, "
            f"{space.trainable} trainable, n_layer {n_layer}, run dir {run_dir}")
        if resume:
            say(f"[tune] resuming: {len(store.all_records())} paired seeds already recorded")

        if settle_only:
            say(f"[tune] --settle-only: {len(store.all_records())} paired seeds recorded; no more selection")
        else:
            _select(space, run_dir, resume, runner, store, actor, harness, n_layer, progress)

        settled = None
        if space.settle.enabled:   # the settling rounds are the confirmation, on fresh seeds
            settled = _settle(space, runner, store, progress)
        else:
            confirm_n = space.seeds.confirm if confirm_seeds is None else confirm_seeds
            if confirm_n > 0:
                progress.plan(2 * confirm_n)
                _confirm(space, runner, store, confirm_n, say)
        summary = _summarise(space, store, run_dir, time.perf_counter() - t0, settled)
    finally:
        if harness is not None:
            harness.close()
        if actor is not None:
            # the store actor holds the run directory's writer lock: end it with the search, also
            # when Ray lives on (a shared instance), so a --resume can take the lock at once
            ray.kill(actor)
        if started:
            ray.shutdown()
    return summary


def _train_storage(space: SearchSpace, run_dir: Path) -> str:
    """Where Ray Train keeps the worker groups' state and the seed runs their resumable state: the
    search's storage location when it names one (every node sees it: a run lost with its node
    resumes elsewhere), else the run directory (one node). Tune's own experiment state stays in the
    run directory on the driver's node, which --resume reads."""
    if not space.storage_path:
        return str(run_dir / "train")
    from fsray.storage import check_storage

    st = check_storage(space.storage_path)   # cached: the CLI checked it before anything was written
    return st.child(run_dir.name, "train")


def _select(space: SearchSpace, run_dir: Path, resume: bool, runner, store: StoreClient, actor, harness,
            n_layer: int, progress: Progress) -> None:
    """The selection: shared baselines, then the Tune + Optuna trials over the selection seeds."""
    from ray import tune

    say = progress.say
    # All selection baselines at once (the worker groups share them out).
    tb = time.perf_counter()
    seeds = space.seeds.selection()
    missing = sum(store.baseline(runner.baseline_key(s)) is None for s in seeds)
    progress.plan(missing + space.search.trials * len(seeds))
    ensure_baselines(runner, store, seeds)
    say(f"[tune] baselines ready ({store.baselines_trained()} trained by this search, "
        f"{time.perf_counter() - tb:.1f}s)")

    trainable = tune.with_resources(
        tune.with_parameters(_trial, space_json=space.model_dump_json(), store_actor=actor,
                             client=None if harness is None else HarnessClient(harness.dispatcher),
                             baseline_keys={s: runner.baseline_key(s) for s in seeds},
                             n_layer=n_layer),
        _trial_resources(space))
    callback = _make_callback(store, space, runner, space.search.trials, say, progress.trials)
    tune_path = run_dir / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(tune_path)):
        # errored trials run again: a configuration that really failed has its failure recorded
        # and fails again at once, without training; one lost with the cluster's capacity resumes
        tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=True)
        # Callbacks are not part of the saved state; give the restored run ours.
        tuner._local_tuner.get_run_config().callbacks = [callback]
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_searcher(space, run_dir),
                                        num_samples=space.search.trials,
                                        # keep trial processes (and their imports) alive
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=TUNE_DIR, storage_path=str(run_dir), callbacks=[callback], verbose=0,
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
        )
    tuner.fit()
    if callback.capacity_lost:
        from fsray.errors import CapacityLost

        raise CapacityLost("the search stopped: seed runs were lost with the cluster's capacity "
                           "(no worker group came back in time); nothing completed was lost: "
                           "--resume continues it")


def _confirm(space: SearchSpace, runner, store: StoreClient, n: int, say) -> None:
    """Re-run the selected configuration on fresh seeds; its records carry stage 'confirmation'."""
    from fsray.errors import RunFailed

    best = best_row(config_rows(store.all_records(), space))
    if best is None:
        say("[tune] no configuration finished on every seed: nothing to confirm")
        return
    seeds = space.seeds.confirmation(n)
    params = {k: best["config"][k] for k in space.space}
    say(f"[tune] confirming {best['label']} on fresh seeds {seeds}")
    ensure_baselines(runner, store, seeds)
    try:
        evaluate_config(space, runner, store, params, seeds, stage="confirmation",
                        trial_id="confirmation", race=False)
    except RunFailed as exc:
        say(f"[tune] confirmation failed: {exc}")


def _shortlist(space: SearchSpace, records: list[dict]) -> list[dict]:
    """The configurations a settling loop takes: the top ``settle.top_k`` real configurations that
    finished every selection seed (never a no-op, never a raced or failed one)."""
    rows = [r for r in config_rows(records, space) if r["status"] == "complete" and r["objective"] is not None]
    return rows[: space.settle.top_k]


def _check_settle_only(space: SearchSpace, out: str | None) -> None:
    from analysis.schema import read_records

    run_dir = run_dir_of(space, out)
    results = run_dir / "results.jsonl"
    records = read_records(results).records if results.exists() else []
    if not _shortlist(space, records):
        raise UsageError(f"--settle-only: {run_dir} has no finished selection yet (no configuration "
                         f"completed every selection seed): run the search first")


def check_settle_inputs(space: SearchSpace) -> None:
    """Bad settling input is one error line before anything trains."""
    from analysis.errors import AnalysisInputError
    from analysis.verdict import check_settle_budget

    st = space.settle
    try:
        check_settle_budget(st.top_k, round_size=st.round_size, max_seeds_per_config=st.max_seeds_per_config,
                            total_budget=st.total_budget)
    except AnalysisInputError as exc:
        raise UsageError(f"settle: {exc}") from None


def _settle(space: SearchSpace, runner, store: StoreClient, progress: Progress):
    """Fresh seeds in rounds for the shortlisted configurations until each has a verdict or its
    budget is spent (``analysis.verdict.settle_plan``: alpha spending over every look, so the error
    rates hold however many rounds it takes). Each round's seeds of all configurations run at once
    on the worker groups, with shared baselines; each record carries its round, so a resumed search
    replays the looks it took. Returns the last plan (``SettlePlan``)."""
    from concurrent.futures import ThreadPoolExecutor

    from analysis.verdict import settle_plan, settle_state
    from fsray.errors import RunFailed

    say, st = progress.say, space.settle
    shortlist = _shortlist(space, store.all_records())
    if not shortlist:
        say("[tune] settle: no configuration finished every selection seed: nothing to settle")
        return None
    rows = {r["config_hash"]: r for r in shortlist}
    task = task_label(space.task.name, space.task.options)
    fresh = space.seeds.confirmation(st.max_seeds_per_config)   # the same fresh seeds for all: shared baselines
    failed: set[str] = set()
    say(f"[tune] settling {len(rows)} configuration(s) on fresh seeds, delta {space.objective.delta:g}, "
        f"rounds of {st.round_size}, at most {st.max_seeds_per_config} seeds each")

    recorded = {h: v for h, v in settle_state(store.all_records(), metric=space.objective.delta_key).horizon.items()
                if h in rows and v != st.max_seeds_per_config}
    if recorded:
        h, v = next(iter(recorded.items()))
        raise UsageError(f"settle.max_seeds_per_config is {st.max_seeds_per_config}, but {rows[h]['label']} was "
                         f"settled with a horizon of {v} seeds: keep {v} (the error rates hold for the "
                         f"horizon a design started with); raise settle.total_budget to go on")

    def plan_now():
        state = settle_state(store.all_records(), metric=space.objective.delta_key)
        deltas = {h: state.deltas.get(h, []) for h in rows if h not in failed}
        used = sum(len(state.deltas.get(h, [])) for h in rows)
        budget = None if st.total_budget is None else max(0, st.total_budget - used)
        plan = settle_plan(deltas, space.objective.delta, looks_by_config={h: state.looks.get(h, []) for h in deltas},
                           max_seeds_per_config=st.max_seeds_per_config, round_size=st.round_size,
                           total_budget=budget, noop=state.noop, what=task)
        return plan, state.last_round + 1

    def run_config(h: str, seeds: list[int], rnd: int) -> None:
        params = {k: rows[h]["config"][k] for k in space.space}
        try:
            evaluate_config(space, runner, store, params, seeds, stage="confirmation",
                            trial_id=f"settle-{rnd}", race=False,
                            record_extra={"settle": {"round": rnd, "horizon": st.max_seeds_per_config}})
        except RunFailed as exc:
            failed.add(h)
            say(f"[tune] settle: {rows[h]['label']} failed and leaves the settling: {exc}")

    plan, rnd = plan_now()
    while not plan.done:
        todo = {}
        for h, k in plan.round().items():
            left = [s for s in fresh if store.lookup(h, s, "confirmation") is None]
            todo[h] = left[:k]
        todo = {h: seeds for h, seeds in todo.items() if seeds}
        if not todo:
            break
        new_seeds = sorted({s for seeds in todo.values() for s in seeds})
        missing = sum(store.baseline(runner.baseline_key(s)) is None for s in new_seeds)
        progress.plan(missing + sum(len(v) for v in todo.values()))
        # baselines and FS runs of the round go out together (evaluate_config trains the missing
        # baselines in the background; configurations needing the same one share its run)
        with ThreadPoolExecutor(len(todo)) as pool:
            list(pool.map(lambda item: run_config(item[0], item[1], rnd), todo.items()))
        plan, rnd = plan_now()
        said = ", ".join(f"{rows[h]['label']}: {v.label(space.objective.delta)}" for h, v in plan.configs.items()
                         if h in rows)
        say(f"[tune] settle round {rnd - 1} done: {said}")
    return plan


def _settle_summary(plan, space: SearchSpace, store: StoreClient) -> dict | None:
    if plan is None:
        return None
    labels = {r["config_hash"]: r for r in config_rows(store.all_records(), space)}
    out = []
    for h, v in plan.configs.items():
        row = labels.get(h, {})
        out.append({"config_hash": h, "label": row.get("label", h), "config": row.get("config"),
                    "verdict": v.verdict, "label_text": v.label(space.objective.delta),
                    "ge_delta": v.ge_delta, "n": v.n, "mean": v.mean, "lo": v.lo, "hi": v.hi,
                    "basis": v.basis, "seeds_to_decide": v.seeds_to_decide,
                    "would_decide": v.would_decide, "within_horizon": v.within_horizon, "note": v.note})
    family = plan.family
    for c in out:   # the plan names configurations by hash; a reader wants their labels
        family = family.replace(c["config_hash"], c["label"])
    return {"delta": space.objective.delta, "family": family, "configs": out,
            "undecided": [c for c in out if c["verdict"] == "undecided"]}


def _baseline_summary(records: list[dict], space: SearchSpace) -> dict | None:
    """How well no_fs itself learned (per selection seed) against the task's chance level: an FS
    delta means little on a model that learned nothing."""
    seen: dict[int, dict] = {}
    chance = None
    for r in records:
        if r.get("stage") == "selection" and isinstance(r.get("baseline"), dict) and r["baseline"].get("status") == "ok":
            seen.setdefault(int(r["seed"]), r["baseline"])
            chance = chance or r.get("chance")
    if not seen:
        return None
    runs = [seen[s] for s in sorted(seen)]
    return {"seeds": sorted(seen), "seq_acc": [b.get("seq_acc") for b in runs],
            "token_acc": [b.get("token_acc") for b in runs], "chance": chance}


def _summarise(space: SearchSpace, store: StoreClient, run_dir: Path, seconds: float,
               settled=None) -> dict:
    records = store.all_records()
    rows = config_rows(records, space)
    confirmation = config_rows(records, space, stage="confirmation")
    importance = knob_importance(space, [r for r in rows if r["status"] != "failed"])
    write_importance(run_dir / "importance.json", importance)
    summary = {
        "name": space.name,
        "run_dir": str(run_dir),
        "objective": space.objective.kind,
        "metric": space.objective.metric,
        "seeds": space.seeds.selection(),
        "seconds": seconds,
        "counts": run_counts(records, store.baselines_trained(), space),
        "selection": rows,
        "confirmation": confirmation,
        "best": best_row(rows),
        "failures": [{"label": r["label"], "config_hash": r["config_hash"], "failure": r["failure"]}
                     for r in rows if r["status"] == "failed"],
        "importance": importance,
        "settle": _settle_summary(settled, space, store),
        "baselines": _baseline_summary(records, space),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
