"""The answer of a stability report, said last on the terminal and first in the HTML page.

Per family (one stage of one task) the verdict counts and the configurations that were decided;
per task the best candidate; and the one command that would decide what is left: for a search run
directory, ``fsray tune SPACE --out RUN --settle-only --settle-budget N`` with the budget that
lets the settling loop reach a verdict for each configuration it takes, at the current estimates;
for other results, the seeds to add to the best candidate.

``answer(report, run)`` gathers it (``Answer``); ``answer_lines(report, run, width)`` prints it.
Other parts of the report add a line by appending to ``Answer.extra`` (``extra_lines``) or to the
list ``answer_lines`` returns. ``run`` is a ``RunContext`` (``run_context(run_dir)``): what the
search recorded about itself in ``summary.json`` and ``space.json`` (read as plain JSON: the report
never imports the search code).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import verdict as vmod

ORDER = ("helps", "hurts", "no effect", "undecided", "no-op")
DECIDED = ("helps", "hurts", "no effect")
MAX_NAMED = 8          # decided configurations named per family before "and k more"
TITLE = "== answer"


@dataclass
class RunContext:
    """A search's run directory as the closing command needs it."""

    run_dir: str
    space: str                       # the search file the command names
    settle: dict                     # the search's settle section
    selection: list[dict]            # summary.json's selection rows, best objective first
    extra_args: list[str] = field(default_factory=list)   # flags the command repeats (--seeds N)


def run_context(run_dir: str | os.PathLike, space: str | None = None,
                extra_args: list[str] | None = None) -> RunContext | None:
    """The context of a search run directory (its summary.json and space.json), or None when the
    directory is not one (the researchers' files, a plain table)."""
    d = Path(run_dir)
    try:
        summary = json.loads((d / "summary.json").read_text())
        saved = json.loads((d / "space.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(saved, dict):
        return None
    return RunContext(run_dir=_shown_path(d), space=space or _shown_path(d / "space.json"),
                      settle=dict(saved.get("settle") or {}),
                      selection=list(summary.get("selection") or []),
                      extra_args=list(extra_args or []))


def _shown_path(p: Path) -> str:
    """A path as a command line names it: relative to the working directory when under it."""
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return str(p)
    return rel if not rel.startswith("..") else str(p.resolve())


@dataclass
class FamilyAnswer:
    task: str | None
    stage: str
    n: int                           # configurations in the family (no-ops included)
    counts: dict[str, int]           # verdict -> configurations
    decided: list[str]               # "C3 helps (≥0.01)"
    statement: str                   # the family statement (analysis.verdict.family_statement)

    @property
    def name(self) -> str:
        return f"{self.task or 'all'} [{self.stage}]"

    def counts_text(self) -> str:
        return ", ".join(f"{self.counts[v]} {'no-op (A/A)' if v == 'no-op' else v}"
                         for v in ORDER if self.counts.get(v))


@dataclass
class Candidate:
    task: str | None
    config_id: str
    label: str
    stage: str
    n: int
    mean: float | None
    lo: float | None
    hi: float | None
    verdict: str
    verdict_label: str
    why: str = ""                    # why this one: how it was picked


@dataclass
class NextStep:
    command: str | None              # the one command to run (None: nothing to run, or no command)
    why: str                         # what it does / why nothing


@dataclass
class Answer:
    delta: float
    families: list[FamilyAnswer]
    best: list[Candidate]
    next: NextStep
    extra: list[str] = field(default_factory=list)   # lines other parts of the report add


# --------------------------------------------------------------------------------------------------


def _fmt(v, spec="+.4f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def number(v) -> float | None:
    """A finite float, or None (None, NaN, inf, text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _families(report) -> list[FamilyAnswer]:
    s = report.summary
    statements = {(f["stage"], f["task"]): f.get("statement", "") for f in report.families}
    out = []
    cols = ["stage", "task"] if "task" in s.columns else ["stage"]
    for key, fam in s.groupby(cols, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        stage, task = key[0], (key[1] if len(key) > 1 else None)
        counts = {v: int((fam["verdict"] == v).sum()) for v in ORDER}
        decided = [f"{r['config_id']} {r['verdict_label']}" for _, r in fam.iterrows()
                   if r["verdict"] in DECIDED]
        out.append(FamilyAnswer(task=task, stage=stage, n=len(fam), counts=counts, decided=decided,
                                statement=statements.get((stage, task), "")))
    return out


def _candidate(r: pd.Series) -> Candidate:
    return Candidate(task=r.get("task"), config_id=str(r["config_id"]), label=str(r.get("config", "")),
                     stage=str(r["stage"]), n=int(r["n"]), mean=number(r["mean"]),
                     lo=number(r["verdict_lo"] if r["verdict"] in DECIDED else r["ci_lo"]),
                     hi=number(r["verdict_hi"] if r["verdict"] in DECIDED else r["ci_hi"]),
                     verdict=str(r["verdict"]), verdict_label=str(r["verdict_label"]))


def _best(report) -> list[Candidate]:
    """Per task: a configuration shown to help on fresh seeds (the largest such mean, by delta or
    more first), else the top real configuration of the report's order (the selection's, by the
    interval's bound: what a search would settle next), quoted on its fresh seeds when it has
    some."""
    s = report.summary
    higher = report.options.metric != "loss"
    out = []
    tasks = s.groupby("task", sort=False) if "task" in s.columns else [(None, s)]
    for task, rows in tasks:
        real = rows[~rows["noop"].astype(bool)]
        if real.empty:
            continue
        fresh_helps = real[(real["stage"] == "confirmation") & (real["verdict"] == "helps")]
        if len(fresh_helps):
            sign = 1.0 if higher else -1.0
            pick = max(fresh_helps.iterrows(),
                       key=lambda ir: (bool(ir[1]["verdict_ge_delta"]), sign * (number(ir[1]["mean"]) or 0)))[1]
            why = "shown to help on fresh seeds"
        else:
            pick = real.iloc[0]
            why = (f"ranked first by the interval's {'lower' if higher else 'upper'} bound"
                   + (" in the selection" if pick["stage"] == "selection" else ""))
            fresh = real[(real["stage"] == "confirmation") & (real["config_id"] == pick["config_id"])]
            if len(fresh):
                pick = fresh.iloc[0]
        cand = _candidate(pick)
        cand.why = why
        out.append(cand)
    return out


# --------------------------------------------------------------------------------------------------
# the next step


def _settle_step(report, run: RunContext, best: list[Candidate]) -> NextStep | None:
    """The --settle-only command and its budget: the settling loop takes the top ``settle.top_k``
    configurations that finished every selection seed and gives them fresh seeds in rounds; its
    ``total_budget`` counts every fresh seed they have, so the budget is those plus what each
    still needs at its current estimate (fresh seeds; for one without any yet, the count a fresh
    design needs at its selection estimate), up to the design's horizon."""
    st = run.settle
    top_k = int(st.get("top_k") or 2)
    horizon = int(st.get("max_seeds_per_config") or vmod.DEFAULT_HORIZON)
    round_size = int(st.get("round_size") or vmod.DEFAULT_ROUND)
    shortlist = [r for r in run.selection
                 if r.get("status") == "complete" and r.get("objective") is not None][:top_k]
    s = report.summary
    if not shortlist or "config_hash" not in s.columns:
        return None
    ids = {}
    for _, r in s.iterrows():
        ids.setdefault(r["config_hash"], r["config_id"])
    used = need = 0
    names, beyond, decided, stopped = [], [], [], []
    design = vmod.Design(delta=report.options.delta, horizon=max(horizon, vmod.MIN_SEEDS),
                         higher_is_better=report.options.metric != "loss")
    dcol = f"d_{report.options.metric}"
    for row in shortlist:
        h = row["config_hash"]
        cid = ids.get(h, h[:6])
        fresh = s[(s["stage"] == "confirmation") & (s["config_hash"] == h)]
        if len(fresh):
            f = fresh.iloc[0]
            n_f = int(f["n"])
            if f["verdict"] != "undecided":
                used += n_f
                decided.append(f"{cid} {f['verdict_label']}")
                continue
            if bool(f.get("verdict_curtailed", False)):
                # the settling stopped it (its horizon would decide it too rarely): a settling run
                # with the same design gives it no more seeds
                used += n_f
                stopped.append(cid)
                continue
            k = f["seeds_to_decide"]
            total = None if k is None or (isinstance(k, float) and math.isnan(k)) else n_f + int(k)
        else:
            n_f = 0
            sel = report.data[(report.data["stage"] == "selection") & (report.data["config_hash"] == h)]
            d = pd.to_numeric(sel[dcol], errors="coerce").dropna().to_numpy(float)
            v = vmod.verdict(d, design) if len(d) else None
            if v is None or v.verdict == "no-op":
                continue
            total = (max(len(d), vmod.MIN_SEEDS) if v.verdict != "undecided" else
                     None if v.seeds_to_decide is None else len(d) + int(v.seeds_to_decide))
            total = None if total is None else max(total, vmod.MIN_SEEDS)
        used += n_f
        if total is None or total > horizon:
            beyond.append((cid, total))
            total = horizon
        else:
            names.append(cid)
        need += max(total - n_f, 0)
    halted = (f"{', '.join(stopped)} {'was' if len(stopped) == 1 else 'were'} stopped by the "
              f"settling: the {horizon}-seed horizon would decide {'it' if len(stopped) == 1 else 'them'} "
              f"too rarely (a larger design decides: a new run with a larger "
              f"settle.max_seeds_per_config; settle.curtail: 0 and --settle-only run it on to the "
              f"horizon)") if stopped else ""
    if not names and not beyond:
        what = "; ".join(decided)
        if not what:
            return NextStep(None, f"nothing left to settle: {halted}")
        return NextStep(None, f"nothing left to settle: the configurations a settling run takes "
                              f"are decided on fresh seeds ({what})" + (f"; {halted}" if halted else ""))
    budget = max(used + need, vmod.check_settle_budget(len(shortlist), round_size=round_size,
                                                       max_seeds_per_config=horizon))
    cmd = " ".join(["fsray tune", _quote(run.space), "--out", _quote(run.run_dir), *run.extra_args,
                    "--settle-only", "--settle-budget", str(budget)])
    took = (f"a settling run takes the top {len(shortlist)} of the selection"
            + (f"; decided: {', '.join(decided)}" if decided else "")
            + (f"; {halted}" if halted else ""))
    parts = []
    if names:
        parts.append(f"{', '.join(names)} would be decided at the current "
                     f"estimate{'s' if len(names) > 1 else ''}")
    if beyond:
        said = ", ".join(f"{c} (~{t} seeds)" if t is not None else f"{c} (no projection)"
                         for c, t in beyond)
        parts.append(f"{said} need{'s' if len(beyond) == 1 else ''} more than the {horizon}-seed "
                     f"horizon of a settling design: up to it the estimate firms up, a larger "
                     f"design (a new run, a larger settle.max_seeds_per_config) decides")
    why = (f"{need} more fresh seeds ({budget} in all): " + "; ".join(parts) + f" ({took}):")
    return NextStep(cmd, why)


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(str(s))


def _plan_step(report, best: list[Candidate]) -> NextStep:
    """Without a search to continue: the seeds to add to the best candidate."""
    s = report.summary
    for c in best:
        r = s[(s["config_id"] == c.config_id) & (s["stage"] == c.stage)].iloc[0]
        if r["verdict"] != "undecided":
            continue
        k = r["seeds_to_decide"]
        if k is None or (isinstance(k, float) and math.isnan(k)):
            return NextStep(None, f"{c.config_id}: {r['verdict_note'] or 'no projection'}")
        total = int(r["n"]) + int(k)
        beyond = (f" (beyond the {report.options.horizon}-seed horizon: a larger design)"
                  if total > report.options.horizon else "")
        way = f" would say {r['would_decide']}" if isinstance(r["would_decide"], str) else ""
        return NextStep(None, f"add {int(k)} paired seed(s) to {c.config_id} [{c.stage}] "
                              f"({total} in all){way} at its current mean and spread{beyond}")
    if best:
        return NextStep(None, "nothing to run: " + ", ".join(
            f"{c.config_id} {c.verdict_label}" for c in best))
    return NextStep(None, "nothing to run: only no-op configurations")


def answer(report, run: RunContext | None = None) -> Answer:
    best = _best(report)
    step = _settle_step(report, run, best) if run is not None else None
    return Answer(delta=report.options.delta, families=_families(report), best=best,
                  next=step or _plan_step(report, best))


# --------------------------------------------------------------------------------------------------
# printing


def family_line(f: FamilyAnswer) -> str:
    decided = (", ".join(f.decided[:MAX_NAMED])
               + (f" and {len(f.decided) - MAX_NAMED} more" if len(f.decided) > MAX_NAMED else "")
               if f.decided else "none")
    return (f"{f.name}: {f.n} configuration{'s' if f.n != 1 else ''}: {f.counts_text()}; "
            f"decided: {decided}")


def best_line(c: Candidate, several_tasks: bool) -> str:
    where = {"confirmation": "on fresh seeds", "selection": "on the selection seeds"}.get(
        c.stage, f"[{c.stage}]")
    iv = "" if c.lo is None or c.hi is None else f" [{_fmt(c.lo)}, {_fmt(c.hi)}]"
    return (f"best candidate{' for ' + str(c.task) if several_tasks and c.task else ''}: "
            f"{c.config_id} {c.label}: {where} n={c.n}, mean d {_fmt(c.mean)}{iv}, {c.verdict_label}"
            + (f" ({c.why})" if c.why else ""))


def answer_lines(report, run: RunContext | None = None, width: int | None = None,
                 ans: Answer | None = None) -> list[str]:
    """The closing block: title, one line per family, the best candidate per task, the next step
    (the command on a line of its own, never wrapped, so it copies whole). ``width``: wrap the
    other lines to it."""
    ans = ans or answer(report, run)
    several = len({c.task for c in ans.best}) > 1
    body = [family_line(f) for f in ans.families]
    body += [best_line(c, several) for c in ans.best]
    body += list(ans.extra)
    lower = ": d_loss (lower is better)" if report.options.metric == "loss" else ""
    out = [f"{TITLE} (δ={ans.delta:g}){lower}"]
    for line in body:
        out.extend(_wrap(line, width))
    if ans.next.command:
        out.extend(_wrap("next: " + ans.next.why, width))
        out.append("  " + ans.next.command)
    else:
        out.extend(_wrap("next: " + ans.next.why, width))
    return out


def _wrap(line: str, width: int | None) -> list[str]:
    if not width or len(line) <= width:
        return [line]
    return textwrap.wrap(line, width, subsequent_indent="    ", break_on_hyphens=False,
                         break_long_words=True)


__all__ = ["Answer", "Candidate", "FamilyAnswer", "NextStep", "RunContext", "answer",
           "answer_lines", "best_line", "family_line", "run_context"]

