"""Search FS hyperparameters with Ray Tune + Optuna, seed variance in the objective.

Each trial evaluates one FS configuration over paired seeds (no_fs vs prompt_fs); baselines are
trained once and cached; seeds are raced; the winner is confirmed on fresh seeds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

EPILOG = """examples:
  fsray tune search_spaces/demo_cpu.yaml                    # the embedded default (~8 min, 2 cores)
  fsray tune search_spaces/simulated.yaml --trials 20       # the machinery on a known surface
  fsray tune search_spaces/demo_cpu.yaml --resume           # continue after an interruption
  fsray tune search_spaces/arc_options_first.yaml --confirm-seeds 5 --out runs/arc_of
  RAY_ADDRESS=auto fsray tune search_spaces/hotpot_qafter_4096.yaml   # on a Ray cluster
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="search YAML (see search_spaces/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search in the run directory (nothing done is retrained)")
    parser.add_argument("--confirm-seeds", type=int, default=None, metavar="N",
                        help="re-run the best configuration on N fresh seeds (default: seeds.confirm)")
    parser.add_argument("--trials", type=int, default=None, metavar="N", help="override search.trials")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="override search.concurrency (trials at once)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="override the number of selection seeds")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run directory (default: <results_dir>/<name>)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="SQLAlchemy URL of the Optuna study (default: SQLite in the run dir)")
    parser.add_argument("--top", type=int, default=5, help="configurations in the final table")


def _fmt(x, spec="+.4f") -> str:
    return "-" if x is None else format(x, spec)


def _params_text(row: dict, knobs) -> str:
    from fsray.search.summary import short_label

    return short_label(row["config"], knobs)


def render_summary(summary: dict, knobs, top: int = 5) -> str:
    """The closing table: top configurations, confirmation, runs, failures, importance."""
    c = summary["counts"]
    lines = [
        f"== {summary['name']}: {c['configs']} configurations, seeds {summary['seeds']}, "
        f"objective {summary['objective']} of d_{summary['metric']} ({summary['seconds']:.0f}s)",
        f"{'#':>2} {'objective':>9} {'mean d':>8} {'spread':>7} {'interval':>19} {'+/0/-':>7} "
        f"{'n':>2} {'status':8} configuration",
    ]
    for i, r in enumerate(summary["selection"][:top], 1):
        iv = f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]"
        signs = "/".join(str(s) for s in r["signs"])
        lines.append(f"{i:>2} {_fmt(r['objective']):>9} {_fmt(r['mean']):>8} "
                     f"{_fmt(r['std'], '.4f'):>7} {iv:>19} {signs:>7} {r['n']:>2} {r['status']:8} "
                     f"{_params_text(r, knobs)}")
    for r in summary["confirmation"]:
        lines.append(f"confirmation on fresh seeds {r['seeds']}: mean d {_fmt(r['mean'])}, spread "
                     f"{_fmt(r['std'], '.4f')}, interval [{_fmt(r['lo'])}, {_fmt(r['hi'])}], "
                     f"signs {'/'.join(map(str, r['signs']))} ({_params_text(r, knobs)})")
    lines.append(
        f"training runs: {c['runs_made']} made ({c['fs_runs']} FS, {c['baselines_trained']} baselines; "
        f"{c['noop_seeds_skipped']} no-op seeds skipped, {c['racing_runs_saved']} saved by racing) vs "
        f"{c['fresh_baseline_protocol_runs']} for a fresh-baseline, every-seed protocol"
        + (f" ({c['ratio']:.2f}x)" if c["ratio"] is not None else ""))
    if summary["failures"]:
        lines.append(f"failed configurations ({len(summary['failures'])}):")
        lines += [f"  {f['label']}: {f['failure']}" for f in summary["failures"]]
    for stat, title in (("mean_delta", "mean delta"), ("spread", "spread")):
        imp = summary["importance"].get(stat) or {}
        txt = ", ".join(f"{k} {v:.2f}" for k, v in sorted(imp.items(), key=lambda kv: -kv[1]))
        lines.append(f"knob importance (PED-ANOVA) for the {title}: {txt or 'too few configurations'}")
    lines.append(f"full report: fsray report {summary['run_dir']}")
    return "\n".join(lines)


def run(args) -> int:
    from fsray.errors import UsageError
    from fsray.search.driver import run_search
    from fsray.search.space import load_space

    space = load_space(args.space)
    update = {}
    if args.trials is not None:
        if args.trials < 1:
            raise UsageError("--trials must be >= 1")
        update["search"] = space.search.model_copy(update={"trials": args.trials})
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise UsageError("--concurrency must be >= 1")
        search = update.get("search", space.search)
        update["search"] = search.model_copy(update={"concurrency": args.concurrency})
    if args.seeds is not None:
        if args.seeds < 2:
            raise UsageError("--seeds must be >= 2 (an interval needs 2)")
        update["seeds"] = space.seeds.model_copy(update={"count": args.seeds, "ids": None})
    if args.storage:
        update["storage"] = args.storage
    if args.confirm_seeds is not None and args.confirm_seeds < 0:
        raise UsageError("--confirm-seeds must be >= 0")
    if update:
        space = space.model_validate({**space.model_dump(), **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in update.items()}})
    summary = run_search(space, out=args.out, resume=args.resume, confirm_seeds=args.confirm_seeds,
                         say=None, debug=getattr(args, "debug", False))
    print(render_summary(summary, list(space.space), top=args.top), flush=True)
    write_stability_report(Path(summary["run_dir"]))
    return 0


def write_stability_report(run_dir: Path) -> Path | None:
    """End of a search: the analysis package's stability table on the terminal and a
    self-contained HTML report in the run directory (written to a temporary file, then renamed,
    so a crash never leaves half a report)."""
    from analysis.loaders import load
    from analysis.report import ReportOptions, build, render

    results = run_dir / "results.jsonl"
    if not results.exists():
        return None
    loaded = load([str(run_dir)])
    report = build(loaded, ReportOptions())
    print("\n== stability report (fsray report " + str(run_dir) + ")", flush=True)
    print(render(report, "table"), flush=True)
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render(report, "html"), encoding="utf-8")
    os.replace(tmp, out)
    print(f"HTML report: {out}", flush=True)
    return out
