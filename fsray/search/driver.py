"""The search driver: Ray Tune + Optuna over FS configurations, seed variance in the objective.

A search, in order (each step in its own module):

1. every check of the inputs against the run directory, before anything is written
   (``fsray.search.rundir``, which also lists what a run directory holds, and ``fsray.paths``);
   then the run directory's lock (one search at a time) and SIGINT/SIGTERM turned into a stop
   (``fsray.search.signals``);
2. start (or join, with RAY_ADDRESS) Ray (``fsray.cluster``); start the store actor on this node
   (``fsray.search.store``) and, for the real trainable, the Ray Train worker groups
   (``fsray.harness``);
3. the selection (``fsray.search.tuning``): the missing selection baselines in one go, then the
   Tuner, each trial = ``evaluate_config`` over the selection seeds with racing;
4. the confirmation of the best configuration on fresh seeds (``fsray.search.confirm``), or the
   settling rounds of the shortlist (``fsray.search.settle``);
5. the closing summary (``fsray.search.closing``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from fsray.search.closing import summarise
from fsray.search.confirm import confirm
from fsray.search.evaluate import StoreClient, make_runner
from fsray.search.progress import Progress, quiet_output
from fsray.search.rundir import (RAY_LOG, check_run_dir, check_same_search, prepare_run_dir, run_dir_of,
                                 train_storage, write_space)
from fsray.search.settle import check_settle_horizon, check_settle_inputs, check_settle_only, settle
from fsray.search.signals import check as stop_check
from fsray.search.signals import stop_on_signals, stopped
from fsray.search.space import SearchSpace
from fsray.search.store import say_notes, start_store_actor

# Tune writes its experiment state at most this often; small so a SIGKILL loses little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

__all__ = ["run_search", "prepare_run_dir", "run_dir_of", "check_settle_inputs"]


def run_search(space: SearchSpace, out: str | None = None, resume: bool = False,
               confirm_seeds: int | None = None, say: Callable[[str], None] | None = None,
               debug: bool = False, settle_only: bool = False, inputs=(),
               callbacks: list | None = None) -> dict:
    """Run (or resume) a search to its summary; returns the summary dict. Unless ``debug``, Ray's
    own output goes to ``<run>/ray.log``. ``settle_only``: no more selection; settle the finished
    selection of an existing run directory (``--settle-only``). ``inputs``: the search file, which
    the run directory may never be. ``callbacks``: more Ray Tune callbacks for the selection
    (experiment trackers: ``fsray.search.tracking``).

    Every input is checked against the run directory before anything in it is written; a second
    search on the same directory is refused; SIGINT/SIGTERM stop the search at once
    (``fsray.errors.Interrupted``), with nothing confirmed or summarised."""
    from fsray.paths import RunLock

    if space.settle.enabled or settle_only or space.contrast is not None:
        check_settle_inputs(space)
    if settle_only:
        space = space.model_copy(update={"settle": space.settle.model_copy(update={"enabled": True})})
    continuing = resume or settle_only
    if settle_only:
        check_settle_only(space, out)
    run_dir = check_run_dir(space, out, continuing, inputs)
    if continuing:
        check_same_search(run_dir, space)
    runner = make_runner(space)   # the seed runs' spec validated, the model's depth read: no writes
    if space.settle.enabled and (run_dir / "results.jsonl").exists():
        from analysis.schema import read_records

        check_settle_horizon(space, read_records(run_dir / "results.jsonl").records)
    run_dir = prepare_run_dir(space, out, continuing, inputs)   # the first write: the directory
    with RunLock(run_dir), stop_on_signals():
        write_space(run_dir, space)
        with quiet_output(run_dir / RAY_LOG, enabled=not debug) as terminal:
            progress = Progress(say, stream=terminal)
            try:
                return _run_search(space, run_dir, resume, confirm_seeds, progress, settle_only, runner,
                                       callbacks)
            finally:
                progress.close()


def _run_search(space: SearchSpace, run_dir: Path, resume: bool, confirm_seeds: int | None,
                progress: Progress, settle_only: bool = False, runner=None,
                callbacks: list | None = None) -> dict:
    import ray

    from fsray.cluster import start_ray

    say = progress.say
    search = space   # a contrast's selection runs at its first level (fsray.search.contrast)
    if search.contrast is not None:
        space = search.at_level(search.contrast.levels[0])
        runner = None   # the first level's runner (its task options), made below
    # A cluster when RAY_ADDRESS names one (checked: it answers, token auth as Ray sets it up, one
    # line otherwise); otherwise always a fresh local instance of our own.
    started = start_ray()
    t0 = time.perf_counter()
    harness = actor = None
    try:
        from fsray.search.capacity import check_resources

        check_resources(space)   # a request no node can ever satisfy: one line, at once
        actor = start_store_actor(run_dir, space.baseline_cache, space.objective.model_dump())
        store = StoreClient(actor)
        say_notes(store, say)    # damaged lines set aside when the store opened
        runner = runner or make_runner(space)   # reads the model's depth once; trials get it handed over
        if space.trainable == "real":
            harness = runner.client = _start_harness(space, runner, run_dir, progress)
        n_layer = runner.n_layer
        say(f"[tune] {space.name}: {space.tuner.trials} trials x {len(space.knobs)} knobs, "
            f"seeds {space.seeds.selection()}, objective {space.objective.kind}, "
            f"{space.trainable} trainable, n_layer {n_layer}, run dir {run_dir}")
        if resume:
            say(f"[tune] resuming: {len(store.all_records())} paired seeds already recorded")

        if settle_only:
            say(f"[tune] --settle-only: {len(store.all_records())} paired seeds recorded; no more selection")
        else:
            from fsray.search.tuning import select   # imports Ray Tune

            select(space, run_dir, resume, runner, store, actor, harness, n_layer, progress, callbacks)
        stop_check()   # a stop Tune took for the end of its loop is not a finished selection

        settled = contrasted = None
        if search.contrast is not None:   # the shortlist at both levels until the contrast decides
            from fsray.search.contrast import settle_search

            contrasted = settle_search(search, runner, store, run_dir, progress, _start_harness)
        elif space.settle.enabled:   # the settling rounds are the confirmation, on fresh seeds
            settled = settle(space, runner, store, progress)
        else:
            confirm_n = space.seeds.confirm if confirm_seeds is None else confirm_seeds
            if confirm_n > 0:
                progress.plan(2 * confirm_n)
                confirm(space, runner, store, confirm_n, say)
        say_notes(store, say)
        stop_check()
        summary = summarise(space, store, run_dir, time.perf_counter() - t0, settled, contrasted)
    finally:
        if stopped() is not None:
            # a stop: end at once. The process exits right after its one line (fsray.cli); Ray's
            # processes and this job's actors end with it, and threads still in a seed run must not
            # find Ray shut down under them (Ray ends the process then, with its own status).
            _stop_at_once(harness, actor)
        else:
            if harness is not None:
                harness.close()
            if actor is not None:
                # the store actor holds the run directory's writer lock: end it with the search,
                # also when Ray lives on (a shared instance), so a --resume can take the lock at once
                ray.kill(actor)
            if started:
                ray.shutdown()
    return summary


def _stop_at_once(harness, actor) -> None:
    import ray

    for end in ((lambda: harness.close(wait=False)) if harness is not None else None,
                (lambda: ray.kill(actor)) if actor is not None else None):
        if end is not None:
            try:
                end()
            except Exception:  # noqa: BLE001 - stopping: what is gone is gone
                pass


def _start_harness(space: SearchSpace, runner, run_dir: Path, progress: Progress):
    """The search's long-lived Ray Train worker groups, one per concurrent trial."""
    from fsray.harness import SeedRunHarness

    r = space.resources
    return SeedRunHarness(runner.spec, groups=space.tuner.concurrency, workers=r.workers,
                          gpus_per_worker=r.gpus_per_worker, storage_path=train_storage(space, run_dir),
                          name=space.name, max_retries=r.max_retries,
                          capacity_timeout_s=r.capacity_timeout_s, on_event=progress.on_event)
