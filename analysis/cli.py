"""fsray report: stability report of paired FS results (fsray runs or the researchers' files).

Reads every file under PATH... (formats recognised by content), summarises each configuration's
paired deltas and prints a table sorted by the interval's lower bound, or writes markdown, a
self-contained HTML page, CSV or JSON. Exit 0: all input read; 1: something was skipped (listed) but a
report was produced; 2: nothing usable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  fsray report runs/demo_cpu                         # terminal table of a search
  fsray report ../shared/fixtures/upstream_results   # the researchers' summaries and search records
  fsray report runs/demo_cpu --format html --out report.html
  fsray report results.jsonl --metric seq --learned-above 0.5
  fsray report table.csv --format json --interval bca --effect 0.01
  fsray report runs/a runs/b --group-by task          # pool configurations per task

input formats (detected by content): fsray results stores (fsray.paired/1 JSONL); the researchers'
_summary_*.txt, *_records.jsonl and _aggregate_results.jsonl; a CSV/JSONL with columns config, task,
seed and a baseline and FS metric (baseline_acc,fs_acc or no_fs,prompt_fs; optional *_loss, *_seq).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="result files or directories")
    parser.add_argument("--format", default="table", choices=("table", "md", "html", "csv", "json"),
                        help="output format (default: table)")
    parser.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
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
                        help="a run learned if its metric (token/sequence accuracy) exceeds X")


def run(args: argparse.Namespace) -> int:
    from .errors import AnalysisInputError
    from .loaders import load
    from .report import ReportOptions, build, render

    options = ReportOptions(metric=args.metric, group_by=tuple(args.group_by),
                            interval=args.interval, level=args.level, effect=args.effect,
                            learned_above=args.learned_above)
    loaded = load(args.paths)
    try:
        report = build(loaded, options)
    except AnalysisInputError as exc:
        # Nothing usable: say why, and everything that was dropped on the way.
        for line in [*loaded.skipped, *loaded.problems]:
            print(f"fsray: skipped: {line}", file=sys.stderr)
        print(f"fsray: error: {exc}", file=sys.stderr)
        return 2
    text = render(report, args.format)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"fsray: wrote {args.format} report of {len(report.summary)} configuration(s) "
              f"to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    dropped = len(report.problems) + len(report.skipped)
    if dropped:
        print(f"fsray: {dropped} input item(s) skipped or dropped (listed in the report)",
              file=sys.stderr)
    return report.exit_code
