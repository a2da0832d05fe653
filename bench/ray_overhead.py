"""The Ray tax on a seed run: the same seed run in a plain process and on the search's harness.

1. The embedded default's seed run (run_mode) in a plain subprocess vs on a long-lived Ray Train
   worker group of ``fsray.harness`` (1 group), interleaved over ``--rounds`` rounds in one command.
   Prints the run's own wall time (measured inside run_mode) both ways, their ratio (goal <= 1.10),
   the end-to-end latency (submit to result), and the CPU seconds that every *other* process of the
   Ray session (driver, dispatcher, Train controller, raylet, GCS, idle workers) used while the run
   trained, per second of training.
2. Seed runs that do no work (1 step of a tiny model): the harness's fixed cost per run, against one
   TorchTrainer.fit() per run, measured here.

    .venv/bin/python bench/ray_overhead.py [--rounds 2] [--steps 600] [--skip-nowork]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

PLAIN = """
import json, sys
from fsray.trainer import TrainSpec, run_mode
spec = TrainSpec.model_validate_json(sys.argv[1])
r = run_mode(spec, int(sys.argv[2]), None)
print(json.dumps({"seconds": r["seconds"], "token_acc": r["token_acc"]}))
"""


def _plain(spec, seed: int) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", PLAIN, spec.model_dump_json(), str(seed)],
                         check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _session_cpu(exclude: set[int]) -> float:
    """CPU seconds so far of this driver and every process of *this* Ray session (its raylet, GCS,
    dashboard agents, actors and workers; other Ray instances on the machine are not counted), but
    ``exclude``."""
    import psutil
    import ray

    session = os.path.basename(ray._private.worker._global_node.get_session_dir_path())
    procs = [psutil.Process()]
    for p in psutil.process_iter(["pid", "cmdline"]):
        if session in " ".join(p.info["cmdline"] or []):
            procs.append(p)
            try:
                procs += p.children(recursive=True)   # the raylet's workers and actors
            except psutil.Error:
                pass
    total, seen = 0.0, set()
    for p in procs:
        if p.pid in seen or p.pid in exclude:
            continue
        seen.add(p.pid)
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def tax(rounds: int, steps: int | None) -> None:
    import ray

    from fsray.harness import SeedRunHarness
    from fsray.spec import embedded_default_spec

    spec = embedded_default_spec()
    if steps:
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"steps": steps})})
    plain, inside, latency, other_cpu = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, SeedRunHarness(spec, groups=1, storage_path=tmp) as h:
        h.run(99, None)   # warm the group (imports, data) outside the measurement, like a search
        for k in range(rounds):
            plain.append(_plain(spec, k)["seconds"])
            job = h.submit(k, None)
            t0 = time.perf_counter()
            leases = {}
            while not leases:
                leases = ray.get(h.dispatcher.leases_now.remote())
            worker = next(iter(leases.values()))["pid"]
            cpu0 = _session_cpu({worker})
            r = h.result(job)
            latency.append(time.perf_counter() - t0)
            other_cpu.append((_session_cpu({worker}) - cpu0) / r["seconds"])
            inside.append(r["seconds"])
            print(f"round {k}: plain {plain[-1]:.1f} s, in the harness {inside[-1]:.1f} s "
                  f"(submit to result {latency[-1]:.1f} s)", flush=True)
    p, i = sum(plain) / rounds, sum(inside) / rounds
    print(f"seed run of the embedded default ({spec.budget.steps} steps): plain process {p:.1f} s, "
          f"harness {i:.1f} s: ratio {i / p:.3f} (goal <= 1.10); submit-to-result "
          f"{sum(latency) / rounds:.1f} s; other Ray processes used {100 * sum(other_cpu) / rounds:.1f}% "
          f"of a core while it trained")


NO_WORK = {
    "model": {"n_layer": 2, "d_model": 16, "head_size": 8},
    "budget": {"steps": 1, "batch_size": 8, "eval_every": 1, "warmup": 0},
    "data": {"n_train": 64, "n_val": 16, "eval_batch_size": 16},
}


def nowork(n: int) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer

    from fsray.harness import SeedRunHarness
    from fsray.trainer import TrainSpec, run_mode

    spec = TrainSpec.model_validate(NO_WORK)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with SeedRunHarness(spec, groups=1, storage_path=tmp) as h:
            h.run_many([(s, None) for s in range(n)])
        per = (time.perf_counter() - t0) / n

        def one(_config):
            run_mode(spec, 0, None)

        t0 = time.perf_counter()
        TorchTrainer(one, scaling_config=ray.train.ScalingConfig(num_workers=1),
                     run_config=ray.train.RunConfig(storage_path=tmp, name="one")).fit()
        fit = time.perf_counter() - t0
    print(f"seed runs doing no work: {per:.2f} s each on the harness ({n} runs, its start included) "
          f"vs {fit:.1f} s for one TorchTrainer.fit() per run ({fit / per:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="override the default's 600 steps")
    ap.add_argument("--nowork-runs", type=int, default=10)
    ap.add_argument("--skip-nowork", action="store_true")
    args = ap.parse_args()

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        tax(args.rounds, args.steps)
        if not args.skip_nowork:
            nowork(args.nowork_runs)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
