"""Search efficiency on the simulated trainable: fsray's protocol vs the researchers'.

The researchers' protocol (docs/DESIGN.md §5): every candidate gets a fresh no_fs baseline and every seed,
and the candidate with the best mean delta wins. fsray's: baselines trained once per seed and
shared, seeds raced against the incumbent, the winner chosen by the lower bound of its interval.
Both see the SAME candidates (Optuna's random sampler, same seed per repetition) so the comparison
isolates the protocol; a third line adds fsray's default TPE sampler.

Per protocol over ``--reps`` repetitions (fresh seeds each): training runs to select, wall time to
select (runs x ``--seconds-per-run``, one run at a time: the simulated runs cost nothing), how often
the pick is the truly best configuration of the whole space, how often it is the best of the
candidates evaluated, and the mean regret (true effect of the best config - of the pick).
The loop is the search's own ``evaluate_config`` + Optuna ask/tell, in process (no Tune).

    .venv/bin/python bench/search_efficiency.py [--reps 20] [--trials 24] [--seeds 5]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import numpy as np
import optuna

from fsray.search.evaluate import SimulatedRunner, evaluate_config
from fsray.search.simulated import baseline_run, fs_run, true_effect
from fsray.search.space import optuna_distributions, parse_space
from fsray.search.store import ResultsStore
from fsray.search.summary import best_row, config_rows

SPACE = {
    "name": "bench", "trainable": "simulated", "task": {"name": "kv_retrieval"},
    "seeds": 5,
    "knobs": {
        "fs_layer_start": {"type": "categorical", "choices": [4, 6, 8, 10, 12]},
        "alpha_init": {"type": "categorical", "choices": [-3.0, -2.0, -1.0]},
        "fs_norm": {"type": "categorical", "choices": [True, False]},
        "fs_alpha_schedule": {"type": "categorical", "choices": ["none", "linear"]},
    },
    "simulated": {
        "n_layer": 12, "baseline_sd": 0.05, "noise_sd": 0.012,
        "effects": {
            "fs_layer_start": {"peak": 8, "width": 2.0, "height": 0.035},
            "alpha_init": {"peak": -2.0, "width": 0.8, "height": 0.015},
            "fs_norm": {"values": {"true": 0.0, "false": -0.03}},
            "fs_alpha_schedule": {"values": {"none": 0.0, "linear": 0.01}},
        },
        "noise_scale": {"fs_norm": {"false": 2.0}},
    },
}


def _grid(space):
    knobs = list(space.knobs)
    for values in itertools.product(*(space.knobs[k].choices for k in knobs)):
        yield dict(zip(knobs, values))


def _truth(space):
    effects = {tuple(sorted(p.items())): true_effect(space.simulated, space.fs_config(p))
               for p in _grid(space)}
    best = max(effects, key=effects.get)
    return effects, best


def _key(params):
    return tuple(sorted(params.items()))


def researchers(space, seeds, trials, sampler_seed):
    """Fresh baseline per candidate, every seed, best mean delta."""
    sim = space.simulated
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=sampler_seed))
    dists = optuna_distributions(space)
    runs, means, seen = 0, {}, []
    for _ in range(trials):
        trial = study.ask(dists)
        seen.append(_key(trial.params))
        if _key(trial.params) in means:  # a repeated candidate: a hand grid would not rerun it
            study.tell(trial, means[_key(trial.params)])
            continue
        cfg = space.fs_config(trial.params)
        deltas = []
        for s in seeds:
            base = baseline_run(sim, s)  # retrained for every candidate
            fs = fs_run(sim, cfg, s, base)
            runs += 2
            deltas.append(fs["token_acc"] - base["token_acc"])
        means[_key(trial.params)] = float(np.mean(deltas))
        study.tell(trial, means[_key(trial.params)])
    return max(means, key=means.get), runs, seen


def fsray_protocol(space, seeds, trials, sampler):
    """Shared cached baselines, racing, lower-bound objective (the search's own code)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(f"{tmp}/run", f"{tmp}/cache", space.objective.model_dump())
        runner = SimulatedRunner(space)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        dists = optuna_distributions(space)
        seen = []
        for _ in range(trials):
            trial = study.ask(dists)
            stats = evaluate_config(space, runner, store, dict(trial.params), seeds)
            seen.append(_key(trial.params))
            study.tell(trial, stats["objective"])
        records = store.all_records()
        best = best_row(config_rows(records, space))
        runs = sum(1 for r in records if r["status"] != "noop") + store.baselines_trained()
        pick = _key({k: best["config"][k] for k in space.knobs})
        return pick, runs, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seconds-per-run", type=float, default=20.0,
                    help="wall time of one seed run for the time-to-select column "
                         "(embedded default on this CPU: ~20 s)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space({**SPACE, "seeds": args.seeds})
    effects, best = _truth(space)
    print(f"space: {len(effects)} configurations; truly best {dict(best)} (effect {effects[best]:+.4f}); "
          f"{args.trials} trials x {args.seeds} seeds, {args.reps} repetitions")

    protocols = {
        "researchers (fresh baseline, all seeds, best mean)": lambda seeds, r: researchers(space, seeds, args.trials, r),
        "fsray, same random candidates": lambda seeds, r: fsray_protocol(
            space, seeds, args.trials, optuna.samplers.RandomSampler(seed=r)),
        "fsray, TPE (default)": lambda seeds, r: fsray_protocol(
            space, seeds, args.trials, optuna.samplers.TPESampler(seed=r, multivariate=True, n_startup_trials=5)),
    }
    rows = {}
    for name, fn in protocols.items():
        runs, right, right_seen, regret, wall = [], 0, 0, [], []
        for r in range(args.reps):
            seeds = [1000 * r + i for i in range(args.seeds)]
            t0 = time.perf_counter()
            pick, n_runs, seen = fn(seeds, r)
            wall.append(time.perf_counter() - t0)
            runs.append(n_runs)
            right += pick == best
            best_seen = max(set(seen), key=lambda k: effects[k])
            right_seen += pick == best_seen
            regret.append(effects[best] - effects[pick])
        rows[name] = (np.mean(runs), right, right_seen, np.mean(regret), np.mean(wall))
    base_runs = rows[next(iter(rows))][0]
    print(f"{'protocol':52} {'runs':>6} {'ratio':>6} {'time to select':>15} {'truly best':>10} "
          f"{'best seen':>9} {'regret':>7}")
    for name, (runs, right, right_seen, regret, wall) in rows.items():
        hours = runs * args.seconds_per_run / 3600
        print(f"{name:52} {runs:6.1f} {runs / base_runs:6.2f} {hours:13.2f} h {right:>5}/{args.reps:<4} "
              f"{right_seen:>4}/{args.reps:<4} {regret:7.4f}")
    print(f"(time to select = runs x {args.seconds_per_run:.0f} s, one run at a time; the in-process "
          f"loop itself took {np.mean([r[4] for r in rows.values()]):.2f} s per repetition)")


if __name__ == "__main__":
    main()
