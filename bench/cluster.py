"""The cost of crossing Ray nodes, and how fast a lost node's seed run is given back.

1. The same small search (embedded default, shorter runs, 2 trials x 2 seeds, 2 worker groups) on a
   real cluster of 1 node with 2 CPUs and of 2 nodes with 1 CPU each (separate raylets on this
   machine, token auth as Ray turns it on; tests/cluster_harness.py), run one after the other in this
   command: wall time of `fsray tune` each way and the ratio (2 nodes / 1 node).
2. On the 2-node cluster, the worker node's raylet SIGKILLed while it trains a trial's seed run: the
   time from the kill to the retry line (the run given to another worker group), and to the end of
   the search.

    .venv/bin/python bench/cluster.py [--steps 150] [--rounds 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cluster_harness import BIN, LocalCluster  # noqa: E402


def _space(root: Path, steps: int, name: str) -> Path:
    raw = {
        "name": "bench_cluster", "trainable": "real", "base": "embedded_default",
        "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
        "budget": {"steps": steps, "eval_every": max(1, steps // 2)},
        "seeds": {"count": 2, "confirm": 0},
        "knobs": {"alpha_init": {"type": "float", "low": -4.0, "high": -1.0}},
        "fixed": {"fs_layer_start": 1},
        "racing": {"enabled": False},
        "tuner": {"sampler": "random", "sampler_seed": 3, "trials": 2, "concurrency": 2},
        "baseline_cache": str(root / f"cache_{name}"),   # every search trains its own baselines
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _search(cluster: LocalCluster, space: Path, out: Path, kill=None) -> dict:
    t0 = time.monotonic()
    proc = subprocess.Popen([str(BIN / "fsray"), "tune", str(space), "--out", str(out)], env=cluster.env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_kill = t_retry = None
    for line in proc.stdout:
        now = time.monotonic()
        if kill is not None and t_kill is None and "baselines ready" in line:
            time.sleep(3)                 # both groups train a trial's run now
            kill()
            t_kill = time.monotonic()
        if t_kill is not None and t_retry is None and "running it again" in line:
            t_retry = now
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"search failed: {proc.stderr.read()[-2000:]}")
    end = time.monotonic()
    return {"wall": end - t0, "kill_to_retry": None if t_retry is None else t_retry - t_kill,
            "kill_to_end": None if t_kill is None else end - t_kill}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    one, two, kills = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for k in range(args.rounds):
            with LocalCluster(root / f"one{k}", head_cpus=2) as c:
                c.wait_nodes(1)
                one.append(_search(c, _space(root, args.steps, f"one{k}"), root / f"run_one{k}")["wall"])
            with LocalCluster(root / f"two{k}", head_cpus=1) as c:
                c.add_node(num_cpus=1)
                c.wait_nodes(2)
                two.append(_search(c, _space(root, args.steps, f"two{k}"), root / f"run_two{k}")["wall"])
            print(f"round {k}: 1 node {one[-1]:.1f} s, 2 nodes {two[-1]:.1f} s", flush=True)
        with LocalCluster(root / "kill", head_cpus=1) as c:
            worker = c.add_node(num_cpus=1)
            c.wait_nodes(2)
            kills.append(_search(c, _space(root, args.steps, "kill"), root / "run_kill",
                                 kill=lambda: c.kill_node(worker)))
    o, t = sum(one) / len(one), sum(two) / len(two)
    print(f"search of 2 trials x 2 seeds ({args.steps} steps a run): 1 node x 2 CPUs {o:.1f} s, "
          f"2 nodes x 1 CPU {t:.1f} s: ratio {t / o:.2f}")
    k = kills[0]
    retry = "no retry seen" if k["kill_to_retry"] is None else f"{k['kill_to_retry']:.1f} s"
    print(f"worker node killed mid-run: kill to retry line {retry}, kill to the end of the search "
          f"{k['kill_to_end']:.1f} s (whole search {k['wall']:.1f} s)")


if __name__ == "__main__":
    main()
