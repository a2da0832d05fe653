"""Real multi-node Ray clusters on this machine (tests/cluster_harness.py): the harness itself, joining
a token-authenticated cluster (fsray.cluster.start_ray), bad cluster addresses and tokens as one line
and exit 2, and the fake_multinode cluster of cluster_local.yaml (autoscaling, `ray job submit`).

Every cluster here has its own temp dir, ports and HOME (its own token), and is stopped by pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cluster_harness import BIN, LocalCluster, free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

JOIN = """
import json, sys
from fsray.cluster import start_ray
from fsray.errors import UsageError
try:
    start_ray()
except UsageError as exc:
    print("USAGE", exc); sys.exit(2)
import ray
print("NODES", json.dumps([n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]))
"""


def _py(code: str, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _fsray(args: list[str], env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fsray"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- the harness ------------------------------------------------------------------------------


def test_harness_two_nodes_token_auth_and_node_kill(ray_cluster):
    alive = ray_cluster.wait_nodes(2, timeout_s=60)
    assert sorted(n["Resources"]["CPU"] for n in alive) == [1.0, 2.0]
    assert len({n["NodeID"] for n in alive}) == 2
    assert ray_cluster.head.raylet_pid != ray_cluster.nodes[0].raylet_pid   # separate raylets
    assert ray_cluster.env["RAY_AUTH_MODE"] == "token" and ray_cluster.token_path.is_file()
    # token auth is really on: the joining node needed it, and so does a driver without it
    # (fsray.cluster turns it on by itself; plain ray.init with an explicit address does not)
    env = {**ray_cluster.env}
    env.pop("RAY_AUTH_MODE")
    proc = _py(JOIN, env)
    assert proc.returncode == 0 and "NODES" in proc.stdout, proc.stderr[-2000:]
    assert sorted(json.loads(proc.stdout.split("NODES", 1)[1])) == [1.0, 2.0]
    assert "Token authentication" not in proc.stderr   # Ray's notice does not reach the terminal
    # kill the worker node's raylet
    pid = ray_cluster.nodes[0].raylet_pid
    ray_cluster.kill_node(ray_cluster.nodes[0])
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker node's raylet survived SIGKILL")


# --- joining: token auth and bad addresses ---------------------------------------------------------


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A one-node cluster (head only) with token authentication on."""
    cluster = LocalCluster(tmp_path_factory.mktemp("token_head"), head_cpus=1).start()
    yield cluster
    cluster.stop()


def test_token_mismatch_and_missing_token_are_one_line_exit_2(token_head, tmp_path):
    """`fsray tune` against a token-authenticated cluster with a token that is not the cluster's,
    and with no token at all: one line each saying what to set, exit 2, no run directory."""
    wrong = tmp_path / "wrong_home"
    (wrong / ".ray").mkdir(parents=True)
    (wrong / ".ray" / "auth_token").write_text("0" * 64)
    empty = tmp_path / "empty_home"
    empty.mkdir()
    runs = {}
    with ThreadPoolExecutor(2) as pool:   # Ray retries ~20 s before giving up: both at once
        for name, home in (("wrong", wrong), ("missing", empty)):
            env = {**token_head.env, "HOME": str(home)}
            env.pop("RAY_AUTH_MODE")
            out = tmp_path / f"run_{name}"
            runs[name] = (out, pool.submit(_fsray, ["tune", str(REPO / "search_spaces/simulated.yaml"),
                                                    "--trials", "1", "--out", str(out)], env))
    line = _one_error_line(runs["wrong"][1].result())
    assert "rejected the auth token" in line and "auth_token" in line, line
    line = _one_error_line(runs["missing"][1].result())
    assert "requires token authentication" in line and "~/.ray/auth_token" in line, line
    assert not runs["wrong"][0].exists() and not runs["missing"][0].exists()


def test_cluster_address_that_does_not_answer_is_one_line_exit_2(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    t0 = time.monotonic()
    proc = _fsray(["tune", str(REPO / "search_spaces/simulated.yaml"), "--out", str(out)], env)
    line = _one_error_line(proc)
    assert "no Ray cluster answers at RAY_ADDRESS=127.0.0.1:" in line, line
    assert time.monotonic() - t0 < 60 and not out.exists()
    proc = _fsray(["tune", str(REPO / "search_spaces/simulated.yaml"), "--out", str(out)],
                  {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:8265"})
    assert "dashboard (job submission) address" in _one_error_line(proc)
    assert not out.exists()


# --- the fake_multinode cluster (cluster_local.yaml) ------------------------------------------------


def test_cluster_local_yaml_is_a_complete_fake_multinode_config():
    """The fake provider reads the config as given (no defaults filled in): every field Ray's schema
    knows must be there, the head may not scale, the workers start from zero."""
    import ray.autoscaler
    import jsonschema
    import yaml

    cfg = yaml.safe_load((REPO / "cluster_local.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    assert cfg["provider"]["type"] == "fake_multinode"
    for key in ("cluster_synced_files", "file_mounts_sync_continuously", "rsync_exclude", "rsync_filter",
                "docker", "auth", "idle_timeout_minutes", "upscaling_speed"):
        assert key in cfg, key
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["max_workers"] == 0
    workers = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert workers and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)


def _alive_cpus(cluster: LocalCluster) -> list[float]:
    proc = _py("import ray, json; ray.init(log_to_driver=False); "
               "print('CPUS', json.dumps([n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']]))",
               cluster.env)
    assert "CPUS" in proc.stdout, proc.stderr[-2000:]
    return sorted(json.loads(proc.stdout.split("CPUS", 1)[1]))


def test_fake_multinode_scales_up_for_a_submitted_search_and_down_when_idle(tmp_path):
    """cluster_local.yaml on Ray's fake_multinode provider: 0 worker nodes at start; `ray job submit
    --working-dir local://PROJECT -- fsray tune ...` (the README's path for this cluster) needs more
    CPUs than the head has, so the autoscaler starts a worker node; every seed run succeeds; the
    results land in --out on the head; the idle node goes."""
    cluster = LocalCluster(tmp_path / "fake", head_cpus=1, dashboard=True,
                           autoscaling_config=REPO / "cluster_local.yaml",
                           autoscaling_overrides={"idle_timeout_minutes": 0.2}).start()
    try:
        assert _alive_cpus(cluster) == [1.0]                      # the head alone
        out = tmp_path / "runs" / "sim"
        # the simulated search, 2 trials at once with 1 CPU each (more than the head's 1 CPU), each
        # simulated training run taking 1 s so that the demand outlasts the autoscaler's 5 s loop
        import yaml

        raw = yaml.safe_load((REPO / "search_spaces/simulated.yaml").read_text())
        raw["simulated"]["seconds_per_run"] = 1.0
        raw["search"].update(trials=3, concurrency=2)
        space = tmp_path / "sim_slow.yaml"
        space.write_text(yaml.safe_dump(raw))
        proc = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard_port}",
             # local://: the project in place. An uploaded `--working-dir .` cannot work with several
             # raylets on one disk: each node's agent deletes and unpacks the shared copy again
             # (Ray's working_dir plugin, overwrite=True) under the processes standing in it.
             "--working-dir", f"local://{REPO}", "--", "fsray", "tune", str(space),
             "--seeds", "2", "--confirm-seeds", "0", "--out", str(out)],
            env=cluster.env, cwd=REPO, capture_output=True, text=True, timeout=300)
        (tmp_path / "job_output.txt").write_text(proc.stdout + "\n--- stderr\n" + proc.stderr)
        said = [ln for ln in proc.stdout.splitlines()
                if any(w in ln for w in ("rror", "fsray:", "Traceback", "failed", "FAILED"))]
        assert proc.returncode == 0, "\n".join(said[-30:]) + f"\n(all of it: {tmp_path / 'job_output.txt'})"
        assert "succeeded" in proc.stdout.lower(), proc.stdout[-3000:]
        # results came back where the README says: --out on the head (this machine)
        records = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
        assert len(records) >= 3 and all(r["status"] == "ok" for r in records), records
        assert json.loads((out / "summary.json").read_text())["name"] == "simulated"
        # the autoscaler started a worker node (a raylet beside the head's) for the trials
        log = cluster.monitor_log()
        assert "Adding 1 node(s) of type cpu_worker" in log, log[-3000:]
        # ... and removes it once idle (idle_timeout_minutes: 0.5 shipped, 0.2 here)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if _alive_cpus(cluster) == [1.0]:
                assert "Removing 1 nodes of type cpu_worker (idle)" in cluster.monitor_log()
                break
            time.sleep(5)
        else:
            pytest.fail("the idle worker node was not removed")
    finally:
        cluster.stop()
