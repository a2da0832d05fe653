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
from .answer import RunContext, answer, answer_lines
from .answer import number as _num
from .errors import AnalysisInputError
from .summary import IMPORTANCE_MIN_CONFIGS, METRICS, Report, _true

FORMATS = ("table", "md", "html", "csv", "json")
DASH = "—"


# --------------------------------------------------------------------------------------------------
# formatting helpers


def fmt(v: Any, spec: str = "+.4f", dash: str = DASH) -> str:
    """A number for people: None/NaN print as ``dash`` (the search's closing table: "-")."""
    if v is None or isinstance(v, str):
        return dash if v is None else v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return dash
    return format(f, spec)


def signs_text(n_pos: Any, n_zero: Any, n_neg: Any) -> str:
    """The +/0/- cell: seeds on which FS raised, kept and lowered the metric."""
    return f"{n_pos}/{n_zero}/{n_neg}"


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
    cols = [Column("id", "id", [str(r["config_id"]) for r in rows], "id")]
    cols += [Column(c, c, [str(r[c]) for r in rows], c) for c in shown]
    cols += [
        Column("n", "n", [str(r["n"]) for r in rows], "n"),
        Column("mean", f"mean d_{m}", [fmt(r["mean"]) for r in rows], f"mean d_{m}"),
        Column("std", "std", [fmt(r["std"], ".4f") for r in rows], "std"),
        Column("ci", ci, [_interval(r["ci_lo"], r["ci_hi"]) for r in rows], ci),
        Column("signs", "+/0/-", [signs_text(r["n_pos"], r["n_zero"], r["n_neg"]) for r in rows],
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


def truncate(s: str, width: int) -> str:
    """``s`` cut to ``width`` characters, the last one "…" where it is cut."""
    return s if len(s) <= width else s[: width - 1] + "…"


def _text_lines(report: Report) -> list[str]:
    """The legend and the findings under a table (markdown: all of it)."""
    return _legend_lines(report) + _finding_lines(report)


def _legend_lines(report: Report) -> list[str]:
    """How to read the table: metric, interval, p-values, seeds@80%, breakthrough, verdicts
    (the terminal prints them with --explain; the HTML page always)."""
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
            f"verdict: helps / hurts when a sequential probability ratio test per configuration finds "
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
    return lines


def _family_lines(report: Report) -> list[str]:
    return ["family: " + fam["statement"] for fam in report.families if fam.get("statement")]


def _curse_lines(report: Report) -> list[str]:
    lines = []
    for fam in report.families:
        if fam["flag"]:
            lines.append(f"winner's curse [{fam['stage']}{' / ' + fam['task'] if fam['task'] else ''}]: "
                         f"{_named(report, fam)} is the top of {fam['n_compared']} configurations compared "
                         f"on the same seeds: its mean is biased upward (~{fam['inflation_se']:.1f} "
                         f"standard errors by luck alone); {multiplicity.CONFIRM_MESSAGE}")
    return lines


def _named(report: Report, fam: dict) -> str:
    """A family's top configuration by its id (and its label when that is short)."""
    s = report.summary
    if "config" not in s.columns:
        return str(fam["top"])
    rows = s[(s["stage"] == fam["stage"]) & (s["config"] == fam["top"])]
    if fam.get("task") is not None and "task" in s.columns:
        rows = rows[rows["task"] == fam["task"]]
    if rows.empty:
        return str(fam["top"])
    cid, label = rows.iloc[0]["config_id"], str(fam["top"])
    return f"{cid} ({label})" if len(label) <= 40 else str(cid)


def _finding_lines(report: Report) -> list[str]:
    """The family statements and the winner's curse."""
    return _family_lines(report) + _curse_lines(report)


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


def _lists(report: Report, plan: bool = True) -> list[tuple[str, list[str]]]:
    plan = plan_lines(report) if plan else []
    title = (f"Seeds to add per configuration to decide (δ={report.options.delta:g}, at the "
             "current mean and spread)")
    out = [(title, plan), ("Warnings", report.warnings), ("Problems (input dropped)", report.problems),
           ("Skipped files", report.skipped), ("Notes", report.notes)]
    return [(t, items) for t, items in out if items]


def importance_gate(report: Report) -> tuple[bool, str]:
    """(show, why not): knob importance is printed only from IMPORTANCE_MIN_CONFIGS searched
    configurations on (analysis.summary says why); the search records how many it had
    (importance.json ``n_configs``), older runs are counted from the selection."""
    imp = report.importance or {}
    if not (imp.get("mean_delta") or imp.get("spread")):
        return False, ""
    n = imp.get("n_configs")
    if not isinstance(n, int):
        n = int((report.summary["stage"] == "selection").sum())
    if n >= IMPORTANCE_MIN_CONFIGS:
        return True, ""
    return False, (f"knob importance (PED-ANOVA) needs at least {IMPORTANCE_MIN_CONFIGS} searched "
                   f"configurations (5 in its top 10%); this search has {n}: not shown")


def _importance_rows(report: Report) -> list[tuple[str, str, str]]:
    imp = report.importance or {}
    mean = imp.get("mean_delta") or {}
    spread = imp.get("spread") or {}
    knobs = sorted(set(mean) | set(spread), key=lambda k: -(_num(mean.get(k)) or 0))
    return [(k, fmt(mean.get(k), ".3f"), fmt(spread.get(k), ".3f")) for k in knobs]


# --------------------------------------------------------------------------------------------------
# contrasts and across-task summaries (--contrast, --across-tasks): the same tables in every format


def _contrast_table(c) -> tuple[list[str], list[list[str]]]:
    lvl = int(round(c.level * 100))
    header = ["verdict", "configuration", "stage", f"{c.key}: A - B", "n A/B", f"d_{c.metric} A",
              f"d_{c.metric} B", "A - B", f"{lvl}% CI", "p", "TOST p", "pairing", "seeds to decide"]
    rows = []
    for _, r in c.rows.iterrows():
        rows.append([str(r["verdict_label"]), str(r["configuration"]), str(r["stage"]),
                     f"{r['level_a']} - {r['level_b']}", f"{r['n_a']}/{r['n_b']}", fmt(r["mean_a"]),
                     fmt(r["mean_b"]), fmt(r["diff"]), _interval(r["ci_lo"], r["ci_hi"]),
                     _p(r["p"]), _p(r["tost_p"]), f"{r['pairing']}: {r['pairing_why']}",
                     str(r["plan"] or DASH)])
    return header, rows


def _meta_table(report: Report) -> tuple[list[str], list[list[str]]]:
    lvl = int(round(report.options.level * 100))
    header = ["what", "stage", "tasks", f"pooled d_{report.options.metric}", f"{lvl}% CI", "tau^2",
              "I^2", "Q (p)", "new task (prediction)", "method"]
    rows = [[r.what, r.stage, str(r.k), fmt(r.mu), _interval(r.ci_lo, r.ci_hi), fmt(r.tau2, ".3g"),
             f"{100 * r.i2:.0f}%", f"{r.q:.2f} ({_p(r.q_p)})", _interval(r.pi_lo, r.pi_hi),
             r.method] for r in report.meta]
    return header, rows


def _meta_task_lines(report: Report) -> list[str]:
    out = []
    for r in report.meta:
        for _, t in r.tasks.iterrows():
            out.append(f"{r.what} [{r.stage}] · {t['task']}: {fmt(t['effect'])} "
                       f"{_interval(t['ci_lo'], t['ci_hi'])} (n={t['n']}, weight "
                       f"{100 * t['weight']:.0f}%)")
        out.extend(f"{r.what} [{r.stage}]: left out: {x}" for x in r.left_out)
    return out


def _extra_sections(report: Report) -> list[tuple[str, list[str], tuple | None]]:
    """(title, lines, (header, rows) or None) of the contrast and across-task sections."""
    out = []
    for c in report.contrasts:
        out.append((f"Contrast of {c.key} (FS effect at A minus at B)", [*c.notes, *c.lines()],
                    _contrast_table(c)))
    if report.meta:
        method = ", ".join(sorted({r.method for r in report.meta}))
        notes = [f"random-effects pooling over tasks (statsmodels combine_effects, tau^2 by {method}); "
                 "each task: its mean d and s^2/n; 'FS as configured': the mean over the task's "
                 "configurations; the prediction interval is for the effect on a new task"]
        out.append(("Across tasks", [*notes, *(r.line(report.options.metric) for r in report.meta)],
                    _meta_table(report)))
        out.append(("Across tasks: per task", _meta_task_lines(report), None))
    return out


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


# With no terminal (a log, CI, a pipe) the table is fitted to this many columns, as on a terminal
# of that width; --wide prints every column.
NO_TERMINAL_WIDTH = 120


def output_width() -> int:
    """The width the terminal table fits: the terminal's (or $COLUMNS), else NO_TERMINAL_WIDTH."""
    return terminal_width() or NO_TERMINAL_WIDTH


def _truncate_label(s: str, width: int) -> str:
    """A label cut to ``width`` with "…", keeping the " #hash6" that tells apart look-alikes
    (the row's id tells every row apart; the key under the table gives the whole label)."""
    if len(s) <= width:
        return s
    m = re.search(r" #[0-9a-f]{6}$", s)
    if m and width >= len(m.group()) + 4:
        return s[: width - len(m.group()) - 1] + "…" + m.group()
    return truncate(s, max(width, 1))


def render_table(report: Report, width: int | None = None, wide: bool = False,
                 explain: bool = False, run: RunContext | None = None,
                 with_answer: bool = True) -> str:
    """The summary table, the findings under it, and the answer last. ``wide``: every column, as
    in md/html/csv/json. Otherwise the table fits ``width`` columns (default: the terminal's; with
    no terminal, NO_TERMINAL_WIDTH): the id, the configuration label (the knobs every row shares
    said once above; a label cut with "…" is given whole in a key under the table), n, mean, CI,
    verdict, +/0/-, then flags, p-values, Holm/BH, P(improve), seeds@80%, std and the
    breakthrough columns while they fit; one line under the table names the columns left out.
    ``explain``: the legend, the family statements and the seeds-to-add plan too (the HTML page
    always has them). ``with_answer``: end with ``analysis.answer.answer_lines`` (``run``: the
    search run directory it names in its command)."""
    if width is None and not wide:
        width = output_width()
    fit = None if wide else max(int(width), 20)
    out = _wide_table(report) if fit is None else _fitted_table(report, fit)
    out.append("")

    def put(lines, indent=""):
        for x in lines:
            out.extend(wrap_line(indent + x, fit))

    if explain:
        put(_legend_lines(report) + _family_lines(report))
    put(_curse_lines(report))
    show, why = importance_gate(report)
    if show:
        put(["search importance (knob: mean delta, spread): " + "; ".join(
            f"{k}: {a}, {b}" for k, a, b in _importance_rows(report))])
    elif why:
        put([why])
    for title, items, _ in _extra_sections(report):
        out.append("")
        out.append(f"{title}:")
        put(items, "  ")
    for title, items in _lists(report, plan=explain):
        out.append("")
        out.append(f"{title} ({len(items)}):")
        put(items, "  ")
    if not explain:
        out.append("")
        put(["legend, family statements and the seeds each configuration needs: --explain "
             "(and the HTML report)"])
    if with_answer:
        out.append("")
        out.extend(answer_lines(report, run, fit))
    return "\n".join(out) + "\n"


def wrap_line(line: str, width: int | None, indent: str | None = None) -> list[str]:
    """``line`` wrapped at ``width`` (None: as it is), its continuation lines indented by
    ``indent`` (default: two more spaces than the line's own)."""
    if width is None or len(line) <= width:
        return [line]
    if indent is None:
        indent = " " * (len(line) - len(line.lstrip()) + 2)
    return textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)


def _wide_table(report: Report) -> list[str]:
    header, rows = table_rows(report)
    cells = [header] + [[truncate(c, CELL_MAX) for c in row] for row in rows]
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


def _fit(cols: list[Column], labels: list[str], width: int,
         fixed: tuple[str, ...] = ("id",)) -> tuple[dict[str, int], list[str]]:
    """Widths of the label columns and the other columns that fit ``width``: the ``fixed``
    columns (the id), the labels at LABEL_MIN, the CORE_COLUMNS, the labels grown to
    LABEL_TARGET, the MORE_COLUMNS while they fit, then what is left to the labels."""
    natural = {c.key: max([len(c.header), *map(len, c.cells)]) for c in cols}
    fixed = tuple(k for k in fixed if k in natural)
    lw = {k: min(natural[k], LABEL_MIN) for k in labels}
    room = (width - sum(lw.values()) - len(SEP) * (len(labels) - 1)
            - sum(natural[k] + len(SEP) for k in fixed))
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
    widths = {**{k: natural[k] for k in fixed}, **lw, **{k: natural[k] for k in chosen}}
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

    above = [said(title, 0)] if title and nrows else []
    if primary == "config":
        # the knobs every configuration shares tell no row apart: said once above the table
        common = _common_knobs(bykey["config"].cells)
        if common:
            bykey["config"].cells = [" ".join(w for w in x.split(" ") if w not in common)
                                     for x in bykey["config"].cells]
            above.append("every configuration: " + " ".join(common))
    widths, printed = _fit(cols, labels, width)

    def line(cells):
        return SEP.join(_truncate_label(x, widths[k]).ljust(widths[k])
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
            out.append(truncate(name + ":", width))
        out.extend(line([bykey[k].cells[i] for k in printed]) for i in idx)
    # every row is told apart by its id; a label cut short is given whole once, by its id
    ids = bykey["id"].cells
    key = {}
    for k in labels:
        for i, x in enumerate(bykey[k].cells):
            if len(x) > widths[k]:
                key.setdefault(ids[i], []).append(x)
    if key:
        out.append("key (labels cut above):")
        for cid, texts in key.items():
            for text in dict.fromkeys(texts):
                out.extend(textwrap.wrap(f"  {cid:<{len(max(ids, key=len))}}  {text}", width,
                                         subsequent_indent="      ", break_on_hyphens=False))
    left_out = [c.name for c in cols if c.key not in widths and c.key not in group]
    if left_out:
        note = (f"not shown at {width} columns: {', '.join(left_out)} "
                "(--wide, or --format md/html/csv/json, shows every column)")
        out.extend(textwrap.wrap(note, width, break_on_hyphens=False))
    return [x if len(x) <= width else truncate(x, width) for x in out]


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, run: RunContext | None = None) -> str:
    header, rows = table_rows(report)
    out = ["# FS stability report", ""]
    ans = answer_lines(report, run)
    out.extend(f"- {_md_cell(x.strip())}" if not x.startswith("  fsray ") else f"  `{x.strip()}`"
               for x in ans[1:])
    out.append("")
    out.extend(f"- {_md_cell(x)}" for x in _text_lines(report))
    out.append("")
    out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
    out.append("|" + "---|" * len(header))
    for row in rows:
        out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    show, why = importance_gate(report)
    if show:
        out += ["", "## Search importance", "", "| knob | mean delta | spread |", "|---|---|---|"]
        out += [f"| {_md_cell(k)} | {a} | {b} |" for k, a, b in _importance_rows(report)]
    elif why:
        out += ["", f"- {why}"]
    for title, items, table in _extra_sections(report):
        out += ["", f"## {title}", ""]
        if table is None:
            out += [f"- {_md_cell(x)}" for x in items]
            continue
        out += [f"- {_md_cell(x)}" for x in items[:1]] + [""]
        out.append("| " + " | ".join(_md_cell(h) for h in table[0]) + " |")
        out.append("|" + "---|" * len(table[0]))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table[1]]
    for title, items in _lists(report):
        out += ["", f"## {title}", ""]
        out += [f"- {_md_cell(x)}" for x in items]
    return "\n".join(out) + "\n"


# HTML: the columns shown at first (the rest behind the "every column" toggle, pure CSS: a
# checkbox and a sibling selector, no script). With these and the label cell wrapping, the table
# fits a 1400 px window.
HTML_COLUMNS = ("id", "stage", "task", "config", "n", "mean", "ci", "verdict", "signs", "flags")

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.2em 1.5em;max-width:1360px;color:#222}"
    "h1{font-size:1.4em;margin:.2em 0 .4em}h2{font-size:1.15em;margin:1.2em 0 .4em}"
    "#headline{border:2px solid #3a7;background:#f2faf5;border-radius:6px;padding:.5em 1em;"
    "margin:0 0 1em}#headline p{margin:.35em 0}"
    "#headline code{display:block;background:#fff;border:1px solid #cdc;padding:.3em .5em;"
    "white-space:pre-wrap;overflow-wrap:anywhere;font-size:13px}"
    ".counts{font-weight:600}.wrap{overflow-x:auto;max-width:100%}"
    "table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;white-space:nowrap;"
    "vertical-align:top}th{background:#f0f0f0}tr.wc td{background:#fff3cd}"
    "td.label{white-space:normal;overflow-wrap:anywhere;min-width:14em;max-width:30em}"
    ".more{display:none}#allcols:checked~.wrap .more{display:table-cell}"
    "label.toggle{font-size:13px;cursor:pointer;user-select:none}"
    "figure.plot{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin:0}"
    "figure.plot img{max-width:min(860px,100%);border:1px solid #eee}"
    "ul.key{font-size:12px;max-width:440px;margin:0;padding-left:1.2em;overflow-wrap:anywhere}"
    "ul.legend li,ul.list li{margin:.2em 0;max-width:100%;overflow-wrap:anywhere}")


def _headline_html(report: Report, run: RunContext | None) -> list[str]:
    """The answer first: one sentence per family and its verdict counts, the best candidate per
    task, and what to run next (analysis.answer)."""
    from .answer import best_line

    esc = html.escape
    ans = answer(report, run)
    out = ["<section id='headline'>", "<h1>FS stability report: the answer</h1>"]
    ids = {}
    if "config" in report.summary.columns:
        for cid, label in zip(report.summary["config_id"], report.summary["config"]):
            ids.setdefault(str(label), str(cid))
    for f in ans.families:
        sentence = f.statement[len(f.name) + 2:] if f.statement.startswith(f.name + ": ") else f.statement
        # the family statement names configurations by label: give each its table id too
        for label in sorted(ids, key=len, reverse=True):
            sentence = sentence.replace(f": {label} (", f": {ids[label]} {label} (")
        out.append(f"<p class='family'><b>{esc(f.name)}</b>: <span class='counts'>"
                   f"{esc(f.counts_text())}</span>; decided: {esc(', '.join(f.decided) or 'none')}."
                   f"{' ' + esc(sentence[:1].upper() + sentence[1:]) + '.' if sentence else ''}</p>")
    several = len({c.task for c in ans.best}) > 1
    out += [f"<p class='best'>{esc(best_line(c, several))}</p>" for c in ans.best]
    out += [f"<p>{esc(x)}</p>" for x in ans.extra]
    out.append(f"<p class='next'><b>next:</b> {esc(ans.next.why)}</p>")
    if ans.next.command:
        out.append(f"<code>{esc(ans.next.command)}</code>")
    out.append("</section>")
    return out


def _key_html(report: Report, ids: list[str]) -> str:
    """The key beside a plot: each id it shows and the configuration's whole label."""
    s = report.summary
    names = {}
    said = [c for c in report.shown if c not in ("stage", "config") and s[c].nunique(dropna=False) <= 1]
    for _, r in s.iterrows():
        name = " / ".join(str(r[c]) for c in report.shown
                          if c != "stage" and c not in said and c in r.index)
        names.setdefault(str(r["config_id"]), name or "all")
    items = "".join(f"<li><b>{html.escape(i)}</b> {html.escape(names.get(i, ''))}</li>" for i in ids)
    return f"<ul class='key'>{items}</ul>" if items else ""


def render_html(report: Report, run: RunContext | None = None) -> str:
    """One self-contained page (tables, and the plots as base64 PNG data URIs; no server, no files,
    no script): the answer first, then the table (the main columns; the rest behind a toggle), the
    plots with the key of the ids they show, knob importance when the search is large enough,
    the legend, and the lists (seeds to add, warnings, problems, notes)."""
    cols = table_columns(report)
    esc = html.escape
    s = report.summary
    # stage / task with one value: said above the table
    single = [c for c in ("task", "stage") if c in report.shown and s[c].nunique(dropna=False) <= 1]
    caption = "; ".join(f"{c} {s[c].iloc[0]}" for c in single) if len(s) else ""
    cols = [c for c in cols if c.key not in single]
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<title>FS stability report</title>", f"<style>{_CSS}</style></head><body>",
        *_headline_html(report, run),
        f"<h2>Configurations{(' (' + esc(caption) + ')') if caption else ''}</h2>",
        "<input type='checkbox' id='allcols' hidden>"
        "<label class='toggle' for='allcols'>&#9656; show every column (std, p-values and their "
        "adjustments, P(improve), seeds@80%, breakthrough)</label>",
        "<div class='wrap'><table><thead><tr>",
    ]

    def cls(c: Column) -> str:
        names = (["label"] if c.key == "config" else []) + ([] if c.key in HTML_COLUMNS else ["more"])
        return f" class='{' '.join(names)}'" if names else ""

    parts += [f"<th{cls(c)}>{esc(c.header)}</th>" for c in cols]
    parts.append("</tr></thead><tbody>")
    for i, (_, r) in enumerate(s.iterrows()):
        tr = " class='wc'" if r.get("winners_curse") else ""
        parts.append(f"<tr{tr}>" + "".join(f"<td{cls(c)}>{esc(c.cells[i])}</td>" for c in cols)
                     + "</tr>")
    parts.append("</tbody></table></div>")
    o = report.options
    for title, png, ids in plots.all_plots(s, report.data, report.keys, metric=o.metric,
                                           level=o.level, interval=o.interval,
                                           max_configs=o.max_plot_configs):
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{esc(title)}</h2><figure class='plot'><img alt='{esc(title)}' "
                     f"src='data:image/png;base64,{b64}'>{_key_html(report, ids)}</figure>")
    show, why = importance_gate(report)
    if show:
        parts.append("<h2>Search importance</h2><table><tr><th>knob</th><th>mean delta</th>"
                     "<th>spread</th></tr>")
        parts += [f"<tr><td>{esc(k)}</td><td>{a}</td><td>{b}</td></tr>"
                  for k, a, b in _importance_rows(report)]
        parts.append("</table>")
    elif why:
        parts.append(f"<h2>Search importance</h2><p>{esc(why)}</p>")
    parts.append("<h2>How to read this report</h2><ul class='legend'>")
    parts += [f"<li>{esc(x)}</li>" for x in _text_lines(report)]
    parts.append("</ul>")
    for title, items, table in _extra_sections(report):
        parts.append(f"<h2>{esc(title)}</h2>")
        if table is None:
            parts += ["<ul>", *(f"<li>{esc(x)}</li>" for x in items), "</ul>"]
            continue
        parts += [f"<p>{esc(items[0])}</p>", "<table><thead><tr>",
                  *(f"<th>{esc(h)}</th>" for h in table[0]), "</tr></thead><tbody>"]
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table[1]]
        parts.append("</tbody></table>")
    for r in report.meta:
        title = f"Across tasks: {r.what} [{r.stage}]"
        png = plots.meta_forest(r, metric=o.metric, level=o.level)
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='data:image/png;base64,{b64}'>")
    for title, items in _lists(report):
        parts.append(f"<h2>{esc(title)} ({len(items)})</h2><ul class='list'>")
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


def _extra_frames(report: Report) -> list[pd.DataFrame]:
    """The contrast and across-task rows as CSV rows of their own ``section``."""
    out = []
    for c in report.contrasts:
        f = c.rows.copy()
        for col in ("looks", "seeds_a", "seeds_b"):
            f[col] = [" ".join(map(str, x)) for x in f[col]]
        out.append(f.assign(metric=f"d_{c.metric}").rename(columns={"key": "contrast"})
                   .assign(section="contrast"))
    if report.meta:
        out.append(pd.DataFrame([r.row() for r in report.meta]).assign(
            section="across tasks", metric=f"d_{report.options.metric}"))
    return out


def render_csv(report: Report) -> str:
    df = _export_frame(report)
    extra = _extra_frames(report)
    if extra:  # one table: the configurations' rows, then the contrasts' and the summaries'
        df = pd.concat([df.assign(section="configuration"), *extra], ignore_index=True)
        df.insert(0, "section", df.pop("section"))
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


def render_json(report: Report, run: RunContext | None = None) -> str:
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
        "answer": answer_lines(report, run),
        "exit_code": report.exit_code,
    }
    if report.contrasts:
        doc["contrasts"] = [{"key": c.key, "metric": f"d_{c.metric}", "delta": c.delta,
                             "notes": c.notes,
                             "rows": [_jsonable(r) for r in c.rows.to_dict(orient="records")]}
                            for c in report.contrasts]
    if report.meta:
        doc["across_tasks"] = [{**_jsonable(r.row()), "left_out": r.left_out,
                                "per_task": [_jsonable(t) for t in r.tasks.to_dict(orient="records")]}
                               for r in report.meta]
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


RENDERERS = {"table": render_table, "md": render_markdown, "html": render_html, "csv": render_csv,
             "json": render_json}


def render(report: Report, fmt_name: str = "table", *, width: int | None = None,
           wide: bool = False, explain: bool = False, run: RunContext | None = None) -> str:
    """The report in one format. ``width``/``wide``/``explain`` shape the terminal table only
    (render_table); md, html, csv and json always carry every column and the legend. ``run``:
    the search run directory the answer's command continues (``analysis.answer.run_context``)."""
    if fmt_name not in RENDERERS:
        raise AnalysisInputError(f"--format must be one of {FORMATS}, got {fmt_name!r}")
    if fmt_name == "table":
        return render_table(report, width=width, wide=wide, explain=explain, run=run)
    if fmt_name in ("md", "html", "json"):
        return RENDERERS[fmt_name](report, run=run)
    return RENDERERS[fmt_name](report)
