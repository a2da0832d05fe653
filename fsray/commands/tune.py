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
  fsray tune search_spaces/demo_cpu.yaml --settle-only --settle-budget 12   # settle further
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
    parser.add_argument("--optuna-storage", "--storage", dest="optuna_storage", default=None, metavar="URL",
                        help="SQLAlchemy URL of the Optuna study (default: SQLite in the run dir; "
                             "--storage is its old name)")
    parser.add_argument("--top", type=int, default=5, help="configurations in the final table")
    parser.add_argument("--settle", action="store_true",
                        help="after the selection, give the top configurations fresh seeds in rounds "
                             "until each has a verdict or its budget is spent (settle: in the YAML)")
    parser.add_argument("--settle-only", action="store_true",
                        help="settle the finished selection of an existing run directory, no more trials")
    parser.add_argument("--settle-budget", type=int, default=None, metavar="N",
                        help="override settle.total_budget: fresh seeds the settling may use in all "
                             "(those it already ran count; the closing answer names the budget "
                             "that would decide the shortlist)")
    parser.add_argument("--wide", action="store_true",
                        help="print every column of the final stability table (default: fit the "
                             "terminal, 120 columns with no terminal)")
    parser.add_argument("--explain", action="store_true",
                        help="also print the report's legend, family statements and the seeds each "
                             "configuration needs (the HTML report always has them)")
    parser.add_argument("--mlflow", default=None, metavar="URI",
                        help="log each trial to MLflow (Ray Tune's MLflowLoggerCallback: knobs as "
                             "params, paired statistics as metrics) and the HTML report as an "
                             "artifact of a closing run; URI e.g. file:///abs/path/mlruns "
                             "(pip install 'fsray[mlflow]')")
    parser.add_argument("--wandb", default=None, metavar="PROJECT",
                        help="log each trial to Weights & Biases (WandbLoggerCallback), offline "
                             "unless WANDB_MODE says otherwise; `wandb sync` uploads it")
    parser.add_argument("--delta", type=float, default=None, metavar="X",
                        help="smallest effect of interest for verdicts (objective.min_effect; default 0.01)")


def _fmt(x, spec="+.4f") -> str:
    """A number of the closing table: the report's formatting, "-" for a missing one."""
    from analysis.renderers import fmt

    return fmt(x, spec, dash="-")


def _params_text(row: dict, knobs, ids: dict | None = None) -> str:
    """A configuration as the summary names it: the report's id (``C3``, the stability table's)
    and its searched knobs."""
    from fsray.search.summary import short_label

    text = short_label(row["config"], knobs)
    cid = (ids or {}).get(row.get("config_hash"))
    return f"{cid} {text}" if cid else text


def _fitted(lines: list[str], width: int | None, rows: int = 0) -> list[str]:
    """Lines fitted to ``width``: the first ``rows`` (table rows) cut -- the configuration at the
    end of a row is what goes, its id stays and the stability table's key gives it whole -- the
    others wrapped (the report's ``truncate`` and ``wrap_line``)."""
    from analysis.renderers import truncate, wrap_line

    if not width:
        return lines
    out = []
    for i, x in enumerate(lines):
        out.extend([truncate(x, width)] if i < rows else wrap_line(x, width, indent="    "))
    return out


def render_summary(summary: dict, knobs, top: int = 5, ids: dict | None = None,
                   width: int | None = None) -> str:
    """The closing table: top configurations, confirmation, runs, failures, importance.
    ``ids``: config hash -> the stability report's short id; ``width``: fit the lines to it."""
    from analysis.renderers import signs_text
    from analysis.summary import IMPORTANCE_MIN_CONFIGS

    c = summary["counts"]
    lines = [
        f"== {summary['name']}: {c['configs']} configurations, seeds {summary['seeds']}, "
        f"objective {summary['objective']} of d_{summary['metric']} ({summary['seconds']:.0f}s)",
        f"{'#':>2} {'objective':>9} {'mean d':>8} {'spread':>7} {'interval':>19} {'+/0/-':>7} "
        f"{'n':>2} {'status':8} configuration",
    ]
    for i, r in enumerate(summary["selection"][:top], 1):
        iv = f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]"
        signs = signs_text(*r["signs"])
        lines.append(f"{i:>2} {_fmt(r['objective']):>9} {_fmt(r['mean']):>8} "
                     f"{_fmt(r['std'], '.4f'):>7} {iv:>19} {signs:>7} {r['n']:>2} {r['status']:8} "
                     f"{_params_text(r, knobs, ids)}")
    for r in summary["confirmation"]:
        lines.append(f"confirmation on fresh seeds {r['seeds']}: mean d {_fmt(r['mean'])}, spread "
                     f"{_fmt(r['std'], '.4f')}, interval [{_fmt(r['lo'])}, {_fmt(r['hi'])}], "
                     f"signs {signs_text(*r['signs'])} ({_params_text(r, knobs, ids)})")
    lines.append(
        f"training runs: {c['runs_made']} made ({c['fs_runs']} FS, {c['baselines_trained']} baselines; "
        f"{c['noop_seeds_skipped']} no-op seeds skipped, {c['racing_runs_saved']} saved by racing) vs "
        f"{c['fresh_baseline_protocol_runs']} for a fresh-baseline, every-seed protocol"
        + (f" ({c['ratio']:.2f}x)" if c["ratio"] is not None else ""))
    if summary["failures"]:
        lines.append(f"failed configurations ({len(summary['failures'])}):")
        lines += [f"  {f['label']}: {f['failure']}" for f in summary["failures"]]
    imp_all = summary["importance"]
    n_imp = imp_all.get("n_configs", c["configs"])
    for stat, title in (("mean_delta", "mean delta"), ("spread", "spread")):
        imp = imp_all.get(stat) or {}
        txt = ", ".join(f"{k} {v:.2f}" for k, v in sorted(imp.items(), key=lambda kv: -kv[1]))
        if txt and n_imp < IMPORTANCE_MIN_CONFIGS:
            # PED-ANOVA on a handful of configurations is noise (analysis.summary says why)
            txt = f"needs {IMPORTANCE_MIN_CONFIGS} configurations, this search has {n_imp}"
        lines.append(f"knob importance (PED-ANOVA) for the {title}: {txt or 'too few configurations'}")
        if txt.startswith("needs"):
            break
    lines += baseline_lines(summary.get("baselines"))
    lines += settle_lines(summary.get("settle"), knobs, ids)
    lines += contrast_lines(summary.get("contrast"))
    lines.append(f"full report: fsray report {summary['run_dir']}")
    return "\n".join(_fitted(lines, width, rows=2 + min(top, len(summary["selection"]))))


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


def contrast_lines(contrast: dict | None) -> list[str]:
    """A search's contrast (fsray.search.contrast): one line per settled configuration."""
    if not contrast:
        return []
    a, b = contrast["levels"]
    out = [f"contrast of {contrast['key']}: FS effect at {a} minus at {b}, on shared fresh seeds "
           f"({contrast['rounds']} round(s)):"]
    for r in contrast["configs"].values():
        if r is None:
            continue
        iv = "" if r["ci_lo"] is None else f" [{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}]"
        out.append(f"  {r['verdict_label']:<22} n={r['n_a']}/{r['n_b']} {_fmt(r['mean_a'])} - "
                   f"{_fmt(r['mean_b'])} = {_fmt(r['diff'])}{iv} ({r['pairing']})  {r['config_a']}")
    out.append(f"  full contrast: fsray report {contrast.get('run_dir', 'RUN')} --contrast {contrast['key']}")
    return out


def settle_lines(settle: dict | None, knobs, ids: dict | None = None) -> list[str]:
    """The settling verdicts: one line per configuration, the family statement, what is left."""
    if not settle:
        return []
    out = [f"settled on fresh seeds (delta {settle['delta']:g}; error rates hold over every round):"]
    for c in settle["configs"]:
        kind = "repeated 95% interval" if c.get("design", "spending") == "spending" else "95% interval"
        iv = "" if c["lo"] is None else f", {kind} [{_fmt(c['lo'])}, {_fmt(c['hi'])}]"
        cfg = _params_text(c, knobs, ids) if c.get("config") else c["label"]
        out.append(f"  {c['label_text']:<22} n={c['n']:<3} mean d {_fmt(c['mean'])}{iv}  {cfg}")
        out += settle_detail_lines(c)
    out.append(f"  {settle['family']}")
    for c in settle["undecided"]:
        if c.get("curtailed"):
            p = c.get("p_decide") or 0.0
            chance = f"{p:.0%}" if p >= 0.01 else "under 1%"
            out.append(f"  stopped early: {c['label']}: its seed horizon would decide it with probability "
                       f"{chance}, so no more seeds were spent on it")
        if c["seeds_to_decide"] is not None:
            more = "" if c["within_horizon"] else " (beyond the per-configuration budget)"
            out.append(f"  undecided: {c['label']}: about {c['seeds_to_decide']} more paired seeds would "
                       f"decide it ({c['would_decide'] or '?'}) at the current estimate{more}")
    return out


def settle_detail_lines(c: dict) -> list[str]:
    """Borrowed variance, the stopping-aware estimate and the variance split of one settled
    configuration, in plain words (issue 20)."""
    out = []
    if c.get("variance") == "borrowed" and c.get("prior_df"):
        out.append(f"      variance borrowed from the other shortlisted configurations "
                   f"(+{c['prior_df']:g} degrees of freedom)")
    if c.get("estimate") is not None:
        out.append(f"      allowing for when it stopped: {_fmt(c['estimate'])} "
                   f"[{_fmt(c['est_lo'])}, {_fmt(c['est_hi'])}] (plain mean {_fmt(c['mean'])})")
    if c.get("split"):
        out.append(f"      {c['split']}")
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
        update["tuner"] = space.tuner.model_copy(update={"trials": args.trials})
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise UsageError("--concurrency must be >= 1")
        tuner = update.get("tuner", space.tuner)
        update["tuner"] = tuner.model_copy(update={"concurrency": args.concurrency})
    if args.seeds is not None:
        if args.seeds < 2:
            raise UsageError("--seeds must be >= 2 (an interval needs 2)")
        update["seeds"] = space.seeds.model_copy(update={"count": args.seeds, "ids": None})
    if args.optuna_storage:
        update["optuna_storage"] = args.optuna_storage
    if args.storage_path:
        update["storage_path"] = args.storage_path
    if args.confirm_seeds is not None and args.confirm_seeds < 0:
        raise UsageError("--confirm-seeds must be >= 0")
    if args.delta is not None:
        import math

        if not (math.isfinite(args.delta) and args.delta > 0):
            raise UsageError(f"--delta must be a positive number, got {args.delta}")
        update["objective"] = space.objective.model_copy(update={"min_effect": args.delta})
    if args.settle:
        update["settle"] = space.settle.model_copy(update={"enabled": True})
    if args.settle_budget is not None:
        if args.settle_budget < 1:
            raise UsageError("--settle-budget must be >= 1")
        settle = update.get("settle", space.settle)
        update["settle"] = settle.model_copy(update={"total_budget": args.settle_budget})
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

    from fsray.search.driver import run_dir_of
    from fsray.search.tracking import logger_callbacks

    callbacks = []
    if args.mlflow or args.wandb:   # the run directory's checks come first (inputs: the search file)
        callbacks = logger_callbacks(space.name, run_dir_of(space, args.out, (args.space,)),
                                     mlflow_uri=args.mlflow, wandb_project=args.wandb)
    started = start_ray(debug=getattr(args, "debug", False)) if cluster_address() else False
    try:
        summary = run_search(space, out=args.out, resume=args.resume, confirm_seeds=args.confirm_seeds,
                             say=None, debug=getattr(args, "debug", False), settle_only=args.settle_only,
                             callbacks=callbacks, inputs=(args.space,))
    finally:
        if started:
            import ray

            ray.shutdown()
    run_dir = Path(summary["run_dir"])
    report = stability_report(run_dir)
    width = None if args.wide else _width()
    ids = {} if report is None else report.ids_by_hash()
    from analysis.answer import answer_lines, run_context

    # the command the answer names repeats the flags that change what a settling run does
    extra = [*(["--seeds", str(args.seeds)] if args.seeds is not None else []),
             *(["--delta", f"{args.delta:g}"] if args.delta is not None else [])]
    ctx = run_context(run_dir, space=args.space, extra_args=extra)
    print(render_summary(summary, list(space.knobs), top=args.top, ids=ids, width=width), flush=True)
    write_stability_report(run_dir, wide=args.wide, explain=args.explain, report=report, run=ctx)
    if storage is not None:
        copy_results(run_dir, storage)
    if args.mlflow:
        from fsray.search.tracking import log_report

        rid = log_report(args.mlflow, space.name, run_dir, summary)
        print(f"MLflow: experiment {space.name!r} at {args.mlflow} (trials, and the report in run {rid})",
              flush=True)
    if report is not None:
        # the answer last: what was decided, the best candidate, the one command to run next
        print("\n" + "\n".join(answer_lines(report, ctx, width)), flush=True)
    return 0


def _width() -> int:
    from analysis.renderers import output_width

    return output_width()


def stability_report(run_dir: Path):
    """The analysis package's report of a run directory (None before any result)."""
    from analysis.loaders import load
    from analysis.report import ReportOptions, build

    if not (run_dir / "results.jsonl").exists():
        return None
    return build(load([str(run_dir)]), ReportOptions())


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


def write_stability_report(run_dir: Path, wide: bool = False, explain: bool = False,
                           report=None, run=None) -> Path | None:
    """End of a search: the analysis package's stability table on the terminal (at its width,
    120 columns with no terminal, most important columns first; ``wide``: every column;
    ``explain``: the legend too) and a self-contained HTML report in the run directory (written to
    a temporary file, then renamed, so a crash never leaves half a report), which opens with the
    answer (``run``: the ``analysis.answer.RunContext`` its command continues; default: the run
    directory's own space.json). The terminal's answer is said after this, by the caller."""
    from analysis.answer import run_context
    from analysis.renderers import render_html, render_table

    report = report if report is not None else stability_report(run_dir)
    if report is None:
        return None
    print("\n== stability report (fsray report " + str(run_dir) + ")", flush=True)
    print(render_table(report, wide=wide, explain=explain, with_answer=False), end="", flush=True)
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render_html(report, run=run or run_context(run_dir)), encoding="utf-8")
    os.replace(tmp, out)
    print(f"HTML report: {out}", flush=True)
    return out
