"""fsray report: stability report of paired FS results (fsray runs or the researchers' files).

Reads every file under PATH... (formats recognised by content), summarises each configuration's
paired deltas and prints a table sorted by the interval's lower bound, with a verdict per
configuration (helps / hurts / no effect >= delta / undecided, analysis.verdict) and the seeds to add
to decide each undecided one, or writes markdown, a self-contained HTML page, CSV or JSON. Exit 0:
all input read; 1: something was skipped (listed) but a report was produced; 2: nothing usable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  fsray report runs/demo_cpu                         # terminal table of a search
  fsray report runs/demo_cpu --wide                  # every column, however wide
  fsray report runs/demo_cpu --explain               # with the legend and every seed plan
  fsray report examples/                             # a researcher-format summary and search records
  fsray report runs/demo_cpu --delta 0.005            # verdicts against a smaller effect of interest
  fsray report runs/demo_cpu --format html --out report.html
  fsray report results.jsonl --metric seq --learned-above 0.5
  fsray report table.csv --format json --interval bca --effect 0.01
  fsray report runs/a runs/b --group-by task          # pool configurations per task
  fsray report runs/ --contrast order=options_first,question_first --across-tasks

input formats (detected by content): fsray results stores (fsray.paired/1 JSONL); the researchers'
_summary_*.txt, *_records.jsonl and _aggregate_results.jsonl; a CSV/JSONL with columns config, task,
seed and a baseline and FS metric (baseline_acc,fs_acc or no_fs,prompt_fs; optional *_loss, *_seq).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="result files or directories, or the storage URI a search copied its results to "
                             "(s3://BUCKET/PREFIX/RUN, gs://...)")
    parser.add_argument("--format", default="table", choices=("table", "md", "html", "csv", "json"),
                        help="output format (default: table)")
    parser.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    parser.add_argument("--wide", action="store_true",
                        help="terminal table: every column (default: the columns that fit the "
                             "terminal's width, most important first, 120 with no terminal; with "
                             "--out, every column; md/html/csv/json always have every column)")
    parser.add_argument("--explain", action="store_true",
                        help="terminal table: also the legend (how to read each column and "
                             "verdict), the family statements and the seeds each undecided "
                             "configuration needs (md/html always have them)")
    parser.add_argument("--metric", default="acc", choices=("acc", "loss", "seq"),
                        help="paired delta to analyse: token accuracy, loss or sequence accuracy")
    parser.add_argument("--group-by", nargs="+", default=["task", "config"], metavar="COLUMN",
                        help="columns that define a configuration (default: task config; the stage "
                             "is always kept apart)")
    parser.add_argument("--interval", default="t", choices=("t", "bca", "percentile"),
                        help="interval method for the mean delta (default t: measured coverage)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--effect", type=float, default=None, metavar="X",
                        help="effect size for 'seeds needed' (default: the observed mean)")
    parser.add_argument("--learned-above", type=float, default=None, metavar="X",
                        help="a run learned if its metric (token/sequence accuracy, in [0, 1]) "
                             "exceeds X; X must lie in [0, 1)")
    parser.add_argument("--delta", default=None, metavar="X",
                        help="smallest effect of interest of the verdicts, in the metric's units "
                             "(default 0.01: one point of accuracy; see the README's 'Verdicts')")
    parser.add_argument("--contrast", action="append", default=None, metavar="KEY[=A,B]",
                        help="difference of FS effects between two levels of KEY (order, a task "
                             "option, task, an FS knob), per configuration present at both; "
                             "KEY=A,B picks the levels (A - B); repeatable (analysis.contrast)")
    parser.add_argument("--contrast-pairing", default="auto", choices=("auto", "seed", "welch"),
                        help="--contrast: pair seed s at A with seed s at B when the records show "
                             "the same initial weights (auto, default); also where they are not "
                             "recorded (seed: you know they are); never (welch)")
    parser.add_argument("--across-tasks", action="store_true",
                        help="random-effects summary of FS's effect over tasks: pooled effect, "
                             "tau^2, I^2, Q, prediction interval for a new task (analysis.meta)")
    parser.add_argument("--tau2", default="pm", choices=("pm", "dl"),
                        help="between-task variance estimator of --across-tasks: Paule-Mandel "
                             "(default) or DerSimonian-Laird")
    parser.add_argument("--max-seeds", type=int, default=None, metavar="N",
                        help="seeds per configuration the sequential design of the verdicts may "
                             "reach (default 20; records of a settling search carry their own)")
    parser.add_argument("--design", choices=("sprt", "spending"), default="sprt",
                        help="sequential design the verdicts replay: the truncated SPRT (default) or "
                             "the alpha spending of fsray before issue 20")
    parser.add_argument("--own-variance", action="store_true",
                        help="judge every configuration on its own variance (no borrowed family prior)")


def run(args: argparse.Namespace) -> int:
    from .errors import AnalysisInputError
    from .loaders import load
    from .report import ReportOptions, build, render
    from .verdict import DEFAULT_DELTA, DEFAULT_HORIZON

    options = ReportOptions(metric=args.metric, group_by=tuple(args.group_by),
                            interval=args.interval, level=args.level, effect=args.effect,
                            learned_above=args.learned_above,
                            delta=DEFAULT_DELTA if args.delta is None else args.delta,
                            horizon=DEFAULT_HORIZON if args.max_seeds is None else args.max_seeds,
                            design=args.design, borrow=not args.own_variance)
    out = _checked_out(args.out, args.paths) if args.out else None   # before reading anything
    loaded = load(_fetched(args.paths))
    try:
        report = build(loaded, options)
        _sections(report, args)
    except AnalysisInputError as exc:
        # Nothing usable: say why, and everything that was dropped on the way.
        for line in [*loaded.skipped, *loaded.problems]:
            print(f"fsray: skipped: {line}", file=sys.stderr)
        print(f"fsray: error: {exc}", file=sys.stderr)
        return 2
    text = render(report, args.format, wide=args.wide or bool(args.out), explain=args.explain,
                  run=_run_context(args.paths))
    if out is not None:
        _write_out(out, text)
        print(f"fsray: wrote {args.format} report of {len(report.summary)} configuration(s) "
              f"to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    dropped = len(report.problems) + len(report.skipped)
    if dropped:
        print(f"fsray: {dropped} input item(s) skipped or dropped (listed in the report)",
              file=sys.stderr)
    return report.exit_code


def _sections(report, args: argparse.Namespace) -> None:
    """The contrasts (--contrast) and the across-task summaries (--across-tasks) of a report."""
    from . import contrast, meta

    o = report.options
    for text in args.contrast or ():
        report.contrasts.append(contrast.build(report.data, contrast.ContrastSpec.parse(text),
                                               metric=o.metric, delta=o.delta, level=o.level,
                                               horizon=o.horizon, pairing=args.contrast_pairing))
    if args.across_tasks:
        report.meta = meta.build(report.data, metric=o.metric, method=args.tau2, level=o.level)


def _run_context(paths: list[str]):
    """One local search run directory: the answer's command continues it (--settle-only)."""
    from .answer import run_context

    if len(paths) != 1 or "://" in paths[0] or not Path(paths[0]).is_dir():
        return None
    return run_context(paths[0])


def _checked_out(out: str, paths: list[str]) -> Path:
    """``--out`` never names an input (a file given, or one a given directory holds: writing there
    would replace results with their report), a directory, or a place that cannot be written."""
    from fsray.errors import UsageError
    from fsray.paths import check_output_file

    from .errors import AnalysisInputError
    from .loaders import Loaded, _expand
    import pandas as pd

    local = [p for p in paths if "://" not in p]
    inputs = [*local, *_expand(local, Loaded(pd.DataFrame()))]
    try:
        return check_output_file(out, "--out", inputs=inputs)
    except UsageError as exc:
        raise AnalysisInputError(str(exc)) from None


def _write_out(out: Path, text: str) -> None:
    from fsray.errors import UsageError
    from fsray.paths import write_atomic

    from .errors import AnalysisInputError

    try:
        write_atomic(out, text)   # a full disk never leaves half a report
    except UsageError as exc:
        raise AnalysisInputError(str(exc)) from None


def _fetched(paths: list[str]) -> list[str]:
    """Storage URIs (``fsray tune --storage-path``'s copy of a run) downloaded to a temporary
    directory (removed at exit); local paths unchanged. fsray.storage.fetch_run."""
    from fsray.storage import fetch_run, is_uri

    if not any(is_uri(p) for p in paths):
        return list(paths)
    import atexit
    import shutil
    import tempfile

    out = []
    for p in paths:
        if is_uri(p):
            tmp = tempfile.mkdtemp(prefix="fsray-report-")
            atexit.register(shutil.rmtree, tmp, True)
            out.append(str(fetch_run(p, tmp)))
        else:
            out.append(p)
    return out
