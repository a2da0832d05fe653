"""The stability report: per-configuration statistics of paired deltas, rendered five ways.

``build(loaded, options)`` turns a ``loaders.Loaded`` table into a ``Report``: one summary row per
(stage, task, configuration) with the statistics of ``analysis.stats.summarize``, the adjusted
p-values of ``analysis.multiplicity`` (family = the configurations of one stage and task), the
winner's-curse flag, and the breakthrough split of ``analysis.bimodal`` where runs say whether they
learned. ``render(report, fmt)`` gives a terminal table, markdown, a self-contained HTML page (plots
embedded as base64 PNG), CSV or JSON. No statistic is computed here: this module groups, joins,
orders and prints.

Missing numbers are None in the summary and print as "—" (null in JSON, empty in CSV): a NaN never
reaches a report as a number.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import bimodal, multiplicity, stats
from .errors import AnalysisInputError
from .loaders import Loaded

METRICS = {"acc": "token accuracy", "loss": "loss", "seq": "sequence accuracy"}
FORMATS = ("table", "md", "html", "csv", "json")
DASH = "—"
STAGE_ORDER = {"selection": 0, "confirmation": 1, "train": 2, "import": 3}
# Columns of the breakthrough split carried into the summary, prefixed "bt_"; bt_metric names the
# run metric that decided "learned" and that the split's deltas are measured on.
BT_COLUMNS = ("metric", "both", "only_fs", "only_base", "neither", "base_rate", "fs_rate", "rate_change",
              "rate_lo", "rate_hi", "mcnemar_p", "quality_mean", "quality_lo", "quality_hi",
              "median_lo", "median_hi", "iqm", "iqm_lo", "iqm_hi", "bimodal", "advice")


@dataclass
class ReportOptions:
    metric: str = "acc"                   # acc | loss | seq
    group_by: tuple[str, ...] = ("task", "config")
    interval: str = "t"                   # t | bca | percentile
    level: float = 0.95
    effect: float | None = None           # effect for seeds_needed (default: the observed mean)
    learned_above: float | None = None    # threshold on the run metric that counts as learned
    n_resamples: int = 10_000
    max_plot_configs: int = 40

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise AnalysisInputError(f"--metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.interval not in stats.METHODS:
            raise AnalysisInputError(f"--interval must be one of {stats.METHODS}, got {self.interval!r}")
        if self.effect is not None and not (math.isfinite(self.effect) and self.effect != 0):
            raise AnalysisInputError(f"--effect must be a finite non-zero number, got {self.effect}")
        if self.learned_above is not None and not math.isfinite(self.learned_above):
            raise AnalysisInputError(f"--learned-above must be a finite number, got {self.learned_above}")


@dataclass
class Report:
    options: ReportOptions
    summary: pd.DataFrame                 # one row per configuration, sorted as printed
    data: pd.DataFrame                    # the paired seeds the statistics used (status ok)
    excluded: pd.DataFrame                # failed / noop records (counted and listed)
    families: list[dict] = field(default_factory=list)   # per (stage, task): winner's curse
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)    # per configuration: n < 2, all zero, ...
    importance: dict | None = None

    @property
    def exit_code(self) -> int:
        """0: everything read; 1: something skipped but a report was produced."""
        return 1 if (self.problems or self.skipped) else 0


# --------------------------------------------------------------------------------------------------
# building


def _group_cols(options: ReportOptions, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(columns grouped on, columns shown). The stage is always a key (selection and confirmation
    are reported apart); a configuration is grouped by its hash and shown by its label."""
    keys, shown = ["stage"], ["stage"]
    for c in options.group_by:
        if c == "stage":
            continue
        if c not in df.columns or c in ("d_acc", "d_loss", "d_seq"):
            raise AnalysisInputError(f"--group-by {c!r}: not a column of the results; have "
                                     f"{[x for x in df.columns if x not in ('d_acc', 'd_loss', 'd_seq')]}")
        keys.append("config_hash" if c == "config" else c)
        shown.append(c)
    return keys, shown


def _learned_flags(data: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Per seed: whether each run learned (``bl``/``fl``) and the level that splits the clusters
    (``bt_chance``/``bt_margin``), from --learned-above, the recorded flags, or chance + margin."""
    m = "acc" if options.metric == "loss" else options.metric
    out = pd.DataFrame(index=data.index)
    if options.learned_above is None:
        # Recorded flags judged the metric the trainer names (learned_metric): split on that one.
        per_row = data["learned_metric"].where(data["learned_metric"].isin(["acc", "seq"]), m)
    else:
        per_row = pd.Series(m, index=data.index)
    is_seq = (per_row == "seq").to_numpy()
    pick = lambda side: pd.Series(  # noqa: E731
        np.where(is_seq, pd.to_numeric(data[f"{side}_seq"], errors="coerce"),
                 pd.to_numeric(data[f"{side}_acc"], errors="coerce")), index=data.index)
    out["bt_base"], out["bt_fs"] = pick("base"), pick("fs")
    out["bt_metric"] = per_row
    if options.learned_above is not None:
        thr = float(options.learned_above)
        out["bl"], out["fl"] = out["bt_base"] > thr, out["bt_fs"] > thr
        out["bt_chance"], out["bt_margin"] = thr, 0.0
    else:
        chance = pick("chance")  # chance_acc / chance_seq of each row's metric
        margin = pd.to_numeric(data["learned_margin"], errors="coerce").fillna(0.0)
        rec_b, rec_f = data["base_learned"], data["fs_learned"]
        have_rec = rec_b.notna() & rec_f.notna()
        from_chance = chance.notna() & ~have_rec & out["bt_base"].notna() & out["bt_fs"].notna()
        out["bl"], out["fl"] = rec_b.where(have_rec), rec_f.where(have_rec)
        out.loc[from_chance, "bl"] = out.loc[from_chance, "bt_base"] > (chance + margin)[from_chance]
        out.loc[from_chance, "fl"] = out.loc[from_chance, "bt_fs"] > (chance + margin)[from_chance]
        out["bt_chance"], out["bt_margin"] = chance, margin
    out["bt_known"] = out["bl"].notna() & out["fl"].notna() & out["bt_base"].notna() & out["bt_fs"].notna()
    return out


def _breakthrough(data: pd.DataFrame, flags: pd.DataFrame, keys: list[str],
                  options: ReportOptions) -> pd.DataFrame | None:
    if not flags["bt_known"].any():
        return None
    d = pd.concat([data[keys], flags], axis=1)
    # A configuration is split only when every seed of it says whether it learned.
    complete = d.groupby(keys, sort=False, dropna=False)["bt_known"].transform("all")
    d = d[complete].copy()
    if d.empty:
        return None
    d["bl"], d["fl"] = d["bl"].astype(bool), d["fl"].astype(bool)
    has_chance = d.groupby(keys, sort=False, dropna=False)["bt_chance"].transform(
        lambda s: s.notna().all())
    parts = []
    for with_chance, part in d.groupby(has_chance, sort=False):
        parts.append(bimodal.summarize_breakthrough(
            part, keys, "bt_base", "bt_fs",
            chance="bt_chance" if with_chance else None,
            margin="bt_margin" if with_chance else 0.0,
            base_learned_col="bl", fs_learned_col="fl", level=options.level,
            n_resamples=options.n_resamples))
    bt = pd.concat(parts, ignore_index=True)
    bt = bt.rename(columns={c: f"bt_{c}" for c in bt.columns if c not in keys})
    metric = d.groupby(keys, sort=False, dropna=False)["bt_metric"].first().reset_index()
    return bt.merge(metric, on=keys, how="left")


def _family_adjust(summary: pd.DataFrame, higher_is_better: bool = True) -> list[dict]:
    """Holm / BH within each (stage, task) family and the winner's curse on its top configuration."""
    for col in ("sign_p", "wilcoxon_p"):
        summary[f"{col}_holm"] = None
        summary[f"{col}_bh"] = None
    summary["winners_curse"] = False
    summary["family_size"] = 0
    families = []
    fam_cols = ["stage", "task"] if "task" in summary.columns else ["stage"]
    for fam_key, fam in summary.groupby(fam_cols, sort=False):
        idx = fam.index
        summary.loc[idx, "family_size"] = len(idx)
        for col in ("sign_p", "wilcoxon_p"):
            p = fam[col].to_numpy(dtype=object)
            summary.loc[idx, f"{col}_holm"] = _objects(multiplicity.holm(p))
            summary.loc[idx, f"{col}_bh"] = _objects(multiplicity.benjamini_hochberg(p))
        # Configurations with a spread are ranked; a one-seed search (the best of K on seed 0, the
        # plainest winner's curse) is ranked on its single seeds.
        ranked = fam[fam["n"] >= 2] if (fam["n"] >= 2).any() else fam[fam["n"] >= 1]
        if len(ranked) == 0:
            continue
        stage = fam_key[0] if isinstance(fam_key, tuple) else fam_key
        score = "mean" if higher_is_better else "neg_mean"
        if score == "neg_mean":
            ranked = ranked.assign(neg_mean=-pd.to_numeric(ranked["mean"]))
        # Only a gain is a claim to confirm: a best that is no improvement raises no flag.
        claims = pd.to_numeric(ranked[score]).max() > 0
        same_seeds = stage != "confirmation" and claims and _seeds_overlap(ranked)
        wc = multiplicity.winners_curse(ranked, selected_on_same_seeds=same_seeds, score_col=score)
        if wc["flag"]:
            summary.loc[wc["top"], "winners_curse"] = True
        families.append({
            "stage": stage, "task": fam_key[1] if isinstance(fam_key, tuple) and len(fam_key) > 1
            else None, "n_configs": int(len(idx)), "n_compared": wc["n_compared"],
            "top": str(summary.loc[wc["top"], "config"]) if "config" in summary.columns
            else str(wc["top"]), "flag": wc["flag"], "inflation_se": wc["inflation_se"],
            "message": wc["message"],
        })
    return families


def _seeds_overlap(ranked: pd.DataFrame) -> bool:
    """Whether the configurations of a family were measured on shared seeds (so picking the best
    of them and quoting its mean reuses the seeds that picked it)."""
    seeds = [set(s) for s in ranked["seeds"]]
    return len(seeds) > 1 and sum(map(len, seeds)) > len(set().union(*seeds))


def _objects(arr) -> list:
    return [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(arr, dtype=float)]


def _confirmation_reuse(summary: pd.DataFrame, data: pd.DataFrame) -> list[str]:
    """Confirmation rows whose seeds were already used to select the same configuration."""
    out = []
    if "config_hash" not in data.columns:
        return out
    sel = data[data["stage"] == "selection"].groupby(["task", "config_hash"])["seed"].agg(set)
    conf = data[data["stage"] == "confirmation"].groupby(["task", "config_hash"])["seed"].agg(set)
    for key, seeds in conf.items():
        if key in sel.index and seeds & sel[key]:
            label = data[(data["task"] == key[0]) & (data["config_hash"] == key[1])]["config"].iloc[0]
            out.append(f"{label} ({key[0]}): confirmation reuses selection seed(s) "
                       f"{sorted(seeds & sel[key])}: not a fresh-seed confirmation")
    return out


def build(loaded: Loaded, options: ReportOptions | None = None) -> Report:
    """Statistics of every configuration in ``loaded``; raises AnalysisInputError if none usable."""
    options = options or ReportOptions()
    df = loaded.df
    dcol = f"d_{options.metric}"
    ok = df[df["status"] == "ok"]
    excluded = df[df["status"] != "ok"].copy()
    data = ok[ok[dcol].notna()].copy()
    missing_metric = len(ok) - len(data)
    if data.empty:
        what = (f"no paired seed has a {METRICS[options.metric]} delta ({dcol})" if len(ok)
                else "no usable paired seed in the input")
        raise AnalysisInputError(what)
    keys, shown = _group_cols(options, data)
    flags = _learned_flags(data, options)
    data["base_learned_eff"] = flags["bl"].where(flags["bt_known"], None).astype(object)
    data["fs_learned_eff"] = flags["fl"].where(flags["bt_known"], None).astype(object)

    summary = stats.summarize(data, dcol, keys, level=options.level, method=options.interval,
                              effect=options.effect, n_resamples=options.n_resamples)
    grouped = data.groupby(keys, sort=False, dropna=False)
    labels = grouped.agg(**{c: (c, "first") for c in shown if c not in keys},
                         seeds=("seed", lambda s: sorted(int(x) for x in s)),
                         sources=("source", lambda s: sorted(set(s))),
                         pruned=("pruned", lambda s: bool(s.eq(True).any()))).reset_index()
    summary = summary.merge(labels, on=keys, how="left")
    if "config" in summary.columns and "config_hash" in summary.columns:
        # Two configurations that print alike (same label, different knobs) get their hash shown.
        same = summary.groupby(["stage", *[c for c in shown if c not in ("stage", "config")],
                                "config"], dropna=False)["config_hash"].transform("nunique") > 1
        summary.loc[same, "config"] = [f"{c} #{h[:6]}" for c, h in
                                       zip(summary.loc[same, "config"], summary.loc[same, "config_hash"])]
    if options.metric == "loss":
        # Lower loss is better: P(improve) is the share of seeds where FS lowered the loss.
        summary["p_improve"] = [None if v is None else 1.0 - v for v in summary["p_improve"]]

    bt = _breakthrough(data, flags, keys, options)
    if bt is not None:
        summary = summary.merge(bt, on=keys, how="left")
    for c in BT_COLUMNS:
        if f"bt_{c}" not in summary.columns:
            summary[f"bt_{c}"] = None
    summary = summary.astype({f"bt_{c}": object for c in BT_COLUMNS})
    summary[[f"bt_{c}" for c in BT_COLUMNS]] = summary[[f"bt_{c}" for c in BT_COLUMNS]].where(
        summary[[f"bt_{c}" for c in BT_COLUMNS]].notna(), None)

    summary = _sort(summary, options)
    families = _family_adjust(summary, higher_is_better=options.metric != "loss")

    warnings = []
    # Single-seed configurations come in dozens from a one-seed search: one line per stage and task.
    single = summary[summary["n"] < 2]
    fam_cols = ["stage", "task"] if "task" in summary.columns else ["stage"]
    for key, fam in single.groupby(fam_cols, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        labels = ", ".join(str(c) for c in fam["config"]) if "config" in fam.columns else ""
        warnings.append(f"{' / '.join(map(str, key[1:])) or 'all'} [{key[0]}]: {len(fam)} "
                        f"configuration(s) with 1 seed (no spread, interval or test)"
                        + (f": {labels}" if labels else ""))
    for _, r in summary.iterrows():
        name = _config_name(r, shown)
        if r["n"] >= 2 and r["n_zero"] == r["n"]:
            warnings.append(f"{name}: all {r['n']} deltas are exactly 0: FS changed nothing "
                            "(a no-op configuration?)")
        if _true(r.get("bt_bimodal")):
            warnings.append(f"{name}: {bimodal.BIMODAL_ADVICE}")
    warnings.extend(_confirmation_reuse(summary, data))
    if missing_metric:
        warnings.append(f"{missing_metric} paired seed(s) have no {METRICS[options.metric]}: "
                        f"left out of the --metric {options.metric} statistics")
    for _, r in excluded.iterrows():
        why = r.get("failure") or ""
        warnings.append(f"{r['source']}:{r['line']}: {r['config']} seed {r['seed']} is "
                        f"{r['status']}{': ' + str(why)[:100] if why else ''}; not in the statistics")

    return Report(options=options, summary=summary.reset_index(drop=True), data=data,
                  excluded=excluded, families=families, problems=list(loaded.problems),
                  skipped=list(loaded.skipped), notes=list(loaded.notes), warnings=warnings,
                  importance=loaded.importance)


def _sort(summary: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Best first by the interval's bound on the side that matters (lower bound; upper for loss);
    configurations without an interval follow, by mean."""
    sign = 1.0 if options.metric != "loss" else -1.0
    bound = summary["ci_lo"] if sign > 0 else summary["ci_hi"]
    has = bound.notna()
    key_bound = pd.to_numeric(bound, errors="coerce").fillna(0.0) * sign
    key_mean = (pd.to_numeric(summary["mean"], errors="coerce") * sign).fillna(-np.inf)
    stage_rank = summary["stage"].map(STAGE_ORDER).fillna(9)
    order = np.lexsort((-key_mean.to_numpy(), -key_bound.to_numpy(), ~has.to_numpy(),
                        stage_rank.to_numpy()))
    return summary.iloc[order].reset_index(drop=True)


def _true(v: Any) -> bool:
    """A flag cell (None, bool or numpy bool) that is set."""
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and bool(v)


def _config_name(r: pd.Series, shown: list[str]) -> str:
    parts = [str(r[c]) for c in shown if c != "stage" and c in r]
    return f"{' / '.join(parts) or 'all'} [{r['stage']}]"


# --------------------------------------------------------------------------------------------------
# formatting helpers


def fmt(v: Any, spec: str = "+.4f") -> str:
    """A number for people: None/NaN print as a dash."""
    if v is None or isinstance(v, str):
        return DASH if v is None else v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return DASH
    return format(f, spec)


def _p(v: Any) -> str:
    if v is None:
        return DASH
    f = float(v)
    if not math.isfinite(f):
        return DASH
    return f"{f:.3f}" if f >= 0.001 else f"{f:.1e}"


def _interval(lo: Any, hi: Any, spec: str = "+.4f") -> str:
    if lo is None or hi is None:
        return DASH
    return f"[{fmt(lo, spec)}, {fmt(hi, spec)}]"


def _breakthrough_cell(r: pd.Series) -> str:
    """Discordant pairs (only FS / only no_fs learned), McNemar p, rate change and its interval."""
    if r.get("bt_both") is None:
        return DASH
    return (f"{int(r['bt_only_fs'])}/{int(r['bt_only_base'])} p={_p(r['bt_mcnemar_p'])} "
            f"{fmt(r['bt_rate_change'], '+.2f')} {_interval(r['bt_rate_lo'], r['bt_rate_hi'], '+.2f')}")


def _quality_cell(r: pd.Series) -> str:
    """Delta among pairs where both runs learned: mean [interval] (n both)."""
    if r.get("bt_both") is None:
        return DASH
    if r.get("bt_quality_mean") is None:
        return f"{DASH} (n={int(r['bt_both'])})"
    return (f"d_{r['bt_metric']} {fmt(r['bt_quality_mean'])} "
            f"{_interval(r['bt_quality_lo'], r['bt_quality_hi'])} (n={int(r['bt_both'])})")


def _flags(r: pd.Series) -> str:
    f = []
    if r.get("winners_curse"):
        f.append("WC")
    if _true(r.get("bt_bimodal")):
        f.append("bimodal")
    if r["n"] < 2:
        f.append("n<2")
    elif r["n_zero"] == r["n"]:
        f.append("all 0")
    if r.get("pruned"):
        f.append("pruned")
    return ",".join(f)


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and printed cells of the summary (shared by the terminal, markdown and HTML tables)."""
    _, shown = _group_cols(report.options, report.summary)
    lvl = int(round(report.options.level * 100))
    m = report.options.metric
    header = [*shown, "n", f"mean d_{m}", "std", f"{lvl}% CI ({report.options.interval})", "+/0/-",
              "sign p", "Wilcoxon p", "Holm", "BH", "P(improve)", "seeds@80%"]
    split = report.summary["bt_both"].notna().any()
    if split:
        header += ["breakthrough FS/base, p, Δrate [CI]", "given both learned"]
    header.append("flags")
    rows = []
    for _, r in report.summary.iterrows():
        rows.append([
            *(str(r[c]) for c in shown), str(r["n"]), fmt(r["mean"]), fmt(r["std"], ".4f"),
            _interval(r["ci_lo"], r["ci_hi"]), f"{r['n_pos']}/{r['n_zero']}/{r['n_neg']}",
            _p(r["sign_p"]), _p(r["wilcoxon_p"]), _p(r["wilcoxon_p_holm"]), _p(r["wilcoxon_p_bh"]),
            fmt(r["p_improve"], ".2f"), fmt(r["seeds_needed"], ".0f"),
            *([_breakthrough_cell(r), _quality_cell(r)] if split else []), _flags(r),
        ])
    return header, rows


def _truncate(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "…"


def _text_lines(report: Report) -> list[str]:
    """The findings under a table: method, multiplicity, winner's curse, warnings, problems."""
    o = report.options
    lines = [
        f"metric: d_{o.metric} = {METRICS[o.metric]}(prompt_fs) - {METRICS[o.metric]}(no_fs)"
        + (" (lower is better)" if o.metric == "loss" else ""),
        f"interval: {int(round(o.level * 100))}% {_METHOD_TEXT[o.interval]}; p-values: exact sign "
        "test (ties dropped), Wilcoxon signed-rank; Holm and BH adjusted within each stage and task",
        "seeds@80%: paired seeds for 80% power at alpha 0.05 to detect "
        + (f"an effect of {o.effect}" if o.effect is not None else "the observed mean")
        + " at the observed spread",
    ]
    if report.summary["bt_both"].notna().any():
        lines.append("breakthrough: pairs where only FS / only no_fs learned, McNemar exact p, "
                     "change in breakthrough rate [Newcombe interval]; 'given both learned': the "
                     "delta among pairs where both runs learned (quality given breakthrough)")
    for fam in report.families:
        if fam["flag"]:
            lines.append(f"winner's curse [{fam['stage']}{' / ' + fam['task'] if fam['task'] else ''}]: "
                         f"{fam['top']} is the top of {fam['n_compared']} configurations compared "
                         f"on the same seeds: its mean is biased upward (~{fam['inflation_se']:.1f} "
                         f"standard errors by luck alone); {multiplicity.CONFIRM_MESSAGE}")
    return lines


_METHOD_TEXT = {
    "t": "Student t interval of the mean (default: near-nominal coverage at n = 3-20 in the tests)",
    "bca": "BCa bootstrap interval of the mean (undercovers at small n; prefer n >= 10)",
    "percentile": "percentile bootstrap interval (undercovers badly at n = 3-5)",
}


def _lists(report: Report) -> list[tuple[str, list[str]]]:
    out = [("Warnings", report.warnings), ("Problems (input dropped)", report.problems),
           ("Skipped files", report.skipped), ("Notes", report.notes)]
    return [(t, items) for t, items in out if items]


def _importance_rows(report: Report) -> list[tuple[str, str, str]]:
    imp = report.importance or {}
    mean = imp.get("mean_delta") or {}
    spread = imp.get("spread") or {}
    knobs = sorted(set(mean) | set(spread), key=lambda k: -(_num(mean.get(k)) or 0))
    return [(k, fmt(mean.get(k), ".3f"), fmt(spread.get(k), ".3f")) for k in knobs]


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------------------------------
# renderers


def render_table(report: Report, width: int = 44) -> str:
    header, rows = table_rows(report)
    cells = [header] + [[_truncate(c, width) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    sep = "  "
    out = [sep.join(h.ljust(w) for h, w in zip(header, widths)),
           sep.join("-" * w for w in widths)]
    for row in cells[1:]:
        out.append(sep.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    out.append("")
    out.extend(_text_lines(report))
    if report.importance:
        out.append("search importance (knob: mean delta, spread): " + "; ".join(
            f"{k}: {a}, {b}" for k, a, b in _importance_rows(report)))
    for title, items in _lists(report):
        out.append("")
        out.append(f"{title} ({len(items)}):")
        out.extend(f"  {x}" for x in items)
    return "\n".join(out) + "\n"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    header, rows = table_rows(report)
    out = ["# FS stability report", ""]
    out.extend(f"- {_md_cell(x)}" for x in _text_lines(report))
    out.append("")
    out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
    out.append("|" + "---|" * len(header))
    for row in rows:
        out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if report.importance:
        out += ["", "## Search importance", "", "| knob | mean delta | spread |", "|---|---|---|"]
        out += [f"| {_md_cell(k)} | {a} | {b} |" for k, a, b in _importance_rows(report)]
    for title, items in _lists(report):
        out += ["", f"## {title}", ""]
        out += [f"- {_md_cell(x)}" for x in items]
    return "\n".join(out) + "\n"


def render_html(report: Report) -> str:
    """One self-contained page: tables and the plots as base64 PNG data URIs (no server, no files)."""
    from . import plots

    header, rows = table_rows(report)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<title>FS stability report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:left;white-space:nowrap}th{background:#f0f0f0}tr.wc td{background:#fff3cd}"
        "img{max-width:100%;border:1px solid #eee;margin:8px 0}</style></head><body>",
        "<h1>FS stability report</h1>", "<ul>",
        *(f"<li>{esc(x)}</li>" for x in _text_lines(report)), "</ul>",
        "<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>",
    ]
    for (_, r), row in zip(report.summary.iterrows(), rows):
        cls = " class='wc'" if r.get("winners_curse") else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    for title, png in plots.all_plots(report):
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{b64}'>")
    if report.importance:
        parts.append("<h2>Search importance</h2><table><tr><th>knob</th><th>mean delta</th>"
                     "<th>spread</th></tr>")
        parts += [f"<tr><td>{esc(k)}</td><td>{a}</td><td>{b}</td></tr>"
                  for k, a, b in _importance_rows(report)]
        parts.append("</table>")
    for title, items in _lists(report):
        parts.append(f"<h2>{esc(title)} ({len(items)})</h2><ul>")
        parts += [f"<li>{esc(x)}</li>" for x in items]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _export_frame(report: Report) -> pd.DataFrame:
    df = report.summary.drop(columns=["config_hash"], errors="ignore").copy()
    if "config_hash" in report.summary.columns:
        df.insert(0, "config_hash", report.summary["config_hash"])
    df["seeds"] = [" ".join(map(str, s)) for s in df["seeds"]]
    df["sources"] = [" ".join(s) for s in df["sources"]]
    df["metric"] = f"d_{report.options.metric}"
    return df


def render_csv(report: Report) -> str:
    df = _export_frame(report)
    buf = io.StringIO()
    df.to_csv(buf, index=False, na_rep="")  # floats in full (repr) precision
    return buf.getvalue()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if v is None or isinstance(v, (str, int)):
        return v
    if v is pd.NA or v is pd.NaT:
        return None
    return str(v)


def render_json(report: Report) -> str:
    summary = _export_frame(report)
    doc = {
        "schema": "fsray.report/1",
        "options": _jsonable(vars(report.options)),
        "summary": [_jsonable(r) for r in summary.to_dict(orient="records")],
        "seeds": [_jsonable(r) for r in report.data.to_dict(orient="records")],
        "families": _jsonable(report.families),
        "warnings": report.warnings, "problems": report.problems, "skipped": report.skipped,
        "notes": report.notes, "importance": _jsonable(report.importance),
        "exit_code": report.exit_code,
    }
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


RENDERERS = {"table": render_table, "md": render_markdown, "html": render_html, "csv": render_csv,
             "json": render_json}


def render(report: Report, fmt_name: str = "table") -> str:
    if fmt_name not in RENDERERS:
        raise AnalysisInputError(f"--format must be one of {FORMATS}, got {fmt_name!r}")
    return RENDERERS[fmt_name](report)
