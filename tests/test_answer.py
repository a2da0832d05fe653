"""The closing answer of a report (analysis/answer.py, issue 22): verdict counts and the decided
configurations per family, the best candidate, and the one command that would decide it -- the
--settle-only command with the budget the settling loop needs (its total_budget counts every fresh
seed the shortlist already has)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from analysis import verdict as vmod
from analysis.answer import answer, answer_lines, run_context
from analysis.loaders import load
from analysis.renderers import render_table
from analysis.report import ReportOptions, build
from test_loaders import fsray_record, write_store


def _run_dir(tmp_path: Path, fresh: dict[int, list[float]], top_k: int = 2, horizon: int = 20,
             n_configs: int = 3) -> Path:
    """A search run directory: n_configs configurations on selection seeds 0-4 (config c's deltas
    around 0.01 * (3 - c)), fresh-seed deltas for some, summary.json and space.json as the search
    writes them."""
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    recs, rows = [], []
    for c in range(n_configs):
        h = f"{c:012x}"
        for s in range(5):
            recs.append(fsray_record(s, 0.5, 0.5 + 0.01 * (3 - c) + rng.normal(0, 0.01),
                                     config_hash=h, label=f"alpha_init=-{c + 1}"))
        for i, d in enumerate(fresh.get(c, [])):
            recs.append(fsray_record(100 + i, 0.5, 0.5 + d, config_hash=h,
                                     label=f"alpha_init=-{c + 1}", stage="confirmation"))
        rows.append({"config_hash": h, "status": "complete", "objective": 0.1 - 0.01 * c})
    write_store(run / "results.jsonl", recs)
    (run / "summary.json").write_text(json.dumps({"selection": rows}))
    (run / "space.json").write_text(json.dumps({"settle": {"top_k": top_k, "round_size": 2,
                                                           "max_seeds_per_config": horizon}}))
    return run


def _report(run: Path):
    return build(load(run), ReportOptions(n_resamples=200))


def test_counts_decided_configurations_and_best_candidate(tmp_path):
    # C1 (config 0) helps on 6 fresh seeds; the selection family is all undecided at 5 seeds
    run = _run_dir(tmp_path, {0: [0.05, 0.052, 0.049, 0.051, 0.05, 0.048]})
    rep = _report(run)
    ans = answer(rep, run_context(run))
    fams = {f.stage: f for f in ans.families}
    sel, conf = fams["selection"], fams["confirmation"]
    assert sel.n == 3 and sum(sel.counts.values()) == 3
    assert conf.counts["helps"] == 1 and conf.decided == ["C1 helps (≥0.01)"]
    best, = ans.best
    assert (best.config_id, best.stage, best.verdict) == ("C1", "confirmation", "helps")
    lines = answer_lines(rep, run_context(run))
    assert lines[0] == "== answer (δ=0.01)"
    assert "kv/query_after [confirmation]: 1 configuration: 1 helps; decided: C1 helps (≥0.01)" in lines


def test_settle_budget_counts_fresh_seeds_had_and_needed(tmp_path):
    # C1 has 3 fresh seeds, undecided; C2 none: the budget is 3 + what each needs
    fresh = [0.02, 0.035, 0.01]
    run = _run_dir(tmp_path, {0: fresh})
    rep = _report(run)
    s = rep.summary
    c1 = s[(s["stage"] == "confirmation")].iloc[0]
    assert c1["verdict"] == "undecided" and c1["seeds_to_decide"] is not None
    # C2 has no fresh seeds: what a fresh design needs at its selection estimate
    d2 = rep.data[(rep.data["stage"] == "selection") & (rep.data["config_hash"] == f"{1:012x}")]["d_acc"]
    v2 = vmod.verdict(d2.to_numpy(float), vmod.Design(delta=0.01, horizon=20))
    need2 = len(d2) + (v2.seeds_to_decide or 0) if v2.verdict == "undecided" else max(len(d2), 3)
    need1 = int(c1["seeds_to_decide"])
    assert 3 + need1 <= 20 and need2 <= 20
    step = answer(rep, run_context(run)).next
    want = 3 + need1 + need2
    assert step.command == (f"fsray tune {run_context(run).space} --out {run_context(run).run_dir} "
                            f"--settle-only --settle-budget {want}")
    assert step.why.startswith(f"{need1 + need2} more fresh seeds ({want} in all): C1, C2 would be "
                               "decided at the current estimates (a settling run takes the top 2")
    # the command line is printed whole, last, whatever the width
    lines = answer_lines(rep, run_context(run), width=40)
    assert lines[-1] == "  " + step.command


def test_nothing_to_settle_when_the_shortlist_is_decided(tmp_path):
    decided = [0.05, 0.052, 0.049, 0.051, 0.05, 0.048]
    run = _run_dir(tmp_path, {0: decided}, top_k=1)
    step = answer(_report(run), run_context(run)).next
    assert step.command is None and step.why.startswith("nothing left to settle") and "C1 helps" in step.why


def test_a_configuration_the_settling_stopped_gets_no_settle_command(tmp_path):
    """Fresh seeds recorded by a settling that curtails (settle.curtail): one seed that learned
    where its baseline did not leaves the 20-seed horizon almost no chance, so settling stopped C1;
    the answer says so and proposes no --settle-only run that would do nothing."""
    run = _run_dir(tmp_path, {0: [0.3, -0.25, 0.01, 0.02, -0.01]}, top_k=1)
    lines = (run / "results.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    for i, r in enumerate(x for x in recs if x["stage"] == "confirmation"):
        r["settle"] = {"round": 0 if i < 3 else 1, "horizon": 20, "design": "sprt", "curtail": 0.05}
    (run / "results.jsonl").unlink()
    write_store(run / "results.jsonl", recs)
    rep = _report(run)
    c1 = rep.summary[rep.summary["stage"] == "confirmation"].iloc[0]
    assert c1["verdict"] == "undecided" and c1["verdict_curtailed"]
    step = answer(rep, run_context(run)).next
    assert step.command is None
    assert step.why.startswith("nothing left to settle: C1 was stopped by the settling: the 20-seed horizon")


def test_beyond_the_horizon_is_said(tmp_path):
    # a tiny, noisy effect: no settling design of 6 seeds decides it
    rng = np.random.default_rng(3)
    run = _run_dir(tmp_path, {0: list(0.004 + rng.normal(0, 0.03, 3))}, top_k=1, horizon=6)
    step = answer(_report(run), run_context(run)).next
    assert "need" in step.why and "more than the 6-seed horizon of a settling design" in step.why
    assert "would be decided" not in step.why   # nothing the command runs decides it
    assert re.search(r"--settle-budget 6$", step.command)    # up to the horizon, no further


def test_without_a_run_directory_the_plan_names_the_seeds_to_add(tmp_path):
    run = _run_dir(tmp_path, {0: [0.02, 0.035, 0.01]})
    (run / "summary.json").unlink()
    rep = _report(run)
    assert run_context(run) is None
    step = answer(rep).next
    c1 = rep.summary[rep.summary["stage"] == "confirmation"].iloc[0]
    assert step.command is None
    assert step.why.startswith(f"add {int(c1['seeds_to_decide'])} paired seed(s) to C1 [confirmation]")


def test_the_terminal_report_ends_with_the_answer(tmp_path):
    run = _run_dir(tmp_path, {0: [0.02, 0.035, 0.01]})
    text = render_table(_report(run), width=100, run=run_context(run))
    tail = text[text.rindex("== answer"):].rstrip().splitlines()
    assert text.rstrip().endswith(tail[-1]) and tail[-1].startswith("  fsray tune ")
    assert any(ln.startswith("best candidate: C1 alpha_init=-1: on fresh seeds n=3") for ln in tail)
