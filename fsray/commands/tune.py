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
  fsray tune search_spaces/simulated.yaml --settle --delta 0.01   # seeds until each top config is decided
  fsray tune search_spaces/demo_cpu.yaml --settle-only      # settle an existing run's shortlist
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
    parser.add_argument("--storage-path", default=None, metavar="URI",
                        help="where Ray Tune/Train state and checkpoints go, and a copy of the results "
                             "at the end: a path all nodes mount or s3://BUCKET/PREFIX, gs://... "
                             "(default: the run directory; checked before any training)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="SQLAlchemy URL of the Optuna study (default: SQLite in the run dir)")
    parser.add_argument("--top", type=int, default=5, help="configurations in the final table")
    parser.add_argument("--settle", action="store_true",
                        help="after the selection, give the top configurations fresh seeds in rounds "
                             "until each has a verdict or its budget is spent (settle: in the YAML)")
    parser.add_argument("--settle-only", action="store_true",
                        help="settle the finished selection of an existing run directory, no more trials")
    parser.add_argument("--wide", action="store_true",
                        help="print every column of the final stability table (default: fit the terminal)")
    parser.add_argument("--delta", type=float, default=None, metavar="X",
                        help="smallest effect of interest for verdicts (objective.delta; default 0.01)")


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
    lines += baseline_lines(summary.get("baselines"))
    lines += settle_lines(summary.get("settle"), knobs)
    lines.append(f"full report: fsray report {summary['run_dir']}")
    return "\n".join(lines)


def baseline_lines(b: dict | None) -> list[str]:
    """no_fs itself against chance: whether there was anything for FS to change."""
    if not b or not b["seq_acc"]:
        return []
    exact = ", ".join(f"{v:.2f}" for v in b["seq_acc"] if v is not None)
    tok = ", ".join(f"{v:.2f}" for v in b["token_acc"] if v is not None)
    ch = b.get("chance") or {}
    vs = (f" (chance {ch['seq_acc']:.2f} exact, {ch['token_acc']:.2f} token)"
          if ch.get("seq_acc") is not None and ch.get("token_acc") is not None else "")
    return [f"no_fs on the selection seeds {b['seeds']}: exact match {exact}; token accuracy {tok}{vs}"]


def settle_lines(settle: dict | None, knobs) -> list[str]:
    """The settling verdicts: one line per configuration, the family statement, what is left."""
    if not settle:
        return []
    out = [f"settled on fresh seeds (delta {settle['delta']:g}; error rates hold over every round):"]
    for c in settle["configs"]:
        iv = "" if c["lo"] is None else f", repeated 95% interval [{_fmt(c['lo'])}, {_fmt(c['hi'])}]"
        cfg = _params_text(c, knobs) if c.get("config") else c["label"]
        out.append(f"  {c['label_text']:<22} n={c['n']:<3} mean d {_fmt(c['mean'])}{iv}  {cfg}")
    out.append(f"  {settle['family']}")
    for c in settle["undecided"]:
        if c["seeds_to_decide"] is not None:
            more = "" if c["within_horizon"] else " (beyond the per-configuration budget)"
            out.append(f"  undecided: {c['label']}: about {c['seeds_to_decide']} more paired seeds would "
                       f"decide it ({c['would_decide'] or '?'}) at the current estimate{more}")
    return out


def run(args) -> int:
    from fsray.errors import UsageError
    from fsray.search.driver import run_search
    from fsray.search.space import load_space

    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
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
    if args.storage_path:
        update["storage_path"] = args.storage_path
    if args.confirm_seeds is not None and args.confirm_seeds < 0:
        raise UsageError("--confirm-seeds must be >= 0")
    if args.delta is not None:
        import math

        if not (math.isfinite(args.delta) and args.delta > 0):
            raise UsageError(f"--delta must be a positive number, got {args.delta}")
        update["objective"] = space.objective.model_copy(update={"delta": args.delta})
    if args.settle:
        update["settle"] = space.settle.model_copy(update={"enabled": True})
    if update:
        space = space.model_validate({**space.model_dump(), **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in update.items()}})
    # Checked before anything is written (one line, exit 2 otherwise): the storage location and
    # the cluster RAY_ADDRESS names (it answers, and takes our token); run_search then finds Ray
    # already started and leaves it to us.
    storage = None
    if space.storage_path:
        from fsray.storage import check_storage

        storage = check_storage(space.storage_path)
    from fsray.cluster import cluster_address, start_ray

    started = start_ray(debug=getattr(args, "debug", False)) if cluster_address() else False
    try:
        summary = run_search(space, out=args.out, resume=args.resume, confirm_seeds=args.confirm_seeds,
                             say=None, debug=getattr(args, "debug", False), settle_only=args.settle_only,
                             inputs=(args.space,))
    finally:
        if started:
            import ray

            ray.shutdown()
    print(render_summary(summary, list(space.space), top=args.top), flush=True)
    write_stability_report(Path(summary["run_dir"]), wide=args.wide)
    if storage is not None:
        copy_results(Path(summary["run_dir"]), storage)
    return 0


def copy_results(run_dir: Path, storage) -> str | None:
    """A copy of the run's results in the storage location (``<storage_path>/<run name>/``), where
    ``fsray report URI`` reads them; the run directory stays the single-writer original."""
    from fsray.storage import run_location, upload_run

    dest = run_location(storage, run_dir)
    if not storage.remote and Path(dest).resolve() == run_dir.resolve():
        return None
    names = upload_run(run_dir, dest)
    print(f"results copied to {dest} ({', '.join(names)}): fsray report {dest}", flush=True)
    return dest


def write_stability_report(run_dir: Path, wide: bool = False) -> Path | None:
    """End of a search: the analysis package's stability table on the terminal (at its width,
    most important columns first; ``wide``: every column) and a
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
    print(render(report, "table", wide=wide), flush=True)
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render(report, "html"), encoding="utf-8")
    os.replace(tmp, out)
    print(f"HTML report: {out}", flush=True)
    return out
