"""Ray overhead of the real-trainable path, and the speedup of concurrent trials.

1. Seed runs that do (almost) no work (1 step of a 2-layer width-16 model on 64 examples) through
   the search's real path, both mappings of seed runs to Ray Train worker groups: ``pool`` (one
   long-lived worker group per concurrent trial for the whole search, the default) and
   ``fit_per_trial`` (baselines in one fit, then one fit per trial with the racing rule inside).
   Prints the wall time per seed run amortised over the search, against one
   ``TorchTrainer.fit()`` per seed run (measured here, in the same process).
2. The embedded default (search_spaces/demo_cpu.yaml, fewer trials/seeds): wall time of the same
   search with 1 and with 2 concurrent trials, and the speedup.

    .venv/bin/python bench/ray_overhead.py [--trials 3] [--seeds 6] [--skip-speedup]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

NO_WORK = {
    "name": "overhead", "trainable": "real",
    "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
    "model": {"n_layer": 2, "d_model": 16, "head_size": 8},
    "budget": {"steps": 1, "batch_size": 8, "eval_every": 1, "warmup": 0},
    "data": {"n_train": 64, "n_val": 16, "eval_batch_size": 16},
    "space": {"alpha_init": {"type": "float", "low": -4.0, "high": -1.0}},
    "racing": {"enabled": False},
}


def _search(raw: dict, out: str) -> tuple[float, dict]:
    from fsray.search.driver import run_search
    from fsray.search.space import parse_space

    space = parse_space(raw)
    t0 = time.perf_counter()
    summary = run_search(space, out=out, confirm_seeds=0, say=lambda line: None)
    return time.perf_counter() - t0, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--skip-speedup", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--speedup-trials", type=int, default=2)
    ap.add_argument("--speedup-seeds", type=int, default=2)
    ap.add_argument("--speedup-steps", type=int, default=None,
                    help="override the embedded default's training steps (shorter runs)")
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        if not args.skip_overhead:
            _overhead(args)
        if args.skip_speedup:
            return
        from fsray.search.space import load_space

        demo = load_space("search_spaces/demo_cpu.yaml").model_dump()
        walls = {}
        for conc in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                raw = {**demo, "seeds": args.speedup_seeds, "baseline_cache": f"{tmp}/cache",
                       "racing": {"enabled": False},
                       "budget": {"steps": args.speedup_steps} if args.speedup_steps else {},
                       "space": {"alpha_init": demo["space"]["alpha_init"]},  # never a no-op
                       "search": {**demo["search"], "trials": args.speedup_trials, "concurrency": conc}}
                # baselines are shared by both settings' trials: train them first, outside the timing
                _search({**raw, "search": {**raw["search"], "trials": 1}}, f"{tmp}/warm")
                walls[conc], _ = _search(raw, f"{tmp}/run")
                print(f"embedded default, {args.speedup_trials} trials x {args.speedup_seeds} seeds, "
                      f"concurrency {conc}: {walls[conc]:.1f} s")
        print(f"speedup of 2 concurrent trials over 1: {walls[1] / walls[2]:.2f}x")
    finally:
        ray.shutdown()


def _overhead(args) -> None:
    from fsray.ray_train import fit_runs
    from fsray.search.evaluate import RealRunner
    from fsray.search.space import parse_space

    with tempfile.TemporaryDirectory() as tmp:
        raw = {**NO_WORK, "seeds": args.seeds, "baseline_cache": f"{tmp}/cache",
               "search": {"trials": args.trials, "concurrency": 1, "sampler": "random"}}
        runner = RealRunner(parse_space(raw), f"{tmp}/train")
        t0 = time.perf_counter()
        (one,) = fit_runs(runner.spec, [(0, None)], storage_path=f"{tmp}/train", name="one_fit")
        fit_per_run = time.perf_counter() - t0
        print(f"one TorchTrainer fit per seed run: {fit_per_run:.1f} s "
              f"(the run itself {one['seconds']:.2f} s)")

        for mapping in ("pool", "fit_per_trial"):
            cfg = {**raw, "resources": {"mapping": mapping},
                   "baseline_cache": f"{tmp}/cache_{mapping}"}
            wall, summary = _search(cfg, f"{tmp}/run_{mapping}")
            c = summary["counts"]
            per_run = wall / c["runs_made"]
            work = sum(r["fs"]["seconds"] + r["baseline"]["seconds"] * (not r["baseline"]["cached"])
                       for r in summary_records(f"{tmp}/run_{mapping}") if r.get("fs"))
            print(f"search, mapping {mapping}: {args.trials} trials x {args.seeds} seeds = "
                  f"{c['runs_made']} seed runs in {wall:.1f} s (whole search incl. Tune and pool "
                  f"start): {per_run:.2f} s per seed run amortised, {fit_per_run / per_run:.1f}x "
                  f"less than a fit per run (the runs' own work: {work:.1f} s)")


def summary_records(run_dir: str) -> list[dict]:
    from analysis.schema import read_records

    return read_records(f"{run_dir}/results.jsonl").records


if __name__ == "__main__":
    main()
