"""Renderers of the stability report: a terminal table, markdown, self-contained HTML, CSV, JSON.

Each takes a built ``summary.Report`` (the statistics table) and prints it; nothing is computed here
but text. The verdict column, the family statements and the plan of seeds to add to decide every
undecided configuration appear in every format (CSV and JSON carry them as columns / fields).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import multiplicity, plots
from .errors import AnalysisInputError
from .summary import METRICS, Report, _true

FORMATS = ("table", "md", "html", "csv", "json")
DASH = "—"


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
    if _true(r.get("noop")) and "all 0" not in f:
        f.append("no-op")
    return ",".join(f)


@dataclass
class Column:
    """One column of the summary table: ``key`` (stable id), printed header and cells, and the
    short ``name`` said when the terminal table leaves it out."""

    key: str
    header: str
    cells: list[str]
    name: str


def table_columns(report: Report) -> list[Column]:
    """Every column of the summary table, in printed order (terminal, markdown and HTML)."""
    shown = report.shown
    lvl = int(round(report.options.level * 100))
    m = report.options.metric
    s = report.summary
    rows = [r for _, r in s.iterrows()]
    ci = f"{lvl}% CI ({report.options.interval})"
    cols = [Column(c, c, [str(r[c]) for r in rows], c) for c in shown]
    cols += [
        Column("n", "n", [str(r["n"]) for r in rows], "n"),
        Column("mean", f"mean d_{m}", [fmt(r["mean"]) for r in rows], f"mean d_{m}"),
        Column("std", "std", [fmt(r["std"], ".4f") for r in rows], "std"),
        Column("ci", ci, [_interval(r["ci_lo"], r["ci_hi"]) for r in rows], ci),
        Column("signs", "+/0/-", [f"{r['n_pos']}/{r['n_zero']}/{r['n_neg']}" for r in rows],
               "+/0/-"),
        Column("sign_p", "sign p", [_p(r["sign_p"]) for r in rows], "sign p"),
        Column("wilcoxon_p", "Wilcoxon p", [_p(r["wilcoxon_p"]) for r in rows], "Wilcoxon p"),
        Column("holm", "Holm", [_p(r["wilcoxon_p_holm"]) for r in rows], "Holm"),
        Column("bh", "BH", [_p(r["wilcoxon_p_bh"]) for r in rows], "BH"),
        Column("p_improve", "P(improve)", [fmt(r["p_improve"], ".2f") for r in rows],
               "P(improve)"),
        Column("seeds80", "seeds@80%", [fmt(r["seeds_needed"], ".0f") for r in rows],
               "seeds@80%"),
        Column("verdict", f"verdict (δ={report.options.delta:g})",
               [str(r["verdict_label"]) for r in rows], "verdict"),
    ]
    if s["bt_both"].notna().any():
        cols += [Column("breakthrough", "breakthrough FS/base, p, Δrate [CI]",
                        [_breakthrough_cell(r) for r in rows], "breakthrough"),
                 Column("given_both", "given both learned", [_quality_cell(r) for r in rows],
                        "given both learned")]
    cols.append(Column("flags", "flags", [_flags(r) for r in rows], "flags"))
    return cols


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and printed cells of the summary (shared by the terminal, markdown and HTML tables)."""
    cols = table_columns(report)
    return [c.header for c in cols], [list(r) for r in zip(*(c.cells for c in cols))]


def _truncate(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "…"


def _text_lines(report: Report) -> list[str]:
    """The findings under a table: method, multiplicity, verdicts, winner's curse."""
    o = report.options
    lvl = int(round(o.level * 100))
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
    lines += issue20_lines(report)
    if o.design == "sprt":
        lines.append(
            f"verdict: a sequential probability ratio test per configuration: 'helps' / 'hurts' when "
            f"the seeds favour an effect of +{o.delta:g} / -{o.delta:g} over none (≥{o.delta:g}: and "
            f"{2 * o.delta:g} over {o.delta:g}); 'no effect ≥{o.delta:g}' when they favour none over "
            f"both; over every look of up to {o.horizon} seeds, 'helps' or 'hurts' is said wrongly at "
            f"most {(100 - lvl) / 2:g}% of the time each when FS does nothing, 'no effect' at most "
            f"{100 - lvl:g}% when the effect is ±{o.delta:g}; 'undecided (+k)': k more seeds would "
            "decide at the current estimate ('!': beyond the horizon); a 'helps' rests on fresh seeds (confirmation) or is "
            "Bonferroni-corrected over the configurations a search stage chose from (selection)")
    else:
        lines.append(
            f"verdict: helps / hurts when the repeated {lvl}% interval excludes 0 (≥{o.delta:g}: it also "
            f"excludes ±{o.delta:g}); 'no effect ≥{o.delta:g}': the repeated {100 - 2 * (100 - lvl)}% "
            f"interval lies inside (-{o.delta:g}, +{o.delta:g}); error rates hold over every look of a "
            f"sequential design of up to {o.horizon} seeds per configuration (alpha spending); "
            "'undecided (+k)': k more seeds would decide at the current estimate ('!': beyond the "
            "horizon); a 'helps' rests on fresh seeds (confirmation) or is Bonferroni-corrected over "
            "the configurations a search stage chose from (selection)")
    for fam in report.families:
        if fam.get("statement"):
            lines.append("family: " + fam["statement"])
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


def issue20_lines(report: Report) -> list[str]:
    """Borrowed variance, stopping-aware estimates and the variance split, in plain words."""
    sm, out = report.summary, []
    if "variance" in sm.columns:
        b = sm[sm["variance"] == "borrowed"]
        if len(b):
            df = [float(x) for x in b["prior_df"] if x is not None]
            out.append(f"borrowed variance: {len(b)} of {len(sm)} configuration(s) share a variance prior "
                       f"with the rest of their stage and task (+{min(df):.0f} to +{max(df):.0f} degrees of "
                       "freedom): their interval and t p-value are moderated t; each one's own interval "
                       "is kept (own_ci_lo / own_ci_hi in csv / json)")
        else:
            out.append("borrowed variance: none (a family needs 4 or more configurations with a spread)")
    if "estimate" in sm.columns:
        for _, r in sm[sm["estimate"].notna()].iterrows():
            name = " / ".join(str(r[c]) for c in report.shown if c != "stage") or "all"
            out.append(f"stopped: {name} [{r['stage']}]: mean {fmt(r['mean'], '+.4f')}; allowing for "
                       f"when it stopped {fmt(r['estimate'], '+.4f')} [{fmt(r['est_lo'], '+.4f')}, "
                       f"{fmt(r['est_hi'], '+.4f')}]")
    if "split_advice" in sm.columns:
        rows = sm[sm["split_advice"].notna()]
        for _, r in rows.head(12).iterrows():
            name = " / ".join(str(r[c]) for c in report.shown if c != "stage") or "all"
            out.append(f"variance split: {name} [{r['stage']}]: {r['split_advice']}")
        if len(rows) > 12:
            out.append(f"variance split: {len(rows) - 12} more configuration(s) in csv / json (split_advice)")
    return out


def plan_lines(report: Report) -> list[str]:
    """Seeds to add per undecided configuration to decide, at its current mean and spread."""
    out = []
    und = report.summary[report.summary["verdict"] == "undecided"]
    for _, r in und.iterrows():
        name = " / ".join(str(r[c]) for c in report.shown if c != "stage") or "all"
        k = r["seeds_to_decide"]
        if k is None or (isinstance(k, float) and math.isnan(k)):
            out.append(f"{name} [{r['stage']}]: n={r['n']}: {r['verdict_note'] or 'no projection'}")
            continue
        total = int(r["n"]) + int(k)
        way = (f" would say {r['would_decide']}" if isinstance(r["would_decide"], str)
               else " for a first look" if int(r["n"]) < 3 else "")
        beyond = (f" (beyond the {report.options.horizon}-seed horizon: a larger design)"
                  if total > report.options.horizon else "")
        out.append(f"{name} [{r['stage']}]: n={r['n']}: add {int(k)} seed(s) ({total} in all){way}"
                   f"{beyond}")
    return out


def _lists(report: Report) -> list[tuple[str, list[str]]]:
    plan = plan_lines(report)
    title = (f"Seeds to add per configuration to decide (δ={report.options.delta:g}, at the "
             "current mean and spread)")
    out = [(title, plan), ("Warnings", report.warnings), ("Problems (input dropped)", report.problems),
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


# The terminal table at the terminal's width: the configuration's label, then the columns in this
# order of importance while they fit; the stage and task become a title line (one value) or group
# headers. Flags come first among the rest because they are short and change how a row reads (WC:
# the mean is biased by selection; bimodal: read the breakthrough columns, not the mean).
CORE_COLUMNS = ("n", "mean", "ci", "verdict", "signs")
MORE_COLUMNS = ("flags", "wilcoxon_p", "holm", "bh", "sign_p", "p_improve", "seeds80", "std",
                "breakthrough", "given_both")
GROUP_COLUMNS = ("task", "stage")   # said once above the table or as group headers
LABEL_MIN, LABEL_TARGET = 12, 28    # label width kept before / grown to before the optional columns
SEP = "  "
CELL_MAX = 44                       # --wide: longest cell printed (as before)


def terminal_width() -> int | None:
    """Columns of the terminal the table goes to: $COLUMNS when exported, else stdout's terminal,
    else stderr's (``fsray report RUN | less`` / ``| tee log``); None when there is none (a file,
    CI, a captured run): then the table prints every column, as with ``--wide``."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    for stream in (sys.stdout, sys.__stdout__, sys.stderr, sys.__stderr__):
        try:
            if stream is not None and stream.isatty():
                return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return None


def _truncate_label(s: str, width: int, middle: bool = False) -> str:
    """A label cut to ``width`` with "…", keeping the " #hash6" that tells apart look-alikes;
    ``middle``: its start and end (when cutting the end would print two labels alike)."""
    if len(s) <= width:
        return s
    if middle and width >= 5:
        head = (width - 1) // 2
        return s[:head] + "…" + s[len(s) - (width - 1 - head):]
    m = re.search(r" #[0-9a-f]{6}$", s)
    if m and width >= len(m.group()) + 4:
        return s[: width - len(m.group()) - 1] + "…" + m.group()
    return _truncate(s, max(width, 1))


def render_table(report: Report, width: int | None = None, wide: bool = False) -> str:
    """The summary table and the findings under it. ``wide``: every column, as in md/html/csv/json.
    Otherwise the table fits ``width`` columns (default: ``terminal_width()``; with no terminal,
    every column): the configuration label (cut with "…"), n, mean, CI, verdict, +/0/-, then flags,
    p-values, Holm/BH, P(improve), seeds@80%, std and the breakthrough columns while they fit; one
    line under the table names the columns left out."""
    if width is None and not wide:
        width = terminal_width()
    if wide or width is None:
        out = _wide_table(report)
    else:
        out = _fitted_table(report, max(int(width), 20))
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


def _wide_table(report: Report) -> list[str]:
    header, rows = table_rows(report)
    cells = [header] + [[_truncate(c, CELL_MAX) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = [SEP.join(h.ljust(w) for h, w in zip(header, widths)),
           SEP.join("-" * w for w in widths)]
    for row in cells[1:]:
        out.append(SEP.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return out


def _common_knobs(labels: list[str]) -> list[str]:
    """Words (``knob=value``) found in every configuration's label, when taking them out leaves
    every label something to print."""
    if len(labels) < 2:
        return []
    words = [lab.split(" ") for lab in labels]
    common = [w for w in words[0] if "=" in w and all(w in ws for ws in words[1:])]
    if not common or any(not [w for w in ws if w not in common] for ws in words):
        return []
    return common


def _fit(cols: list[Column], labels: list[str], width: int) -> tuple[dict[str, int], list[str]]:
    """Widths of the label columns and the other columns that fit ``width``: the labels at
    LABEL_MIN, the CORE_COLUMNS, the labels grown to LABEL_TARGET, the MORE_COLUMNS while they fit,
    then what is left to the labels."""
    natural = {c.key: max([len(c.header), *map(len, c.cells)]) for c in cols}
    lw = {k: min(natural[k], LABEL_MIN) for k in labels}
    room = width - sum(lw.values()) - len(SEP) * (len(labels) - 1)
    chosen: list[str] = []
    for stage in (CORE_COLUMNS, "grow", MORE_COLUMNS, "grow all"):
        if isinstance(stage, str):
            for k in labels:
                limit = natural[k] if stage == "grow all" else min(natural[k], LABEL_TARGET)
                more = min(max(limit - lw[k], 0), max(room, 0))
                lw[k] += more
                room -= more
            continue
        for k in stage:
            if k in natural and room >= natural[k] + len(SEP):
                chosen.append(k)
                room -= natural[k] + len(SEP)
    widths = {**lw, **{k: natural[k] for k in chosen}}
    return widths, [k for k in natural if k in widths]


def _fitted_table(report: Report, width: int) -> list[str]:
    cols = table_columns(report)
    bykey = {c.key: c for c in cols}
    shown = [c for c in report.shown if c in bykey]
    primary = "config" if "config" in shown else shown[-1] if shown else None
    group = [c for c in GROUP_COLUMNS if c in shown and c != primary]
    labels = [k for k in shown if k not in group]
    nrows = len(report.summary)
    # one value: said once above the table; several: rows gathered under a header per value
    title = [g for g in group if len(set(bykey[g].cells)) <= 1]
    heads = [g for g in group if g not in title]

    def said(keys, i):
        return ", ".join(f"{k} {bykey[k].cells[i]}" for k in keys)

    widths, printed = _fit(cols, labels, width)
    above = [said(title, 0)] if title and nrows else []
    if primary == "config" and widths["config"] < max(map(len, bykey["config"].cells), default=0):
        # labels cut short: the knobs every configuration shares are said once above the table
        common = _common_knobs(bykey["config"].cells)
        if common:
            bykey["config"].cells = [" ".join(w for w in x.split(" ") if w not in common)
                                     for x in bykey["config"].cells]
            above.append("every configuration: " + " ".join(common))
            widths, printed = _fit(cols, labels, width)

    # cut at the end, unless that prints two different labels alike: then keep both ends
    middle = {k: len({_truncate_label(x, widths[k]) for x in bykey[k].cells})
              < len(set(bykey[k].cells)) for k in labels}

    def line(cells):
        return SEP.join(_truncate_label(x, widths[k], middle.get(k, False)).ljust(widths[k])
                        for x, k in zip(cells, printed)).rstrip()

    out = []
    for text in above:
        out.extend(textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False))
    out.append(line([bykey[k].header for k in printed]))
    out.append(SEP.join("-" * widths[k] for k in printed))
    order: dict[str, list[int]] = {}
    for i in range(nrows):
        order.setdefault(said(heads, i), []).append(i)
    for name, idx in order.items():
        if heads:
            out.append(_truncate(name + ":", width))
        out.extend(line([bykey[k].cells[i] for k in printed]) for i in idx)
    left_out = [c.name for c in cols if c.key not in widths and c.key not in group]
    if left_out:
        note = (f"not shown at {width} columns: {', '.join(left_out)} "
                "(--wide, or --format md/html/csv/json, shows every column)")
        out.extend(textwrap.wrap(note, width, break_on_hyphens=False))
    return [x if len(x) <= width else _truncate(x, width) for x in out]


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
    o = report.options
    for title, png in plots.all_plots(report.summary, report.data, report.keys, metric=o.metric,
                                      level=o.level, interval=o.interval,
                                      max_configs=o.max_plot_configs):
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
    df["looks"] = [" ".join(map(str, s)) for s in df["looks"]]
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
        "plan": plan_lines(report),
        "warnings": report.warnings, "problems": report.problems, "skipped": report.skipped,
        "notes": report.notes, "importance": _jsonable(report.importance),
        "exit_code": report.exit_code,
    }
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


RENDERERS = {"table": render_table, "md": render_markdown, "html": render_html, "csv": render_csv,
             "json": render_json}


def render(report: Report, fmt_name: str = "table", *, width: int | None = None,
           wide: bool = False) -> str:
    """The report in one format. ``width``/``wide`` shape the terminal table only (render_table);
    md, html, csv and json always carry every column."""
    if fmt_name not in RENDERERS:
        raise AnalysisInputError(f"--format must be one of {FORMATS}, got {fmt_name!r}")
    if fmt_name == "table":
        return render_table(report, width=width, wide=wide)
    return RENDERERS[fmt_name](report)
