"""Seed runs in flight at gpus_per_worker 0.25 vs 1.0, on a local Ray that declares GPUs on this machine.

    python bench/gpu_packing.py                     # 1 fake GPU, 8 seed runs at each fraction
    python bench/gpu_packing.py --jobs 4 --steps 20 --json out.json

Ray schedules the fractional GPU requests (fsray.harness.worker_resources); the runs themselves train on
the CPU (the device follows torch.cuda.is_available()). For each fraction: the worker groups Ray let
start, the most runs leased at once, and the wall time of the jobs; then the ratios. On this CPU the
packed runs share its cores, so the wall-time ratio says what Ray scheduled, not GPU throughput.
tests/test_gpu_packing.py runs it (small) and checks 4 in flight at 0.25, 1 at 1.0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(fraction: float, groups: int, jobs: int, spec, storage: str, settle_s: float) -> dict:
    import ray

    from fsray.harness import SeedRunHarness

    with SeedRunHarness(spec, groups=groups, gpus_per_worker=fraction, storage_path=storage,
                        name=f"pack{fraction}", checkpoint_every_s=None) as h:
        expect = min(groups, int(1 / fraction))
        deadline = time.monotonic() + 240
        while len(ray.get(h.dispatcher.stats.remote())["groups"]) < expect and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(settle_s)   # time for one more group to come up, were Ray to let it
        alive = len(ray.get(h.dispatcher.stats.remote())["groups"])
        results, peak = [], 0
        t0 = time.perf_counter()
        runner = threading.Thread(target=lambda: results.extend(h.run_many([(s, None) for s in range(jobs)])))
        runner.start()
        while runner.is_alive():
            peak = max(peak, len(ray.get(h.dispatcher.leases_now.remote())))
            time.sleep(0.02)
        runner.join()
        wall = time.perf_counter() - t0
    return {"fraction": fraction, "groups": groups, "alive": alive, "peak_in_flight": peak, "wall_s": wall,
            "status": [r["status"] for r in results]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import ray

    from fsray.spec import TrainSpec

    spec = TrainSpec.model_validate({
        "model": {"n_layer": 1, "d_model": 16, "head_size": 8},
        "budget": {"steps": args.steps, "batch_size": 8, "eval_every": args.steps, "warmup": 1},
        "data": {"n_train": 64, "n_val": 8, "eval_batch_size": 8},
        "wkv_backend": "torch",
    })
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as storage:
            out = [measure(0.25, 4, args.jobs, spec, storage, 0.0),
                   measure(1.0, 2, max(2, args.jobs // 4), spec, storage, args.settle)]
    finally:
        ray.shutdown()
    for r in out:
        print(f"gpus_per_worker {r['fraction']}: {r['alive']} worker groups up, {r['peak_in_flight']} seed runs "
              f"in flight at most, {len(r['status'])} runs in {r['wall_s']:.1f} s")
    quarter, whole = out
    print(f"in flight at 0.25 / at 1.0: {quarter['peak_in_flight'] / max(whole['peak_in_flight'], 1):.1f}x "
          f"(1 fake GPU, 2 CPUs)")
    rate = [len(r["status"]) / r["wall_s"] for r in out]
    print(f"runs per second at 0.25 / at 1.0: {rate[0] / rate[1]:.2f}x (here the packed runs share 2 CPU cores; "
          "on a GPU they share its idle capacity)")
    if args.json:
        Path(args.json).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
