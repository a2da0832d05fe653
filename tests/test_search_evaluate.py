"""One configuration over seeds, without Ray: racing, baseline sharing, no-ops, failures, cache.

``evaluate_config`` talks to the store through its plain methods, so an in-process
``ResultsStore`` stands in for the actor here. Failing seed runs are injected by the test
(``tests/sim_faults.py``), not by the simulated trainable.
"""

from __future__ import annotations

import json
import time

import numpy as np

import pytest

import paired_schema
import sim_faults
from analysis.schema import read_records
from fsray.errors import RunFailed
from fsray.fsconfig import config_hash
from fsray.search import simulated
from fsray.search.evaluate import SimulatedRunner, evaluate_config
from fsray.search.simulated import true_effect
from fsray.search.space import parse_space
from fsray.search.store import ResultsStore

SEEDS = [0, 1, 2, 3, 4, 5]
# fs_layer_start 3 crashes on seed 2, 4 diverges (NaN metrics), 5 runs out of memory
FAULTS = [{"when": {"fs_layer_start": 3}, "kind": "raise", "at_seed": 2},
          {"when": {"fs_layer_start": 4}, "kind": "nan"},
          {"when": {"fs_layer_start": 5}, "kind": "oom"}]


def _space(**extra):
    raw = {
        "name": "unit", "trainable": "simulated", "task": {"name": "kv_retrieval"},
        "seeds": {"ids": SEEDS},
        "space": {"fs_layer_start": {"type": "int", "low": 1, "high": 12},
                  "fs_norm": {"type": "categorical", "choices": [True, False]}},
        "simulated": {
            "n_layer": 12, "noise_sd": 0.005,
            "effects": {"fs_layer_start": {"peak": 8, "width": 1.5, "height": 0.05},
                        "fs_norm": {"values": {"true": 0.0, "false": -0.08}}},
        },
    }
    raw.update(extra)
    return parse_space(raw)


class CountingRunner(SimulatedRunner):
    """The simulated runner, counting every training run it makes."""

    def __init__(self, space):
        super().__init__(space)
        self.baseline_seeds: list[int] = []
        self.fs_seeds: list[tuple] = []

    def train_baselines(self, seeds):
        self.baseline_seeds += list(seeds)
        return super().train_baselines(seeds)

    def fs_runs(self, cfg, seeds, baselines, on_run, **kw):
        def counted(seed, run, failure):
            self.fs_seeds.append((cfg.fs_layer_start, cfg.fs_norm, seed))
            return on_run(seed, run, failure)

        super().fs_runs(cfg, seeds, baselines, counted, **kw)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    sim_faults.patch(monkeypatch, FAULTS)
    space = _space()
    store = ResultsStore(str(tmp_path / "run"), str(tmp_path / "cache"), space.objective.model_dump())
    return space, store, CountingRunner(space)


def test_racing_stops_a_clearly_bad_config_and_counts_runs_saved(setup):
    space, store, runner = setup
    good = evaluate_config(space, runner, store, {"fs_layer_start": 8, "fs_norm": True}, SEEDS)
    assert good["n"] == 6 and good["raced"] is None
    assert good["mean"] == pytest.approx(0.05, abs=0.01)

    bad = evaluate_config(space, runner, store, {"fs_layer_start": 1, "fs_norm": False}, SEEDS)
    # racing looks after every seed from the third on, with the verdicts' repeated (alpha-spending) bound
    assert bad["raced"] is not None and "raced out after 3/6" in bad["raced"]
    assert bad["n"] == 3  # 3 FS runs saved
    assert [s for (l, n, s) in runner.fs_seeds if l == 1] == [0, 1, 2]
    assert bad["hi"] is not None and bad["mean"] < good["lo"]

    # Without racing the same bad config runs every seed.
    unraced = _space(racing={"enabled": False})
    evaluate_config(unraced, runner, store, {"fs_layer_start": 2, "fs_norm": False}, SEEDS)
    assert [s for (l, n, s) in runner.fs_seeds if l == 2] == SEEDS


def test_a_promising_config_is_not_raced(setup):
    space, store, runner = setup
    evaluate_config(space, runner, store, {"fs_layer_start": 7, "fs_norm": True}, SEEDS)
    near = evaluate_config(space, runner, store, {"fs_layer_start": 8, "fs_norm": True}, SEEDS)
    assert near["raced"] is None and near["n"] == 6


def test_baselines_trained_once_and_shared_across_configs_and_searches(setup, tmp_path):
    space, store, runner = setup
    evaluate_config(space, runner, store, {"fs_layer_start": 8, "fs_norm": True}, SEEDS)
    evaluate_config(space, runner, store, {"fs_layer_start": 6, "fs_norm": True}, SEEDS, race=False)
    assert sorted(runner.baseline_seeds) == SEEDS  # once per seed, not once per candidate
    assert store.baselines_trained() == 6
    recs = store.all_records()
    by_seed = {}
    for r in recs:
        by_seed.setdefault(r["seed"], []).append(r["baseline"]["token_acc"])
    assert all(len(set(v)) == 1 and len(v) == 2 for v in by_seed.values())

    # A second search (new run dir) with the same cache trains no baseline at all.
    other = ResultsStore(str(tmp_path / "run2"), str(tmp_path / "cache"), space.objective.model_dump())
    runner2 = CountingRunner(space)
    evaluate_config(space, runner2, other, {"fs_layer_start": 9, "fs_norm": True}, SEEDS)
    assert runner2.baseline_seeds == [] and other.baselines_trained() == 0
    assert all(r["baseline"]["cached"] for r in other.all_records())


def test_noop_config_recorded_without_training(setup):
    space, store, runner = setup
    out = evaluate_config(space, runner, store, {"fs_layer_start": 12, "fs_norm": True}, SEEDS)
    assert runner.fs_seeds == [] and runner.baseline_seeds == []
    recs = store.all_records()
    assert [r["status"] for r in recs] == ["noop"] * 6
    assert "no layer is seeded" in recs[0]["noop_reason"]
    # recorded as A/A evidence (every delta exactly 0) but never given an objective value
    assert out["mean"] == 0.0 and out["signs"] == [0, 6, 0] and out["deltas"] == [0.0] * 6
    assert out["noop"] is True and out["objective"] is None


@pytest.mark.parametrize("lstart, reason, failed_seed", [
    (3, "simulated crash", 2), (4, "diverged", 0), (5, "out of memory", 0)])
def test_failures_recorded_with_reason_and_never_retried(setup, lstart, reason, failed_seed):
    space, store, runner = setup
    with pytest.raises(RunFailed, match=reason):
        evaluate_config(space, runner, store, {"fs_layer_start": lstart, "fs_norm": True}, SEEDS)
    recs = read_records(store.path).records
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["seed"] == failed_seed and reason in failed[0]["failure"]
    assert len([r for r in recs if r["status"] == "ok"]) == failed_seed  # seeds before it kept
    n_runs = len(runner.fs_seeds)
    with pytest.raises(RunFailed):
        evaluate_config(space, runner, store, {"fs_layer_start": lstart, "fs_norm": True}, SEEDS)
    assert len(runner.fs_seeds) == n_runs  # the failure is known: nothing trained again


def test_store_is_the_cache_after_a_restart(setup, tmp_path):
    space, store, runner = setup
    params = {"fs_layer_start": 8, "fs_norm": True}
    # A first process evaluated three seeds and died.
    evaluate_config(space, runner, store, params, SEEDS[:3])
    first_lines = store.path.read_text()
    reopened = ResultsStore(str(tmp_path / "run"), str(tmp_path / "cache"), space.objective.model_dump())
    runner2 = CountingRunner(space)
    resumed = evaluate_config(space, runner2, reopened, params, SEEDS)
    # only what the first process did not do is trained (its baselines came from the cache)
    assert [s for (_, _, s) in runner2.fs_seeds] == [3, 4, 5] and runner2.baseline_seeds == [3, 4, 5]
    assert reopened.path.read_text().startswith(first_lines)
    fresh_store = ResultsStore(str(tmp_path / "fresh"), str(tmp_path / "cache2"),
                               space.objective.model_dump())
    fresh = evaluate_config(space, CountingRunner(space), fresh_store, params, SEEDS)
    assert resumed["deltas"] == fresh["deltas"] and resumed["lo"] == fresh["lo"]


def test_simulated_surface_is_the_documented_one():
    space = _space()
    cfg = space.fs_config({"fs_layer_start": 8, "fs_norm": True})
    assert true_effect(space.simulated, cfg) == pytest.approx(0.05)
    cfg = space.fs_config({"fs_layer_start": 5, "fs_norm": False})
    assert true_effect(space.simulated, cfg) == pytest.approx(0.05 * 0.1353352832 - 0.08, rel=1e-6)
    assert true_effect(space.simulated, space.fs_config({"fs_layer_start": 12, "fs_norm": False})) == 0.0


def test_records_are_valid_fsray_paired_lines(setup):
    """Every line the store holds (ok, no-op and failed seeds) is an fsray.paired/1 record: the
    reader's validation and the full documented shape, with the values of what was run."""
    space, store, runner = setup
    good = space.fs_config({"fs_layer_start": 8, "fs_norm": True})
    noop = space.fs_config({"fs_layer_start": 12, "fs_norm": True})
    crash = space.fs_config({"fs_layer_start": 3, "fs_norm": True})
    out = evaluate_config(space, runner, store, {"fs_layer_start": 8, "fs_norm": True}, SEEDS,
                          trial_id="t-good", race=False)
    evaluate_config(space, runner, store, {"fs_layer_start": 12, "fs_norm": True}, SEEDS[:2],
                    trial_id="t-noop")
    with pytest.raises(RunFailed):
        evaluate_config(space, runner, store, {"fs_layer_start": 3, "fs_norm": True}, SEEDS,
                        trial_id="t-crash", race=False)

    lines = store.path.read_text().splitlines()
    got = read_records(store.path)
    assert got.problems == [] and len(got.records) == len(lines) == 6 + 2 + 3
    for i, line in enumerate(lines, 1):
        paired_schema.check(json.loads(line), f"results.jsonl:{i}")
    by_cfg: dict[str, list[dict]] = {}
    for r in got.records:
        assert r["task"] == "kv_retrieval" and r["stage"] == "selection"
        by_cfg.setdefault(r["config_hash"], []).append(r)
    assert set(by_cfg) == {config_hash(good), config_hash(noop), config_hash(crash)}

    # ok: the configuration run, each side the simulated run of that seed, delta = fs - baseline
    recs = by_cfg[config_hash(good)]
    assert [r["seed"] for r in recs] == SEEDS and out["n"] == 6
    for r, delta in zip(recs, out["deltas"]):
        base = simulated.baseline_run(space.simulated, r["seed"])
        fs = simulated.fs_run(space.simulated, good, r["seed"], base)
        assert (r["status"], r["failure"], r["trial_id"]) == ("ok", None, "t-good")
        assert r["config"] == good.model_dump() and r["config_label"] == good.label()
        assert (r["baseline"]["mode"], r["fs"]["mode"]) == ("no_fs", "prompt_fs")
        assert r["baseline"]["token_acc"] == base["token_acc"] and r["fs"]["token_acc"] == fs["token_acc"]
        assert r["fs"]["token_acc"] - r["baseline"]["token_acc"] == pytest.approx(delta, abs=1e-15)
        assert r["baseline_key"] == runner.baseline_key(r["seed"])
    # no-op: recorded without training, the FS side is the baseline itself
    for r in by_cfg[config_hash(noop)]:
        assert r["status"] == "noop" and "no layer is seeded" in r["noop_reason"]
        assert r["fs"]["token_acc"] == r["baseline"]["token_acc"] and r["trial_id"] == "t-noop"
    # failed: the seeds before the crash are kept, the crashed seed says why
    recs = by_cfg[config_hash(crash)]
    assert [(r["seed"], r["status"]) for r in recs] == [(0, "ok"), (1, "ok"), (2, "failed")]
    assert "simulated crash" in recs[2]["failure"]
    assert recs[2]["fs"] is None or (recs[2]["fs"]["mode"], recs[2]["fs"]["status"]) == ("prompt_fs", "failed")

    # the strict schema catches what the reader's validation lets through
    rec = got.records[0]
    for broken in ({**rec, "fs": {**rec["fs"], "mode": "no_fs"}}, {**rec, "seed": -1},
                   {**rec, "failure": "why"}, {**rec, "config_hash": "XYZ"}, {**rec, "stage": "other"},
                   {**rec, "fs": {**rec["fs"], "token_acc": 1.5}}):
        with pytest.raises(paired_schema.jsonschema.ValidationError):
            paired_schema.check(broken)


def _pair(seed, base_learned, fs_learned, d=0.0):
    run = lambda acc, learned: {"token_acc": acc, "seq_acc": acc, "learned": learned}  # noqa: E731
    return {"status": "ok", "seed": seed, "baseline": run(0.5, base_learned),
            "fs": run(0.5 + d, fs_learned)}


def test_objectives_from_analysis_statistics():
    from analysis.bimodal import rate_change_interval
    from analysis.stats import mean_interval
    from fsray.search.objective import config_stats
    from fsray.search.space import ObjectiveSection

    recs = [_pair(i, False, True, d) for i, d in enumerate([0.1, 0.3, 0.2, 0.25, 0.15])]
    lb = config_stats(recs, ObjectiveSection(kind="lower_bound"))
    assert lb["objective"] == pytest.approx(mean_interval([0.1, 0.3, 0.2, 0.25, 0.15])[0])
    k2 = config_stats(recs, ObjectiveSection(kind="mean_minus_k_std", k=2.0))
    assert k2["objective"] == pytest.approx(0.2 - 2 * np.std([0.1, 0.3, 0.2, 0.25, 0.15], ddof=1))
    # breakthrough: 5 of 5 seeds learn only with FS -> the rate change is clearly positive
    bt = config_stats(recs, ObjectiveSection(kind="breakthrough_lower_bound"))
    assert bt["objective"] == pytest.approx(float(rate_change_interval(0, 5, 0, 0)[0])) and bt["objective"] > 0
    mixed = [_pair(0, True, True), _pair(1, True, False), _pair(2, False, True), _pair(3, False, False)]
    assert config_stats(mixed, ObjectiveSection(kind="breakthrough_lower_bound"))["objective"] < 0


def test_single_writer_waits_for_a_previous_writer_to_exit(tmp_path, monkeypatch):
    """A killed search's store actor can outlive its driver; a resumed store must not read the
    results until that writer is gone, or it misses its last records and retrains their seeds."""
    import subprocess
    import sys

    from fsray.search import store as store_mod

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from fsray.search.store import take_writer_lock\n"
         f"fh = take_writer_lock({str(run)!r}); print('locked', flush=True); time.sleep(float(sys.argv[1]))",
         "1.5"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(store_mod.WriterBusy, match=r"still being written by another fsray process \(pid"):
        store_mod.take_writer_lock(run, wait_s=0.3)
    t = time.monotonic()
    store = ResultsStore(str(run), str(tmp_path / "cache"), single_writer=True)  # waits for the exit
    assert holder.wait() == 0 and time.monotonic() - t > 0.5
    with pytest.raises(store_mod.WriterBusy):  # and now it holds the lock itself
        store_mod.take_writer_lock(run, wait_s=0.0)
    del store


def test_racing_error_rate_holds_over_all_looks():
    """A candidate whose true mean equals the incumbent's bound is raced out (wrongly) at most
    (1 - level) / 2 of the time over all its looks, as the verdicts' alpha spending promises."""
    import numpy as np

    from fsray.search.objective import race_decision
    from fsray.search.space import RacingSection

    racing = RacingSection(enabled=True, min_seeds=3, level=0.9)
    rng = np.random.default_rng(7)
    n_planned, reps, stopped = 10, 2000, 0
    for _ in range(reps):
        d = rng.normal(0.0, 0.05, n_planned)
        stopped += any(race_decision(list(d[:n]), n_planned, 0.0, racing) for n in range(3, n_planned))
    rate = stopped / reps
    assert rate <= 0.05 + 3 * (0.05 * 0.95 / reps) ** 0.5, rate
    # ...while a clearly worse candidate is stopped early
    assert race_decision([-0.2, -0.21, -0.19], n_planned, 0.0, racing) is not None
