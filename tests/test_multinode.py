"""Real multi-node Ray clusters on this machine (tests/cluster_harness.py): the harness itself, joining
a token-authenticated cluster (fsray.cluster.start_ray), bad cluster addresses and tokens as one line
and exit 2 (cluster_local.yaml's `ray up` cluster: tests/test_local_cluster.py).

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
