"""Faults of a search never cost data (issue 24): real ``fsray tune`` processes stopped by SIGINT,
SIGTERM and SIGKILL mid-selection and mid-settle and resumed, several times each; one search per run
directory; output paths guarded before any work; resources no node has; a damaged or missing
Optuna study rebuilt from the records; nothing in the run directory touched before the inputs pass.

The killed searches run through ``tests/sim_faults.py`` (its own local Ray, every run made logged);
the others share the session's local Ray (``ray_local``) and call the CLI in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from analysis.schema import read_records
from fsray.cli import main

REPO = Path(__file__).resolve().parents[1]
SIM_FAULTS = str(Path(__file__).resolve().parent / "sim_faults.py")
_ENV = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}


def _space(tmp_path: Path, **changes) -> dict:
    raw = {
        "name": "faults", "trainable": "simulated",
        "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
        "seeds": {"count": 3},
        "space": {"fs_layer_start": {"type": "categorical", "choices": [3, 6, 8, 12]},
                  "alpha_init": {"type": "float", "low": -4.0, "high": -1.0}},
        "search": {"sampler": "tpe", "sampler_seed": 1, "trials": 6, "concurrency": 2},
        "racing": {"enabled": False},
        "simulated": {"n_layer": 12, "noise_sd": 0.01, "seconds_per_run": 0.0,
                      "effects": {"fs_layer_start": {"peak": 8, "width": 2, "height": 0.04}}},
        "baseline_cache": str(tmp_path / "cache"),
    }
    raw.update(changes)
    return raw


def _write(tmp_path: Path, raw: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _keys(path: Path) -> Counter:
    if not path.exists():
        return Counter()
    return Counter((r["config_hash"], r["seed"], r["stage"]) for r in read_records(path).records)


def _session_processes(session: str) -> list[str]:
    """Processes still running whose command line names a Ray session directory."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if session in cmd:
            left.append(f"{pid} {cmd[:120]}")
    return left


# ---------------------------------------------------------------------------------------------
# 5. signals and resume, with real processes


@pytest.mark.slow
def test_signals_and_sigkill_mid_selection_and_settle_then_resume(tmp_path):
    """Two stops mid-selection (SIGINT, SIGKILL) and two mid-settle (SIGTERM, SIGKILL), each
    followed by --resume: the stops exit at once with one line and 130/143 and write
    no summary, and leave no process of the driver's Ray instance running; the finished search has exactly search.trials configurations, every (config, seed)
    recorded once, nothing recorded before a stop trained again after it, and no trial left RUNNING
    in the Optuna study."""
    from sim_faults import write_spec

    # noisy enough that settling takes several rounds (two stops land in it), whichever two
    # configurations the (concurrent, so not quite reproducible) selection shortlists
    raw = _space(tmp_path, settle={"enabled": True, "top_k": 2, "round_size": 2, "max_seeds_per_config": 10})
    raw["simulated"].update(seconds_per_run=0.3, noise_sd=0.05)
    path = _write(tmp_path, raw)
    out = tmp_path / "run"
    results = out / "results.jsonl"
    log = tmp_path / "runs.log"
    spec = write_spec(tmp_path / "faults.json", run_log=log)

    def start(*extra):
        cmd = [sys.executable, SIM_FAULTS, str(spec), "tune", str(path), "--out", str(out), *extra]
        return subprocess.Popen(cmd, cwd=REPO, env=_ENV, start_new_session=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_for(proc, stage: str, more: int, timeout: float = 90.0) -> None:
        have = sum(1 for k in _keys(results) if k[2] == stage)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sum(1 for k in _keys(results) if k[2] == stage) >= have + more:
                return
            if proc.poll() is not None:
                pytest.fail(f"the search ended before it could be stopped: {proc.communicate()[1][-2000:]}")
            time.sleep(0.1)
        pytest.fail(f"no progress in {stage}")

    # SIGINT and SIGTERM take the same path (one handler) but for their exit status: each phase gets
    # one of them and a SIGKILL, which leaves no chance to clean up at all
    stops = [("selection", signal.SIGINT), ("selection", signal.SIGKILL),
             ("confirmation", signal.SIGTERM), ("confirmation", signal.SIGKILL)]
    log_lines = 0
    for i, (stage, sig) in enumerate(stops):
        before_start = set(_keys(results))
        proc = start(*(["--resume"] if i else []))
        try:
            wait_for(proc, stage, 2)
            recorded = set(_keys(results))
            session = next(p.name for p in Path("/tmp/ray").glob("session_2*") if p.name.endswith(f"_{proc.pid}"))
            assert _session_processes(session)
            t0 = time.time()
            os.kill(proc.pid, sig)   # the driver only, as Ctrl-C, `kill` or the OOM killer would
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{sig.name} did not stop the search within 30 s")
            took = time.time() - t0
            # no Ray process of the driver's own instance outlives it (SIGKILL included)
            deadline = time.time() + 20
            while time.time() < deadline and _session_processes(session):
                time.sleep(0.5)
            assert _session_processes(session) == []
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # whatever the driver left in its group
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 128 + sig, err[-2000:]
            lines = [ln for ln in err.strip().splitlines() if ln.startswith("fsray:")]
            assert lines == [lines[-1]] and lines[-1].startswith(f"fsray: interrupted by {sig.name}"), err[-2000:]
            assert "Traceback" not in err and took < 20, (took, err[-2000:])
        assert not (out / "summary.json").exists()   # nothing summarised as if finished
        # nothing recorded before this run started was trained again by it
        new = log.read_text().splitlines()[log_lines:]
        log_lines += len(new)
        again = [ln for ln in new if ln.startswith("prompt_fs")
                 and any((ln.split()[1], int(ln.split()[2])) == (k[0], k[1]) for k in before_start)]
        assert not again, again
        assert recorded <= set(_keys(results))          # nothing recorded was lost
        assert max(_keys(results).values()) == 1

    done = subprocess.run([sys.executable, SIM_FAULTS, str(spec), "tune", str(path), "--out", str(out),
                           "--resume"], cwd=REPO, env=_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = read_records(results)
    assert not records.problems
    keys = _keys(results)
    assert max(keys.values()) == 1
    sel = [r for r in records.records if r["stage"] == "selection"]
    by_config = Counter(r["config_hash"] for r in sel)
    assert len(by_config) == 6                                # exactly search.trials configurations
    assert all(n == 3 for n in by_config.values()), by_config  # every seed of every one (no racing)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["configs"] == 6 and summary["settle"] is not None
    import optuna

    study = optuna.load_study(study_name="faults", storage=f"sqlite:///{out / 'optuna.db'}")
    states = Counter(t.state.name for t in study.trials)
    assert states == {"COMPLETE": 6}, states


# ---------------------------------------------------------------------------------------------
# 1. output paths and the run lock, through `fsray tune`


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fsray: error: "), err
    assert "Traceback" not in err[0] and "Errno" not in err[0]
    return err[0]


def test_tune_refuses_bad_output_paths_before_any_work(tmp_path, capsys):
    path = _write(tmp_path, _space(tmp_path))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "summary.json").write_text("my summary")
    (foreign / "report.html").write_text("my report")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [(["--out", str(foreign)], "not an fsray run directory"),
             (["--out", str(a_file)], "is a file"),
             (["--out", str(path)], "search file itself"),
             (["--out", str(a_file / "sub")], "cannot be written"),
             (["--out", str(tmp_path / ("n" * 300))], "file name too long")]
    for extra, needle in cases:
        assert main(["tune", str(path), *extra]) == 2
        assert needle in _one_error_line(capsys)
    assert (foreign / "summary.json").read_text() == "my summary" and sorted(os.listdir(foreign)) == [
        "report.html", "summary.json"]
    runs = tmp_path / "runs"
    for name in ("../escaped", "", "x" * 300):
        bad = _write(tmp_path, _space(tmp_path, name=name, results_dir=str(runs)), "bad.yaml")
        assert main(["tune", str(bad)]) == 2
        assert "name" in _one_error_line(capsys)
    assert not runs.exists() and not (tmp_path / "escaped").exists()


def test_a_second_search_on_a_run_directory_is_refused(tmp_path, capsys):
    path = _write(tmp_path, _space(tmp_path))
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fsray.paths import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"]):
            assert main(["tune", str(path), "--out", str(out), *extra]) == 2
            assert "in use by another fsray search" in _one_error_line(capsys)
        assert sorted(os.listdir(out)) == [".fsray.lock"]
    finally:
        holder.kill()
        holder.wait()


def test_os_errors_on_the_run_directory_are_one_line(tmp_path, capsys, monkeypatch):
    import errno

    path = _write(tmp_path, _space(tmp_path))

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    assert main(["tune", str(path), "--out", str(tmp_path / "ro")]) == 2
    assert "read-only file system" in _one_error_line(capsys)


# ---------------------------------------------------------------------------------------------
# 2. nothing in the run directory touched before the inputs pass


def _snapshot(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "ray.log"}


def test_settle_only_and_resume_with_changed_inputs_touch_nothing(ray_local, tmp_path, capsys):
    raw = _space(tmp_path, settle={"enabled": False, "top_k": 1, "round_size": 2, "max_seeds_per_config": 4})
    raw["search"] = {"sampler": "random", "sampler_seed": 0, "trials": 3, "concurrency": 1}
    path = _write(tmp_path, raw)
    out = tmp_path / "run"
    assert main(["tune", str(path), "--out", str(out), "--settle"]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert "summary.json" in before and "space.json" in before

    other_task = _write(tmp_path, {**raw, "task": {"name": "kv_retrieval", "options": {"order": "query_first"}}},
                        "other.yaml")
    assert main(["tune", str(other_task), "--out", str(out), "--settle-only"]) == 2
    assert "different search file" in _one_error_line(capsys)
    assert _snapshot(out) == before

    horizon = _write(tmp_path, {**raw, "settle": {**raw["settle"], "max_seeds_per_config": 8}}, "horizon.yaml")
    assert main(["tune", str(horizon), "--out", str(out), "--resume", "--settle"]) == 2
    assert "horizon" in _one_error_line(capsys)
    assert _snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# 3. a damaged or missing Optuna study is rebuilt from the records


def test_a_damaged_or_missing_study_is_rebuilt_on_resume(ray_local, tmp_path, capfd):
    import optuna

    raw = _space(tmp_path)
    raw["search"] = {"sampler": "tpe", "sampler_seed": 0, "trials": 2, "concurrency": 1}
    path = _write(tmp_path, raw)
    out = tmp_path / "run"
    assert main(["tune", str(path), "--out", str(out)]) == 0
    for trials, damage in ((3, "garbage"), (4, "missing")):
        recorded = (out / "results.jsonl").read_bytes()
        if damage == "garbage":
            (out / "optuna.db").write_bytes(b"not a database " * 64)
        else:
            (out / "optuna.db").unlink()
        capfd.readouterr()
        assert main(["tune", str(path), "--out", str(out), "--resume", "--trials", str(trials)]) == 0
        printed = capfd.readouterr().out
        assert "Optuna study rebuilt from the records" in printed
        assert (damage == "garbage") == ("moved to optuna.db.damaged" in printed)
        assert (out / "results.jsonl").read_bytes().startswith(recorded)   # nothing recorded lost
        study = optuna.load_study(study_name="faults", storage=f"sqlite:///{out / 'optuna.db'}")
        assert Counter(t.state.name for t in study.trials) == {"COMPLETE": trials}
        assert len({r["config_hash"] for r in read_records(out / "results.jsonl").records}) == trials
    assert (out / "optuna.db.damaged").exists()


def test_a_users_study_that_cannot_be_opened_is_refused_with_the_remedy(ray_local, tmp_path, capsys):
    raw = _space(tmp_path)
    raw["search"] = {"sampler": "random", "sampler_seed": 0, "trials": 2, "concurrency": 1}
    bad_db = tmp_path / "elsewhere.db"
    path = _write(tmp_path, {**raw, "storage": f"sqlite:///{bad_db}"})
    out = tmp_path / "run"
    assert main(["tune", str(path), "--out", str(out)]) == 0
    bad_db.write_bytes(b"garbage " * 100)
    capsys.readouterr()
    assert main(["tune", str(path), "--out", str(out), "--resume"]) == 2
    line = _one_error_line(capsys)
    assert "cannot be opened" in line and "leave `optuna_storage:` out" in line


# ---------------------------------------------------------------------------------------------
# 4. resources no node can give


def test_resources_no_node_has_end_at_once(ray_local, tmp_path, capsys):
    raw = {"name": "gpu", "task": {"name": "kv_retrieval"}, "seeds": 2,
           "space": {"alpha_init": {"type": "float", "low": -3.0, "high": -1.0}},
           "resources": {"gpus_per_worker": 1, "capacity_timeout_s": 5},
           "baseline_cache": str(tmp_path / "cache")}
    t0 = time.time()
    assert main(["tune", str(_write(tmp_path, raw)), "--out", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys)
    assert "1 GPU" in line and "0 GPU" in line and time.time() - t0 < 30
    assert not (tmp_path / "run" / "results.jsonl").exists()
    cpus = {**raw, "resources": {"cpus_per_worker": 64}}
    assert main(["tune", str(_write(tmp_path, cpus, "cpu.yaml")), "--out", str(tmp_path / "run2")]) == 2
    assert "64 CPU" in _one_error_line(capsys)


def test_check_resources_reads_the_nodes():
    from fsray.errors import UsageError
    from fsray.search.capacity import check_resources
    from fsray.search.space import parse_space

    base = {"name": "g", "task": {"name": "kv_retrieval"}, "seeds": 2,
            "space": {"alpha_init": {"type": "float", "low": -3.0, "high": -1.0}}}
    gpu = parse_space({**base, "resources": {"gpus_per_worker": 1}})
    cpu_only = [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}]
    with pytest.raises(UsageError, match=r"1 GPU .*node 1: 8 CPU, 0 GPU"):
        check_resources(gpu, cpu_only, autoscaling=False)
    check_resources(gpu, cpu_only + [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}}], autoscaling=False)
    check_resources(gpu, cpu_only, autoscaling=True)    # a cluster that may add a GPU node
    check_resources(parse_space({**base, "resources": {"cpus_per_worker": 8}}), cpu_only, autoscaling=False)


# ---------------------------------------------------------------------------------------------
# the resume plan, from records alone


def test_resume_plan_and_rebuilt_study_follow_the_records(tmp_path):
    """Finished configurations (every seed, a recorded failure, a no-op, stopped by racing) go into
    the rebuilt study as Optuna trials with their values; one with seeds missing (killed, or lost with
    the cluster's capacity: nothing recorded) is enqueued; the trial budget counts configurations."""
    import optuna

    from fsray.search.evaluate import SimulatedRunner, evaluate_config
    from fsray.search.resume import plan_resume, rebuild_study
    from fsray.search.space import parse_space
    from fsray.search.store import ResultsStore
    from sim_faults import patch

    raw = _space(tmp_path, racing={"enabled": True, "min_seeds": 2})
    raw["seeds"] = {"count": 4}
    raw["search"]["trials"] = 8
    raw["simulated"]["effects"] = {"fs_layer_start": {"values": {"3": -0.2, "6": 0.05, "8": 0.05}}}
    space = parse_space(raw)
    runner = SimulatedRunner(space)
    store = ResultsStore(str(tmp_path / "run"), space.baseline_cache, space.objective.model_dump())
    seeds = space.seeds.selection()
    good = {"fs_layer_start": 8, "alpha_init": -2.0}
    evaluate_config(space, runner, store, good, seeds)                                   # complete
    evaluate_config(space, runner, store, {"fs_layer_start": 12, "alpha_init": -2.0}, seeds)  # no-op
    evaluate_config(space, runner, store, {"fs_layer_start": 3, "alpha_init": -2.0}, seeds)   # raced
    partial = {"fs_layer_start": 6, "alpha_init": -3.0}
    evaluate_config(space, runner, store, partial, seeds[:2], race=False)               # killed
    crash = [{"when": {"fs_layer_start": 6, "alpha_init": -1.5}, "kind": "raise", "at_seed": 1}]
    with pytest.MonkeyPatch.context() as mp:
        patch(mp, crash)
        with pytest.raises(Exception):
            evaluate_config(space, runner, store, {"fs_layer_start": 6, "alpha_init": -1.5}, seeds)

    n_seeds = Counter(r["config"]["fs_layer_start"] for r in store.all_records())
    assert n_seeds[3] < 4 and n_seeds[8] == 4   # racing stopped the hopeless one early
    plan = plan_resume(space, store.all_records())
    states = Counter(f["state"] for f in plan.finished)
    assert states == {"COMPLETE": 3, "FAIL": 1}
    assert plan.unfinished == [partial] and plan.configs == 5
    assert plan.new_trials == 1 + (8 - 5)     # the unfinished one, then what the budget has left

    rebuild_study(space, tmp_path / "run", plan)
    study = optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    by_state = Counter(t.state.name for t in study.trials)
    assert by_state == {"COMPLETE": 3, "FAIL": 1, "WAITING": 1}
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert best.params == good
    waiting = next(t for t in study.trials if t.state.name == "WAITING")
    assert waiting.system_attrs["fixed_params"] == partial
