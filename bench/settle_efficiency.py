"""Seeds used by the settling design (analysis.verdict) against a fixed-n design at equal power.

For each scenario (a family of configurations with known true mean deltas and a paired-delta
model), simulate the settling loop -- a first look at 3 seeds, then a look after every round of
``--round`` seeds, up to the horizon -- and count the seeds it used. The fixed-n comparator is the
smallest n whose single look (the whole alpha at once) reaches a correct verdict at least as often
as the sequential design does (averaged over the family; capped at the best a fixed design reaches,
less 0.005 of Monte-Carlo slack). A verdict is correct when it agrees with the truth: "helps" when
the true mean is > 0, "hurts" when < 0, "no effect" when |mean| < delta. Ratio = mean seeds used /
n fixed (goal <= 0.7). The error rates are measured in the same run: P(helps or hurts | no effect)
over all looks (<= alpha) and P(no effect | effect exactly delta) (<= alpha).

Scenarios: normal deltas at delta / sd = 0.6 .. 1.5 (the only thing that matters for normal deltas);
the all-or-nothing (bimodal) model; and the effect surface of the simulated trainable
(``search_spaces/simulated.yaml``: its true effects and seed noise) for a sample of configurations.

    .venv/bin/python bench/settle_efficiency.py [--reps 4000] [--round 2] [--horizon 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import settle_sim as ss  # noqa: E402
from analysis.verdict import DEFAULT_DELTA, Design  # noqa: E402

MAX_FIXED = 120


def family(name: str, truths: list[tuple[float, float]], make, design: Design, looks, reps: int,
           rng) -> dict:
    """truths: (mean, sd) per configuration; make(rng, reps, n, mean, sd) -> deltas [reps, n]."""
    seq_seeds, seq_ok, fixed_ok = [], [], np.zeros(MAX_FIXED + 1)
    errs = {}
    for mu, sd in truths:
        D = make(rng, reps, MAX_FIXED, mu, sd)
        r = ss.sequential_verdicts(D[:, :design.horizon], design, looks)
        seq_seeds.append(r["n"].mean())
        seq_ok.append(ss.correct(r["code"], mu, design.delta).mean())
        for n in range(3, MAX_FIXED + 1):
            f = ss.fixed_verdicts(D, design, n)
            fixed_ok[n] += ss.correct(f["code"], mu, design.delta).mean() / len(truths)
        errs[(mu, sd)] = ss.rates(r)
    target = min(float(np.mean(seq_ok)), fixed_ok[3:].max()) - 0.005
    n_fixed = int(np.argmax(fixed_ok >= target))
    used = float(np.mean(seq_seeds))
    return {"name": name, "seeds": used, "n_fixed": n_fixed, "ratio": used / n_fixed,
            "correct": float(np.mean(seq_ok)), "fixed_correct": float(fixed_ok[n_fixed]),
            "rates": errs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--round", type=int, default=2)
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--delta", type=float, default=DEFAULT_DELTA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rho", type=float, default=None, help="spending exponent (default: the design's)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    delta = args.delta
    design = Design(delta=delta, horizon=args.horizon,
                    **({} if args.rho is None else {"rho": args.rho}))
    looks = ss.schedule(args.horizon, args.round)
    print(f"design: delta={delta} alpha={design.alpha} horizon={design.horizon} rho={design.rho} "
          f"looks={list(looks)}; {args.reps} replications per configuration")
    normal = lambda rng, r, n, mu, sd: ss.normal_deltas(rng, r, n, mu, sd)  # noqa: E731
    rows, err_lines = [], []
    for theta in (0.6, 0.8, 1.0, 1.5):
        sd = delta / theta
        for fam_name, mus in (("null (all 0)", [0.0]), ("effect 2*delta", [2 * delta]),
                              ("mix 0 / delta / 2*delta", [0.0, delta, 2 * delta])):
            res = family(f"normal delta/sd={theta:g} (sd {sd:.4f}): {fam_name}",
                         [(m, sd) for m in mus], normal, design, looks, args.reps, rng)
            rows.append(res)
        # error rates and power at this sd
        D0 = normal(rng, args.reps, args.horizon, 0.0, sd)
        D1 = normal(rng, args.reps, args.horizon, delta, sd)
        D2 = normal(rng, args.reps, args.horizon, 2 * delta, sd)
        r0, r1, r2 = (ss.rates(ss.sequential_verdicts(D, design, looks)) for D in (D0, D1, D2))
        err_lines.append(f"normal sd {sd:.4f}: P(helps|hurts | 0) = {r0['helps'] + r0['hurts']:.4f}  "
                         f"P(no effect | delta) = {r1['no effect']:.4f}  power P(helps | 2 delta) = "
                         f"{r2['helps']:.3f}  P(no effect | 0) = {r0['no effect']:.3f}")
    for sd in (0.03, 0.08):  # the researchers' larger seed noise: little is decided by 20 seeds
        r0, r1, r2 = (ss.rates(ss.sequential_verdicts(normal(rng, args.reps, args.horizon, mu, sd),
                                                      design, looks))
                      for mu in (0.0, delta, 2 * delta))
        err_lines.append(f"normal sd {sd:.4f}: P(helps|hurts | 0) = {r0['helps'] + r0['hurts']:.4f}  "
                         f"P(no effect | delta) = {r1['no effect']:.4f}  power P(helps | 2 delta) = "
                         f"{r2['helps']:.3f}  P(no effect | 0) = {r0['no effect']:.3f}  "
                         f"mean seeds {r0['mean_seeds']:.1f}")
    bim = lambda rng, r, n, mu, sd: ss.bimodal_deltas(rng, r, n, mu, quality_sd=sd)  # noqa: E731
    for q in (0.01, 0.02):
        rows.append(family(f"bimodal (p learn 0.6, 90% same outcome, quality sd {q}): "
                           "mix 0 / delta / 2*delta",
                           [(0.0, q), (delta, q), (2 * delta, q)], bim, design, looks, args.reps, rng))
        Dz = bim(rng, args.reps, args.horizon, 0.0, q)
        Dd = bim(rng, args.reps, args.horizon, delta, q)
        rz, rd = (ss.rates(ss.sequential_verdicts(D, design, looks)) for D in (Dz, Dd))
        err_lines.append(f"bimodal quality sd {q}: P(helps|hurts | 0) = {rz['helps'] + rz['hurts']:.4f}  "
                         f"P(no effect | delta) = {rd['no effect']:.4f}")
    surface = _simulated_surface(rng, delta)
    if surface:
        truths, note = surface
        rows.append(family(f"simulated trainable surface ({note})", truths, normal, design, looks,
                           max(args.reps // 4, 500), rng))
    print()
    print(f"{'scenario':<78} {'seeds':>6} {'fixed n':>7} {'ratio':>6} {'correct':>8}")
    for r in rows:
        print(f"{r['name']:<78} {r['seeds']:6.2f} {r['n_fixed']:7d} {r['ratio']:6.2f} "
              f"{r['correct']:8.3f}")
    mix = [r["ratio"] for r in rows if ("mix" in r["name"] and "normal" in r["name"])
           or "surface" in r["name"]]
    bim = [r["ratio"] for r in rows if "bimodal" in r["name"]]
    print(f"\nratio (sequential seeds / fixed n at equal power; goal <= 0.7): median "
          f"{np.median(mix):.2f} over the normal mixed families and the simulated surface, "
          f"{np.median(bim):.2f} over the bimodal ones")
    print("\nerror rates over all looks (alpha = 0.05; Monte-Carlo se ~"
          f"{np.sqrt(0.05 * 0.95 / args.reps):.4f}):")
    for line in err_lines:
        print("  " + line)
    print(f"\n{time.perf_counter() - t0:.1f} s")
    return 0


def _simulated_surface(rng, delta: float):
    """True effects and seed noise of 12 configurations drawn from search_spaces/simulated.yaml."""
    try:
        from fsray.search.simulated import noise_sd, true_effect
        from fsray.search.space import load_space
        from fsray.fsconfig import FSConfig
        space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "simulated.yaml")
        sim = space.simulated
        truths = []
        for _ in range(12):
            cfg = FSConfig(fs_layer_start=int(rng.integers(1, 12)), alpha_init=float(rng.uniform(-4, -1)),
                           fs_norm=bool(rng.integers(2)), fs_detach=True,
                           fs_alpha_schedule=str(rng.choice(["none", "linear", "cosine"])))
            truths.append((true_effect(sim, cfg), noise_sd(sim, cfg)))
        return truths, (f"12 configurations, true effects {min(t for t, _ in truths):+.3f}.."
                        f"{max(t for t, _ in truths):+.3f}, seed sd {truths[0][1]:.3f}")
    except Exception as exc:  # the search package is optional here (and may be mid-rewrite)
        print(f"(simulated trainable surface skipped: {type(exc).__name__}: {str(exc)[:120]})")
        return None


if __name__ == "__main__":
    raise SystemExit(main())
