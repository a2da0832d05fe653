"""The search on a real 2-node Ray cluster on this machine (tests/cluster_harness.py: separate raylets,
token auth as Ray turns it on): worker groups on both nodes give the same records as one node, and a
worker node SIGKILLed mid-run loses nothing: its seed run is said once and run again on the head."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from analysis.schema import read_records
from cluster_harness import BIN, LocalCluster

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
RUN_FIELDS = {"seconds", "cpu_seconds", "node", "cached", "resumed_from_step"}


def _space(tmp_path: Path, steps: int, trials: int = 2, seeds: int = 2, name: str = "space") -> Path:
    raw = {
        "name": "cluster_test", "trainable": "real", "base": "embedded_default",
        "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
        "budget": {"steps": steps, "eval_every": max(1, steps // 2), "warmup": 1},
        "data": {"n_train": 256, "n_val": 64, "eval_batch_size": 64},
        "seeds": {"count": seeds, "confirm": 0},
        "space": {"alpha_init": {"type": "float", "low": -4.0, "high": -1.0}},
        "fixed": {"fs_layer_start": 1},
        "racing": {"enabled": False},
        "search": {"sampler": "random", "sampler_seed": 3, "trials": trials, "concurrency": 2},
        "baseline_cache": str(tmp_path / f"cache_{name}"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tune(space: Path, out: Path, env: dict, timeout: int = 420) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "fsray"), "tune", str(space), "--out", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _records(run: Path) -> dict:
    out = {}
    for r in read_records(run / "results.jsonl").records:
        key = (r["config_hash"], r["seed"], r["stage"])
        assert key not in out, f"duplicate record {key}"
        out[key] = r
    return out


def _strip(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in RUN_FIELDS}


def test_search_across_two_nodes_survives_a_lost_node_and_equals_one_node(tmp_path):
    """Worker groups on both nodes; the worker node is SIGKILLed while it trains a trial's seed run
    and not replaced: the search completes on the head, the lost run is said once (seed, trial,
    node), nothing is lost or duplicated, no Ray noise reaches the terminal, and the records equal
    those of the same search on one node (a run given back resumes from its checkpoint or starts
    again: either way the same numbers)."""
    space = _space(tmp_path, steps=150, name="two")
    with LocalCluster(tmp_path / "c", head_cpus=1) as cluster:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_nodes(2)
        proc = _tune(space, tmp_path / "two", cluster.env)
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:   # the trials' runs start right after the baselines
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "baselines ready" in line:
                break
        assert any("baselines ready" in ln for ln in lines), "".join(lines)
        time.sleep(3)                       # both groups are training a trial's seed run now
        t_kill = time.monotonic()
        cluster.kill_node(worker)
        out, err = proc.communicate(timeout=420)
        took = time.monotonic() - t_kill
        local_env = {k: v for k, v in cluster.env.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    text = "".join(lines) + out
    assert proc.returncode == 0, (text[-3000:], err[-3000:])
    retries = [ln for ln in text.splitlines() if "lost:" in ln and "running it again" in ln]
    assert len(retries) == 1, text
    assert "seed " in retries[0] and "trial " in retries[0] and "node " in retries[0]
    assert "state-dump" not in text and "(raylet)" not in text and "WARNING" not in text
    two = _records(tmp_path / "two")
    assert len(two) == 4 and all(r["status"] == "ok" for r in two.values())
    nodes = {r[side]["node"] for r in two.values() for side in ("baseline", "fs") if r[side].get("node")}
    assert len(nodes) == 2, nodes            # worker groups trained on both nodes (baselines did)
    print(f"search finished {took:.0f} s after the worker node was killed")

    proc = _tune(_space(tmp_path, steps=150, name="one"), tmp_path / "one", local_env)
    out, err = proc.communicate(timeout=420)
    assert proc.returncode == 0, (out[-3000:], err[-3000:])
    one = _records(tmp_path / "one")
    assert set(one) == set(two)
    for key in one:
        for side in ("baseline", "fs"):
            assert _strip(one[key][side]) == _strip(two[key][side]), (key, side)
