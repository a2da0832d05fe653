"""The embedded default's 5-seed paired comparison, for both orderings of kv_retrieval.

For each order (query_after: the causally unfriendly one; query_first), trains no_fs and prompt_fs
(the demo's fixed FS: fs_layer_start 1, alpha_init -2) on seeds 0..4, two processes at a time as a
laptop would, and prints per seed the no_fs exact match and token accuracy against chance, the
paired deltas, then the mean, sd, sign test (scipy.stats.binomtest) and 95% t interval of the token
accuracy delta, and the wall time of each 5-seed comparison (goal: <= 5 minutes on 2 cores).

Usage: .venv/bin/python bench/default_paired.py [--seeds 5] [--orders query_after,query_first]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FS_KNOBS = {"fs_layer_start": 1, "alpha_init": -2.0}


def _run(job):
    order, seed, use_fs = job
    import torch

    from fsray.fsconfig import FSConfig
    from fsray.spec import embedded_default_spec
    from fsray.trainer import run_mode

    torch.set_num_threads(1)
    spec = embedded_default_spec(order)
    return order, seed, use_fs, run_mode(spec, seed, FSConfig(**FS_KNOBS) if use_fs else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--orders", default="query_after,query_first")
    args = ap.parse_args(argv)

    from fsray.spec import embedded_default_spec
    from fsray.trainer import task_chance

    spec = embedded_default_spec("query_after")
    print(f"embedded default: {spec.model.n_layer} layers x {spec.model.d_model}, base {spec.model.checkpoint}, "
          f"task {spec.task.name} {spec.task.options}, {spec.budget.steps} steps x batch {spec.budget.batch_size}, "
          f"lr {spec.budget.lr}; FS {FS_KNOBS}")
    with ProcessPoolExecutor(2) as pool:
        for order in args.orders.split(","):
            chance = task_chance(embedded_default_spec(order))
            jobs = [(order, s, fs) for s in range(args.seeds) for fs in (False, True)]
            t = time.perf_counter()
            runs = {(s, fs): r for _, s, fs, r in pool.map(_run, jobs)}
            wall = time.perf_counter() - t
            print(f"\n{order}: chance {chance['seq_acc']:.2f} exact match, {chance['token_acc']:.2f} token accuracy; "
                  f"{len(jobs)} runs in {wall:.0f} s wall (2 processes)")
            print("seed | no_fs exact | no_fs token | prompt_fs exact | d_acc (token) | d_seq (exact)")
            d_acc, d_seq = [], []
            for s in range(args.seeds):
                no, fs = runs[(s, False)], runs[(s, True)]
                d_acc.append(fs["token_acc"] - no["token_acc"])
                d_seq.append(fs["seq_acc"] - no["seq_acc"])
                print(f"{s:4d} | {no['seq_acc']:11.3f} | {no['token_acc']:11.3f} | {fs['seq_acc']:15.3f} | "
                      f"{d_acc[-1]:+13.4f} | {d_seq[-1]:+13.4f}")
            d = np.array(d_acc)
            pos, neg = int((d > 0).sum()), int((d < 0).sum())
            sign_p = stats.binomtest(pos, pos + neg).pvalue if pos + neg else 1.0
            lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d)) if d.std() else (d.mean(),) * 2
            print(f"mean d_acc {d.mean():+.4f} (sd {d.std(ddof=1):.4f}), {pos}/{len(d)} positive, sign-test p {sign_p:.3f}, "
                  f"95% t interval [{lo:+.4f}, {hi:+.4f}]; mean d_seq {np.mean(d_seq):+.4f}; "
                  f"no_fs exact match {min(runs[(s, False)]['seq_acc'] for s in range(args.seeds)):.2f}-"
                  f"{max(runs[(s, False)]['seq_acc'] for s in range(args.seeds)):.2f} vs chance {chance['seq_acc']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
