"""Speed of the batched bootstrap intervals against a plain per-configuration scipy loop.

    .venv/bin/python bench/analysis_speed.py [--configs 1000] [--seeds 5] [--resamples 10000]
                                             [--loop-subset 100] [--method bca]

Prints the time of ``analysis.stats.mean_intervals`` over all configurations (goal: <= 2 s for
1000 x 5 x 10,000), the time of a ``scipy.stats.bootstrap`` loop (timed on ``--loop-subset``
configurations and extrapolated linearly to all of them unless the subset is all), their ratio, and
the largest difference between the two sets of interval ends (both are Monte Carlo estimates, so
it is reported in units of each configuration's standard error, next to the difference between two
scipy runs with different seeds: the Monte Carlo noise floor), and the time of the whole
``summarize`` table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats import mean_intervals, summarize


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--loop-subset", type=int, default=100,
                    help="configurations the scipy loop is timed on (extrapolated); 0 = all")
    ap.add_argument("--method", choices=("bca", "percentile"), default="bca")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many batched runs")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    D = rng.normal(0.01, 0.03, size=(args.configs, args.seeds))

    mean_intervals(D[:10], method=args.method, n_resamples=100)  # warm caches / imports
    batched = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        lo, hi = mean_intervals(D, method=args.method, n_resamples=args.resamples, seed=r)
        batched.append(time.perf_counter() - t0)
    t_batched = min(batched)

    subset = args.configs if args.loop_subset <= 0 else min(args.loop_subset, args.configs)
    ref = np.empty((subset, 2))
    t0 = time.perf_counter()
    for g in range(subset):
        ci = stats.bootstrap((D[g],), np.mean, method=args.method, n_resamples=args.resamples,
                             rng=g).confidence_interval
        ref[g] = ci.low, ci.high
    t_loop_subset = time.perf_counter() - t0
    t_loop = t_loop_subset * args.configs / subset

    diff = np.abs(np.column_stack([lo[:subset], hi[:subset]]) - ref)
    se = D[:subset].std(axis=1, ddof=1) / np.sqrt(args.seeds)
    print(f"data: {args.configs} configurations x {args.seeds} seeds, {args.resamples} resamples, "
          f"method={args.method}")
    print(f"batched mean_intervals: {t_batched:.3f} s (best of {args.repeats}: "
          + ", ".join(f"{t:.3f}" for t in batched) + ")  goal <= 2 s")
    extrapolated = "" if subset == args.configs else \
        f" (timed {t_loop_subset:.2f} s on {subset}, extrapolated x{args.configs / subset:g})"
    print(f"scipy.stats.bootstrap loop: {t_loop:.2f} s{extrapolated}")
    print(f"speed-up: {t_loop / t_batched:.0f}x")
    print(f"largest |difference| of interval ends over {subset} configurations: {diff.max():.2e} "
          f"({(diff / se[:, None]).max():.3f} standard errors; median {np.median(diff):.1e})")

    # Noise floor: the same scipy loop with other seeds differs from itself by this much.
    again = np.array([stats.bootstrap((D[g],), np.mean, method=args.method,
                                      n_resamples=args.resamples, rng=10**6 + g)
                      .confidence_interval for g in range(subset)])
    floor = np.abs(again - ref)
    print(f"scipy vs scipy (other seeds), same configurations: largest {floor.max():.2e} "
          f"({(floor / se[:, None]).max():.3f} standard errors)")

    df = pd.DataFrame({"config": np.repeat(np.arange(args.configs), args.seeds),
                       "d_acc": D.ravel()})
    for method in ("t", args.method):
        t0 = time.perf_counter()
        summarize(df, "d_acc", "config", method=method, n_resamples=args.resamples)
        print(f"full summarize() table, method={method}: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
