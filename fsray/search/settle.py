"""The settling loop: fresh seeds in rounds for the shortlisted configurations until each has a
verdict or its budget is spent (``analysis.verdict.settle_plan``: alpha spending over every look,
so the error rates hold however many rounds it takes)."""

from __future__ import annotations

from fsray.errors import UsageError
from analysis.schema import task_label
from fsray.search.evaluate import StoreClient, evaluate_config
from fsray.search.progress import Progress
from fsray.search.rundir import run_dir_of
from fsray.search.space import SearchSpace
from fsray.search.summary import complete_rows, config_rows


def shortlist(space: SearchSpace, records: list[dict]) -> list[dict]:
    """The configurations a settling loop takes: the top ``settle.top_k`` complete real
    configurations of the selection (``complete_rows``)."""
    return complete_rows(config_rows(records, space))[: space.settle.top_k]


def check_settle_only(space: SearchSpace, out: str | None) -> None:
    """``--settle-only`` needs a run directory with a finished selection."""
    from analysis.schema import read_records

    run_dir = run_dir_of(space, out)
    results = run_dir / "results.jsonl"
    records = read_records(results).records if results.exists() else []
    if not shortlist(space, records):
        raise UsageError(f"--settle-only: {run_dir} has no finished selection yet (no configuration "
                         f"completed every selection seed): run the search first")


def check_settle_horizon(space: SearchSpace, records: list[dict]) -> None:
    """A shortlisted configuration already settled with another seed horizon cannot go on with this
    one; checked by the driver before anything is written, and again by ``settle``."""
    from analysis.verdict import settle_state

    st = space.settle
    rows = {r["config_hash"]: r for r in shortlist(space, records)}
    recorded = {h: v for h, v in settle_state(records, metric=space.objective.metric_key).horizon.items()
                if h in rows and v != st.max_seeds_per_config}
    if recorded:
        h, v = next(iter(recorded.items()))
        raise UsageError(f"settle.max_seeds_per_config is {st.max_seeds_per_config}, but {rows[h]['label']} was "
                         f"settled with a horizon of {v} seeds: keep {v} (the error rates hold for the "
                         f"horizon a design started with); raise settle.total_budget to go on")


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


def settle(space: SearchSpace, runner, store: StoreClient, progress: Progress):
    """Fresh seeds in rounds for the shortlisted configurations until each has a verdict or its
    budget is spent. Each round's seeds of all configurations run at once on the worker groups,
    with shared baselines; each record carries its round, so a resumed search replays the looks it
    took. Returns the last plan (``SettlePlan``), None when nothing was shortlisted."""
    from concurrent.futures import ThreadPoolExecutor

    from analysis.verdict import settle_plan, settle_state
    from fsray.errors import RunFailed
    from fsray.search.signals import check as stop_check
    from fsray.search.store import say_notes

    say, st = progress.say, space.settle
    listed = shortlist(space, store.all_records())
    if not listed:
        say("[tune] settle: no configuration finished every selection seed: nothing to settle")
        return None
    rows = {r["config_hash"]: r for r in listed}
    task = task_label(space.task.name, space.task.options)
    fresh = space.seeds.confirmation(st.max_seeds_per_config)   # the same fresh seeds for all: shared baselines
    failed: set[str] = set()
    say(f"[tune] settling {len(rows)} configuration(s) on fresh seeds, delta {space.objective.min_effect:g}, "
        f"rounds of {st.round_size}, at most {st.max_seeds_per_config} seeds each")

    check_settle_horizon(space, store.all_records())

    def plan_now():
        state = settle_state(store.all_records(), metric=space.objective.metric_key)
        deltas = {h: state.deltas.get(h, []) for h in rows if h not in failed}
        used = sum(len(state.deltas.get(h, [])) for h in rows)
        budget = None if st.total_budget is None else max(0, st.total_budget - used)
        plan = settle_plan(deltas, space.objective.min_effect, looks_by_config={h: state.looks.get(h, []) for h in deltas},
                           max_seeds_per_config=st.max_seeds_per_config, round_size=st.round_size,
                           total_budget=budget, noop=state.noop, what=task, design=st.design,
                           borrow=st.borrow, curtail=st.curtail)
        return plan, state.last_round + 1

    def run_config(h: str, seeds: list[int], rnd: int) -> None:
        params = {k: rows[h]["config"][k] for k in space.knobs}
        try:
            evaluate_config(space, runner, store, params, seeds, stage="confirmation",
                            trial_id=f"settle-{rnd}", race=False,
                            record_extra={"settle": {"round": rnd, "horizon": st.max_seeds_per_config,
                                                      "design": st.design, "curtail": st.curtail}})
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
        missing = sum(store.baseline(runner.baseline_key(s), s) is None for s in new_seeds)
        progress.plan(missing + sum(len(v) for v in todo.values()))
        # baselines and FS runs of the round go out together (evaluate_config trains the missing
        # baselines in the background; configurations needing the same one share its run)
        pool = ThreadPoolExecutor(len(todo), thread_name_prefix="fsray-settle")
        try:
            list(pool.map(lambda item: run_config(item[0], item[1], rnd), todo.items()))
        finally:
            # never wait here for runs in flight: a stop (Ctrl-C, SIGTERM) ends the search at once;
            # their seeds have no record, so --resume runs them
            pool.shutdown(wait=False, cancel_futures=True)
        say_notes(store, say)
        stop_check()   # a stop during the round: no verdict from a round cut short
        plan, rnd = plan_now()
        said = ", ".join(f"{rows[h]['label']}: {v.label(space.objective.min_effect)}" for h, v in plan.configs.items()
                         if h in rows)
        say(f"[tune] settle round {rnd - 1} done: {said}")
    return plan
