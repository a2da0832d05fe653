"""Report plots (matplotlib, Agg backend, PNG bytes).

* ``forest``: per-configuration interval of the mean delta, each seed's delta as a dot coloured by
  the pair's breakthrough outcome (both learned / only FS / only no_fs / neither), zero marked;
* ``paired_lines``: baseline vs FS per seed, one line per seed, runs coloured learned / not learned;
* ``pareto``: for a search, mean delta against its spread (std) per configuration, the Pareto front
  (highest mean for its spread) marked.

Each plot takes the data frames it draws -- the summary rows (``analysis.summary``), the paired seeds
and the columns that key one to the other -- and a few plain options, never the report object.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

OUTCOME_COLOURS = {"both": "#2ca02c", "only_fs": "#1f77b4", "only_base": "#ff7f0e",
                   "neither": "#7f7f7f", "unknown": "#333333"}
OUTCOME_LABELS = {"both": "both learned", "only_fs": "only FS learned",
                  "only_base": "only no_fs learned", "neither": "neither learned",
                  "unknown": "learned: unknown"}
RUN_COLOURS = {True: "#2ca02c", False: "#7f7f7f", None: "#1f77b4"}


def _png(fig, tight: bool = False) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def _outcome(bl, fl) -> str:
    if bl is None or fl is None or (isinstance(bl, float) and math.isnan(bl)) or (
            isinstance(fl, float) and math.isnan(fl)):
        return "unknown"
    bl, fl = bool(bl), bool(fl)
    return "both" if bl and fl else "only_fs" if fl else "only_base" if bl else "neither"


def _flag(v) -> bool | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)


def _label(r: pd.Series, width: int = 48) -> str:
    """How a plot names a configuration: its short id (``config_id``, the report table's, whose key
    the HTML page prints beside the plot) and stage; without an id, its task and label cut."""
    if r.get("config_id") is not None:
        s = str(r["config_id"])
    else:
        parts = [str(r[c]) for c in ("task", "config") if c in r.index and r[c] is not None]
        s = " · ".join(parts) or "all"
        s = s if len(s) <= width else s[: width - 1] + "…"
    return f"{s} [{r['stage']}]" if "stage" in r.index else s


def _ids(rows: pd.DataFrame) -> list[str]:
    """The configuration ids a plot shows, in order, each once (for the key beside it)."""
    if "config_id" not in rows.columns:
        return []
    return list(dict.fromkeys(str(x) for x in rows["config_id"]))


def _first_rows(summary: pd.DataFrame, k: int) -> pd.DataFrame:
    """The first ``k`` configurations in report order, those with an interval (n >= 2) first."""
    order = np.argsort(~(summary["n"] >= 2).to_numpy(), kind="stable")
    return summary.iloc[order[:k]]


def _seeds_of(data: pd.DataFrame, keys: list[str], r: pd.Series) -> pd.DataFrame:
    """The paired seeds of one summary row (matched on the grouping keys)."""
    mask = np.ones(len(data), dtype=bool)
    for k in keys:
        mask &= (data[k] == r[k]).to_numpy()
    return data[mask]


def forest(summary: pd.DataFrame, data: pd.DataFrame, keys: list[str], metric: str = "acc",
           level: float = 0.95, interval: str = "t", max_configs: int = 40) -> bytes:
    m = metric
    dcol = f"d_{m}"
    rows = _first_rows(summary, max_configs)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.36 * n))
    rng = np.random.default_rng(0)  # jitter only: fixed so the picture is reproducible
    used = set()
    for i, (_, r) in enumerate(rows.iterrows()):
        y = n - 1 - i
        if r["ci_lo"] is not None and r["ci_hi"] is not None:
            ax.plot([r["ci_lo"], r["ci_hi"]], [y, y], color="black", lw=2, solid_capstyle="butt")
        if r["mean"] is not None:
            ax.plot([r["mean"]], [y], marker="D", color="black", ms=5)
        seeds = _seeds_of(data, keys, r)
        outcomes = [_outcome(b, f) for b, f in zip(seeds["base_learned_eff"], seeds["fs_learned_eff"])]
        used.update(outcomes)
        ax.scatter(seeds[dcol].to_numpy(float), y + rng.uniform(-0.18, 0.18, len(seeds)), s=18,
                   c=[OUTCOME_COLOURS[o] for o in outcomes], alpha=0.85, zorder=3, edgecolors="none")
    ax.axvline(0.0, color="#d62728", lw=1, ls="--")
    ax.set_yticks(range(n))
    ax.set_yticklabels([_label(r) for _, r in rows.iloc[::-1].iterrows()], fontsize=7)
    lvl = int(round(level * 100))
    ax.set_xlabel(f"d_{m} = prompt_fs - no_fs  (black: mean and {lvl}% {interval} "
                  "interval; dots: seeds)")
    title = "Per-configuration paired deltas"
    if len(summary) > n:
        title += f" (first {n} of {len(summary)}, those with >= 2 seeds first)"
    ax.set_title(title, fontsize=10)
    handles = [plt.Line2D([], [], marker="o", ls="", color=OUTCOME_COLOURS[k], label=OUTCOME_LABELS[k])
               for k in OUTCOME_COLOURS if k in used]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_ylim(-0.7, n - 0.3)
    return _png(fig, tight=True)  # one axis: cheap, and fits long labels


def paired_lines(summary: pd.DataFrame, data: pd.DataFrame, keys: list[str], metric: str = "acc",
                 max_configs: int = 8) -> bytes:
    m = metric
    rows = _first_rows(summary, max_configs)
    k = len(rows)
    cols = min(4, k)
    nrows = math.ceil(k / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.6 * nrows), squeeze=False)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    for ax, (_, r) in zip(axes.ravel(), rows.iterrows()):
        seeds = _seeds_of(data, keys, r)
        b, f = seeds[f"base_{m}"].to_numpy(float), seeds[f"fs_{m}"].to_numpy(float)
        ok = np.isfinite(b) & np.isfinite(f)
        b, f = b[ok], f[ok]
        ax.add_collection(LineCollection([[(0, y0), (1, y1)] for y0, y1 in zip(b, f)],
                                         colors="#bbbbbb", lw=1, zorder=1))
        for x, v, col in ((0, b, "base_learned_eff"), (1, f, "fs_learned_eff")):
            colours = [RUN_COLOURS[_flag(x)] for x in seeds[col].to_numpy(object)[ok]]
            ax.scatter(np.full(len(v), x), v, c=colours, s=20, zorder=2)
        if len(f) <= 8:
            for seed, y in zip(seeds["seed"].to_numpy()[ok], f):
                ax.annotate(str(seed), (1.04, y), fontsize=6, va="center")
        ax.autoscale_view()
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["no_fs", "prompt_fs"], fontsize=7)
        ax.set_xlim(-0.2, 1.25)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(_label(r, 34), fontsize=7)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=l)
               for c, l in ((RUN_COLOURS[True], "learned"), (RUN_COLOURS[False], "not learned"),
                            (RUN_COLOURS[None], "unknown"))]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"{m}: no_fs vs prompt_fs per seed (seed numbers at right up to 8 seeds)",
                 fontsize=9)
    # Fixed spacing: tight_layout on a grid of panels costs seconds on a busy 2-core machine.
    fig.subplots_adjust(left=0.07, right=0.97, top=0.88, bottom=0.16, wspace=0.35, hspace=0.5)
    return _png(fig)


def pareto_front(mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Mask of configurations no other beats on both counts (higher mean and lower spread, one
    strictly)."""
    mean, spread = np.asarray(mean, float), np.asarray(spread, float)
    better_mean = mean[None, :] >= mean[:, None]
    better_spread = spread[None, :] <= spread[:, None]
    strictly = (mean[None, :] > mean[:, None]) | (spread[None, :] < spread[:, None])
    dominated = (better_mean & better_spread & strictly).any(axis=1)
    return ~dominated


def pareto(family: pd.DataFrame, metric: str = "acc") -> bytes:
    sign = -1.0 if metric == "loss" else 1.0
    fam = family[family["n"] >= 2]
    if "noop" in fam.columns:  # a no-op sits at zero spread: never on the front
        fam = fam[~fam["noop"].astype(bool)]
    mean = pd.to_numeric(fam["mean"]).to_numpy(float)
    spread = pd.to_numeric(fam["std"]).to_numpy(float)
    front = pareto_front(sign * mean, spread)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(spread[~front], mean[~front], color="#7f7f7f", s=22, label="dominated")
    order = np.argsort(spread[front])
    ax.plot(spread[front][order], mean[front][order], "-o", color="#d62728", ms=6, lw=1.2,
            label="Pareto front")
    has_ids = "config_id" in fam.columns
    for (_, r), x, y, on in zip(fam.iterrows(), spread, mean, front):
        # with ids every point is named (the key is beside the plot); without, the front only
        if has_ids or on:
            name = str(r["config_id"]) if has_ids else str(r.get("config", ""))
            ax.annotate(name if len(name) <= 30 else name[:29] + "…", (x, y), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.0, color="black", lw=0.8, ls="--")
    ax.set_xlabel("spread across seeds (std of the delta)")
    ax.set_ylabel(f"mean d_{metric}")
    r0 = fam.iloc[0]
    ax.set_title(f"Search: mean against spread ({r0.get('task', '')}, {r0['stage']}, "
                 f"{len(fam)} configurations)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def meta_forest(result, metric: str = "acc", level: float = 0.95, max_tasks: int = 60) -> bytes:
    """Forest plot of an across-task summary (``analysis.meta.MetaResult``): each task's effect
    and interval (marker size by its random-effects weight), the pooled effect as a diamond
    spanning its interval, and the prediction interval for a new task as a bar under it."""
    tasks = result.tasks.iloc[:max_tasks]
    n = len(tasks)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.3 * (n + 2)))
    w = tasks["weight"].to_numpy(float)
    sizes = 15 + 110 * (w / w.max() if w.max() > 0 else w)
    for i, (_, t) in enumerate(tasks.iterrows()):
        y = n + 1 - i
        ax.plot([t["ci_lo"], t["ci_hi"]], [y, y], color="black", lw=1.2)
        ax.scatter([t["effect"]], [y], marker="s", s=sizes[i], color="#1f77b4", zorder=3)
    mu, lo, hi = result.mu, result.ci_lo, result.ci_hi
    ax.fill([lo, mu, hi, mu], [0.5, 0.85, 0.5, 0.15], color="#d62728", zorder=3,
            label=f"pooled (random effects, {result.method}) {mu:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    if result.pi_lo is not None:
        ax.plot([result.pi_lo, result.pi_hi], [-0.3, -0.3], color="#d62728", lw=3, alpha=0.45,
                solid_capstyle="butt",
                label=f"new task (prediction) [{result.pi_lo:+.4f}, {result.pi_hi:+.4f}]")
    ax.axvline(0.0, color="#555555", lw=1, ls="--")
    ax.set_yticks([n + 1 - i for i in range(n)] + [0.5])
    ax.set_yticklabels([str(t)[:40] for t in tasks["task"]] + ["pooled"], fontsize=7)
    lvl = int(round(level * 100))
    ax.set_xlabel(f"mean d_{metric} = prompt_fs - no_fs per task ({lvl}% intervals)")
    ax.set_title(f"{result.what} [{result.stage}]: {result.k} tasks, tau^2 {result.tau2:.3g}, "
                 f"I^2 {100 * result.i2:.0f}%", fontsize=9)
    # under the axes: inside, it would hide the diamond (which sits at the bottom)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)
    ax.set_ylim(-0.8, n + 1.6)
    return _png(fig, tight=True)
PAIRED_PANELS = 8   # panels of the per-seed plot


def all_plots(summary: pd.DataFrame, data: pd.DataFrame, keys: list[str], metric: str = "acc",
              level: float = 0.95, interval: str = "t",
              max_configs: int = 40) -> list[tuple[str, bytes, list[str]]]:
    """(title, PNG, ids of the configurations it names) of every plot that applies to these
    summary rows and their seeds."""
    out = [("Forest plot of paired deltas", forest(summary, data, keys, metric, level, interval,
                                                   max_configs),
            _ids(_first_rows(summary, max_configs))),
           ("Baseline vs FS per seed", paired_lines(summary, data, keys, metric, PAIRED_PANELS),
            _ids(_first_rows(summary, PAIRED_PANELS)))]
    s = summary
    fam_cols = [c for c in ("stage", "task") if c in s.columns]
    for key, fam in s.groupby(fam_cols, sort=False):
        # A search: several configurations of one task and stage with a spread each.
        real = fam[~fam["noop"].astype(bool)] if "noop" in fam.columns else fam
        if (real["n"] >= 2).sum() >= 3 and (fam.iloc[0]["stage"] == "selection" or len(fam) >= 4):
            name = " / ".join(map(str, key if isinstance(key, tuple) else (key,)))
            out.append((f"Search {name}: mean delta against spread", pareto(fam, metric),
                        _ids(real[real["n"] >= 2])))
    return out
