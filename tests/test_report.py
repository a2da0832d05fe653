"""analysis.report / plots / cli: the numbers shown are the statistics modules' numbers, every format
carries them without NaN, the HTML is self-contained, and `fsray report` exits 0 / 1 / 2 as it should."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import bimodal, multiplicity, stats
from analysis.loaders import load
from analysis.report import ReportOptions, build, render
from test_loaders import fsray_record, write_store

N_CONFIGS, N_SEEDS = 4, 6


def search_records(seed: int = 1) -> list[dict]:
    """A small search: 4 configurations x 6 seeds with all-or-nothing runs (chance 0.21), then a
    confirmation of one of them on fresh seeds."""
    rng = np.random.default_rng(seed)
    recs = []
    for c in range(N_CONFIGS):
        for s in range(N_SEEDS):
            bl, fl = rng.random() < 0.5, rng.random() < 0.4 + 0.15 * c
            b = 0.95 + rng.normal(0, 0.01) if bl else 0.21 + rng.normal(0, 0.01)
            f = 0.95 + rng.normal(0, 0.01) if fl else 0.21 + rng.normal(0, 0.01)
            recs.append(fsray_record(s, b, f, config_hash=f"{c:012d}", label=f"alpha=-{c}",
                                     chance=0.21, margin=0.1, base_learned=bool(bl),
                                     fs_learned=bool(fl), loss=(1.0 + 0.1 * s, 1.0 - 0.05 * c)))
    for s in range(3):
        recs.append(fsray_record(100 + s, 0.5, 0.5 + 0.01 * (s + 1), config_hash=f"{3:012d}",
                                 label="alpha=-3", stage="confirmation"))
    return recs


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("search") / "run"
    write_store(d / "results.jsonl", search_records())
    (d / "importance.json").write_text(json.dumps(
        {"mean_delta": {"alpha_init": 0.61, "fs_layer_start": 0.2}, "spread": {"alpha_init": 0.3}}))
    return d


@pytest.fixture(scope="module")
def report(search_dir):
    return build(load(search_dir), ReportOptions(n_resamples=2000))


def run_cli(monkeypatch, capsys, *argv):
    """`fsray report ...` through fsray.cli.main, with only the report subcommand registered (the
    other subcommands import torch/Ray; `fsray report` must not need them)."""
    import fsray.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", {"report": cli.SUBCOMMANDS["report"]})
    code = cli.main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# -------------------------------------------------------------------------------------------------
# the numbers


def test_summary_is_the_statistics_modules_output(report):
    data = report.data
    keys = ["stage", "task", "config_hash"]
    direct = stats.summarize(data, "d_acc", keys, n_resamples=2000)
    merged = report.summary.merge(direct, on=keys, suffixes=("", "_direct"))
    assert len(merged) == len(report.summary) == N_CONFIGS + 1
    for col in ("n", "mean", "std", "n_pos", "n_neg", "sign_p", "wilcoxon_p", "ci_lo", "ci_hi",
                "p_improve", "seeds_needed"):
        # the configuration's own interval stays available beside the borrowed-variance one
        mine = {"ci_lo": "own_ci_lo", "ci_hi": "own_ci_hi"}.get(col, col)
        a = pd.to_numeric(merged[mine]).to_numpy(float)
        b = pd.to_numeric(merged[f"{col}_direct"]).to_numpy(float)
        np.testing.assert_allclose(a, b, equal_nan=True, err_msg=col)
    # the interval shown is the moderated t of each configuration's family prior
    from analysis import shrinkage
    assert (report.summary["variance"] == "borrowed").sum() >= 2
    for _, r in report.summary[report.summary["variance"] == "borrowed"].iterrows():
        rows = data[(data["stage"] == r["stage"]) & (data["task"] == r["task"])]
        fam = {h: g["d_acc"].to_numpy(float) for h, g in rows.groupby("config_hash")}
        lo, hi, df = shrinkage.moderated_interval(fam[r["config_hash"]],
                                                  shrinkage.family_priors(fam)[r["config_hash"]])
        assert (r["ci_lo"], r["ci_hi"], r["ci_df"]) == pytest.approx((lo, hi, df))
        assert r["ci_df"] > r["n"] - 1 and r["prior_df"] > 0
    # breakthrough split = bimodal.summarize_breakthrough on the recorded learned flags
    sel = report.summary[report.summary["stage"] == "selection"].set_index("config_hash")
    d = data[data["stage"] == "selection"]
    bt = bimodal.summarize_breakthrough(
        d.assign(bl=d["base_learned"].astype(bool), fl=d["fs_learned"].astype(bool),
                 ch=d["chance_acc"], mg=d["learned_margin"]),
        "config_hash", "base_acc", "fs_acc", chance="ch", margin="mg", base_learned_col="bl",
        fs_learned_col="fl", n_resamples=2000).set_index("config_hash")
    for col in ("both", "only_fs", "only_base", "neither", "mcnemar_p", "rate_lo", "rate_hi",
                "quality_mean", "bimodal"):
        a = pd.to_numeric(sel.loc[bt.index, f"bt_{col}"]).to_numpy(float)
        np.testing.assert_allclose(a, pd.to_numeric(bt[col]).to_numpy(float), equal_nan=True,
                                   err_msg=col)


def test_adjusted_p_values_within_stage_and_task(report):
    sel = report.summary[report.summary["stage"] == "selection"]
    for col in ("sign_p", "wilcoxon_p"):
        np.testing.assert_allclose(pd.to_numeric(sel[f"{col}_holm"]),
                                   multiplicity.holm(sel[col].to_numpy(object)))
        np.testing.assert_allclose(pd.to_numeric(sel[f"{col}_bh"]),
                                   multiplicity.benjamini_hochberg(sel[col].to_numpy(object)))
    conf = report.summary[report.summary["stage"] == "confirmation"]
    assert conf["sign_p_holm"].tolist() == conf["sign_p"].tolist()  # a family of one


def test_sorted_by_lower_bound_and_stages_apart(report):
    s = report.summary
    assert s["stage"].tolist() == ["selection"] * N_CONFIGS + ["confirmation"]
    lo = pd.to_numeric(s["ci_lo"][s["stage"] == "selection"]).to_numpy()
    assert (np.diff(lo) <= 0).all()


def test_winners_curse_flags_the_top_selected_on_same_seeds(report):
    s = report.summary
    sel = s[s["stage"] == "selection"]
    top = pd.to_numeric(sel["mean"]).idxmax()
    assert s["winners_curse"].tolist() == [i == top for i in s.index]  # not the confirmation
    fam = [f for f in report.families if f["stage"] == "selection"][0]
    assert fam["flag"] and fam["n_compared"] == N_CONFIGS and fam["top"] == s.loc[top, "config"]
    text = render(report, "table")
    assert f"is the top of {N_CONFIGS} configurations" in text and "confirm on fresh seeds" in text


def test_confirmation_on_reused_seeds_is_called_out(tmp_path):
    recs = [fsray_record(s, 0.5, 0.6, stage=st) for st in ("selection", "confirmation")
            for s in range(3)]
    rep = build(load(write_store(tmp_path / "r.jsonl", recs)), ReportOptions())
    assert any("confirmation reuses selection seed(s) [0, 1, 2]" in w for w in rep.warnings)


def test_bimodal_note_says_which_numbers_to_read(report):
    flagged = report.summary[report.summary["bt_bimodal"] == True]  # noqa: E712
    assert len(flagged) >= 1
    text = render(report, "table")
    flat = " ".join(text.split())   # the terminal wraps the warnings to its width
    for _, r in flagged.iterrows():
        assert f"{r['task']} / {r['config']} [selection]: {bimodal.BIMODAL_ADVICE}" in flat
    assert "bimodal" in text and "given both learned" in text


def test_breakthrough_follows_the_recorded_learned_metric(tmp_path):
    # token accuracy barely moves; exact match is all or nothing, and the trainer judged on it
    outcomes = [(0.0, 1.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0), (0.0, 0.0), (1.0, 1.0)]
    recs = [fsray_record(s, 0.50, 0.51, seq=(b, f), chance=0.2, margin=0.1, base_learned=b > 0.5,
                         fs_learned=f > 0.5, learned_metric="seq_acc")
            for s, (b, f) in enumerate(outcomes)]
    rep = build(load(write_store(tmp_path / "r.jsonl", recs)), ReportOptions(n_resamples=500))
    r = rep.summary.iloc[0]
    assert (r["bt_both"], r["bt_only_fs"], r["bt_only_base"], r["bt_neither"]) == (2, 2, 0, 2)
    assert r["bt_bimodal"] is True or r["bt_bimodal"] == True  # noqa: E712 (seq runs: 0 vs 1)
    # the split and its quality delta are on the metric that decided "learned"
    assert r["bt_metric"] == "seq" and r["bt_quality_mean"] == 0.0
    assert "d_seq +0.0000" in render(rep, "table", wide=True)  # a breakthrough column


def test_learned_above_on_a_plain_table(tmp_path):
    p = tmp_path / "t.csv"
    rows = ["config,task,seed,no_fs,prompt_fs"]
    rows += [f"a,kv,{s},{b},{f}" for s, (b, f) in enumerate(
        [(0.2, 0.9), (0.2, 0.9), (0.9, 0.9), (0.2, 0.2), (0.9, 0.2)])]
    p.write_text("\n".join(rows) + "\n")
    plain = build(load(p), ReportOptions())
    assert plain.summary["bt_both"].tolist() == [None]  # no flags, no chance: no split
    rep = build(load(p), ReportOptions(learned_above=0.5))
    r = rep.summary.iloc[0]
    assert (r["bt_both"], r["bt_only_fs"], r["bt_only_base"], r["bt_neither"]) == (1, 2, 1, 1)
    seeds = rep.data.sort_values("seed")
    assert seeds["fs_learned_eff"].tolist() == [True, True, True, False, False]


def test_loss_metric_lower_is_better(report, search_dir):
    rep = build(load(search_dir), ReportOptions(metric="loss", n_resamples=2000))
    sel = rep.summary[rep.summary["stage"] == "selection"]
    hi = pd.to_numeric(sel["ci_hi"]).to_numpy()
    assert (np.diff(hi) >= 0).all()  # best (most negative upper bound) first
    r = sel.iloc[0]
    assert r["p_improve"] == pytest.approx((r["n_neg"] + 0.5 * r["n_zero"]) / r["n"])
    assert "(lower is better)" in render(rep, "table")
    best = pd.to_numeric(sel["mean"]).idxmin()  # the largest loss reduction is the "winner"
    assert rep.summary["winners_curse"].tolist() == [i == best for i in rep.summary.index]


def test_n_below_two_and_all_zero_are_named(tmp_path):
    recs = [fsray_record(0, 0.5, 0.6, config_hash="a" * 12, label="single")]
    recs += [fsray_record(s, 0.5, 0.5, config_hash="b" * 12, label="noop") for s in range(3)]
    recs += [fsray_record(s, 0.5, 0.5 + 0.01 * s, config_hash="c" * 12, label="real")
             for s in range(3)]
    rep = build(load(write_store(tmp_path / "r.jsonl", recs)), ReportOptions())
    text = render(rep, "table")
    assert ("kv/query_after [selection]: 1 configuration(s) with 1 seed (no spread, interval or "
            "test): single") in text
    assert "kv/query_after / noop [selection]: all 3 deltas are exactly 0" in text
    assert "nan" not in text.lower()
    assert rep.exit_code == 0  # caveats on configurations, nothing skipped


def test_failed_and_noop_records_are_counted_not_used(tmp_path):
    recs = [fsray_record(s, 0.5, 0.6) for s in range(3)]
    recs.append(fsray_record(3, 0, 0, status="failed"))
    rep = build(load(write_store(tmp_path / "r.jsonl", recs)), ReportOptions())
    assert rep.summary["n"].tolist() == [3]
    assert len(rep.excluded) == 1
    assert "kv/query_after / lstart=1 [selection]: seed 3 failed: diverged; not in the statistics" \
        " (" in " ".join(rep.warnings)


def test_excluded_records_are_one_warning_per_configuration_and_cause(tmp_path):
    """Issue 22: five no-op seeds of a configuration were five warnings (and a sixth guessing it
    might be a no-op); failures of one cause are one line with their count and seeds."""
    recs = [fsray_record(s, 0.5, 0.6) for s in range(3)]
    recs += [fsray_record(s, 0.5, 0.5, config_hash="c" * 12, label="lstart=12", status="noop")
             for s in range(5)]
    recs += [fsray_record(s, 0, 0, config_hash="d" * 12, label="gate=0", status="failed")
             for s in (1, 2, 4)]
    oom = fsray_record(7, 0, 0, config_hash="d" * 12, label="gate=0", status="failed")
    recs.append({**oom, "failure": "out of memory"})
    rep = build(load(write_store(tmp_path / "r.jsonl", recs)), ReportOptions())
    noop = [w for w in rep.warnings if "lstart=12" in w]
    assert noop == ["kv/query_after / lstart=12 [selection]: 5 seeds (0-4) recorded as no-op (FS "
                    "provably changes nothing, not trained): listed as A/A evidence "
                    f"({tmp_path / 'r.jsonl'} lines 4-8)"]
    failed = [w for w in rep.warnings if "gate=0" in w]
    assert len(failed) == 2
    assert "3 seeds (1-2, 4) failed: diverged; not in the statistics" in failed[0]
    assert "seed 7 failed: out of memory" in failed[1]


# -------------------------------------------------------------------------------------------------
# formats


def _numbers_equal(exported: list, summary: pd.Series, col: str):
    for e, s in zip(exported, summary):
        if s is None or (isinstance(s, float) and math.isnan(s)):
            assert e is None or (isinstance(e, float) and math.isnan(e)), col
        elif isinstance(s, (bool, np.bool_)):
            assert bool(e) == bool(s), col
        else:
            assert float(e) == pytest.approx(float(s), rel=1e-15, abs=1e-15), col


NUMERIC = ("n", "mean", "std", "std_pop", "median", "n_pos", "n_zero", "n_neg", "sign_p",
           "wilcoxon_p", "ci_lo", "ci_hi", "p_improve", "seeds_needed", "sign_p_holm", "sign_p_bh",
           "wilcoxon_p_holm", "wilcoxon_p_bh", "bt_both", "bt_only_fs", "bt_mcnemar_p",
           "bt_rate_lo", "bt_rate_hi", "bt_quality_mean", "bt_iqm", "winners_curse", "family_size")


def test_csv_and_json_carry_every_number_of_the_summary(report):
    csv_df = pd.read_csv(io.StringIO(render(report, "csv")))
    doc = json.loads(render(report, "json"))
    assert len(csv_df) == len(doc["summary"]) == len(report.summary)
    for col in NUMERIC:
        want = report.summary[col]
        csv_vals = [None if pd.isna(v) else v for v in csv_df[col]]
        _numbers_equal(csv_vals, want, col)
        _numbers_equal([r[col] for r in doc["summary"]], want, col)
    assert doc["summary"][0]["ci_method"] == "t" and doc["options"]["interval"] == "t"
    assert {r["config"] for r in doc["summary"]} == set(report.summary["config"])
    assert len(doc["seeds"]) == len(report.data)
    assert doc["importance"]["mean_delta"]["alpha_init"] == 0.61
    for text in (render(report, "csv"), render(report, "json")):
        assert not re.search(r"\bnan\b|\bNaN\b|Infinity", text)


def test_markdown_table_and_importance(report):
    import dataclasses

    from analysis.summary import IMPORTANCE_MIN_CONFIGS

    md = render(report, "md")
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    table = lines[: 2 + len(report.summary)]
    assert all(ln.count("|") - ln.count("\\|") == table[0].count("|") for ln in table)
    # 4 configurations: PED-ANOVA would be noise; the report says how many it needs
    assert len(lines) == len(table) and "| alpha_init |" not in md
    assert f"needs at least {IMPORTANCE_MIN_CONFIGS} searched configurations" in md
    assert "this search has 4" in md
    big = dataclasses.replace(report, importance={**report.importance,
                                                  "n_configs": IMPORTANCE_MIN_CONFIGS})
    md = render(big, "md")
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == len(table) + 2 + 2  # then the importance table: header, rule, 2 knobs
    assert "| alpha_init | 0.610 | 0.300 |" in md
    for fmt in ("table", "html"):
        assert "needs at least" not in render(big, fmt) and "needs at least" in render(report, fmt)
    assert "nan" not in md.lower()


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.external, self.tables = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        if tag == "table":
            self.tables += 1
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//", "file:")):
                self.external.append(attrs[key])


def test_html_is_self_contained_with_png_plots(report, tmp_path):
    page = _Page()
    page.feed(render(report, "html"))
    assert page.external == [] and page.tables >= 1
    # forest, paired lines, and the Pareto plot of the 4-configuration search
    assert len(page.imgs) == 3
    for src in page.imgs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        png = base64.b64decode(src[len(prefix):], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        width, height = struct.unpack(">II", png[16:24])
        assert width > 300 and height > 200


def test_pareto_front_mask():
    from analysis.plots import pareto_front

    mean = np.array([0.5, 0.4, 0.1, 0.45, 0.5])
    spread = np.array([0.3, 0.1, 0.05, 0.2, 0.4])
    assert pareto_front(mean, spread).tolist() == [True, True, True, True, False]


# -------------------------------------------------------------------------------------------------
# the command


def test_cli_exit_codes(monkeypatch, capsys, search_dir, tmp_path):
    import shutil

    search_dir = Path(shutil.copytree(search_dir, tmp_path / "copy"))
    code, out, err = run_cli(monkeypatch, capsys, search_dir)
    assert code == 0 and "alpha=-3" in out and err == ""

    (search_dir / "junk.txt").write_text("nothing to see\n")
    code, out, err = run_cli(monkeypatch, capsys, search_dir)
    assert code == 1 and "alpha=-3" in out
    assert f"{search_dir / 'junk.txt'}: unknown format" in out
    assert "1 input item(s) skipped or dropped" in err

    junk_only = tmp_path / "junk"
    junk_only.mkdir()
    (junk_only / "a.txt").write_text("nothing\n")
    code, out, err = run_cli(monkeypatch, capsys, junk_only, tmp_path / "missing.jsonl")
    assert code == 2 and out == ""
    assert f"fsray: skipped: {junk_only / 'a.txt'}: unknown format" in err
    assert f"{tmp_path / 'missing.jsonl'}: no such file or directory" in err
    assert err.strip().splitlines()[-1] == "fsray: error: no usable paired seed in the input"


def test_cli_bad_option_is_one_line(monkeypatch, capsys, search_dir):
    code, out, err = run_cli(monkeypatch, capsys, search_dir, "--group-by", "colour")
    assert code == 2 and out == ""
    assert err.startswith("fsray: error: --group-by 'colour': not a column") and err.count("\n") == 1


def test_cli_writes_out_file(monkeypatch, capsys, search_dir, tmp_path):
    out_file = tmp_path / "rep" / "r.json"
    code, out, err = run_cli(monkeypatch, capsys, search_dir, "--format", "json", "--out", out_file)
    assert code == 0 and out == ""
    assert json.loads(out_file.read_text())["summary"][0]["n"] == N_SEEDS


def test_fsray_report_on_the_researchers_files(monkeypatch, capsys, upstream_dir):
    code, out, err = run_cli(monkeypatch, capsys, upstream_dir, "--wide")  # task, config: 1 line
    assert code == 1  # the empty summary, the manifest and the embedding round are skipped
    # every researchers' paired summary has its row: task and configuration label on one line
    from analysis import legacy

    lines = out.splitlines()
    n_files = 0
    for path in sorted(upstream_dir.glob("_summary_*.txt")):
        lf = legacy.parse_file(path)
        if lf.shape != "paired_blocks" or "round" in path.name:
            continue
        n_files += 1
        for row in lf.rows:
            assert any(row["task"] in ln and f"  {row['config']}" in ln for ln in lines), path.name
    assert n_files >= 38
    for name in ("stabilized_r2", "stabilized_len4096_r12_lstart10_alpha-3", "head_l8 bsz=2",
                 "sudoku9/suffix"):
        assert name in out
    assert "_summary_arc_optionsfirst.txt: empty file" in out
    assert "exp_manifest.json: an experiment manifest" in out
    assert "nan" not in out.lower().replace("nano", "")
    assert "fsray: " in err and "skipped or dropped" in err


def test_report_needs_neither_torch_nor_ray(tmp_path, search_dir):
    """`fsray report` on a laptop: the analysis package imports numpy/scipy/pandas/matplotlib only."""
    import subprocess
    import sys

    code = (
        "import sys, analysis.cli, analysis.plots; from analysis.loaders import load;"
        "from analysis.report import ReportOptions, build, render;"
        f"render(build(load({str(search_dir)!r}), ReportOptions(n_resamples=200)), 'table');"
        "bad = [m for m in ('torch', 'ray', 'optuna', 'pydantic', 'fsray') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


# -------------------------------------------------------------------------------------------------
# verdicts (issue 13), the build / render split and the shipped example (issue 14)


def test_verdict_in_every_format(report):
    s = report.summary
    assert set(s["verdict"]) <= {"helps", "hurts", "no effect", "undecided", "no-op"}
    conf = s[s["stage"] == "confirmation"].iloc[0]
    assert conf["verdict_basis"] == "fresh seeds"
    assert set(s[s["stage"] == "selection"]["verdict_basis"]) == {f"Bonferroni over {N_CONFIGS}"}
    table, md, page = (render(report, "table", explain=True), render(report, "md"),
                       render(report, "html"))
    for text in (table, md, page):
        assert "verdict (δ=0.01)" in text and "Seeds to add per configuration to decide" in text
        assert "family: " in text
    csv_df = pd.read_csv(io.StringIO(render(report, "csv")))
    doc = json.loads(render(report, "json"))
    for col in ("verdict", "verdict_label", "verdict_basis", "seeds_to_decide", "verdict_lo"):
        assert col in csv_df.columns and col in doc["summary"][0]
    assert csv_df["verdict"].tolist() == s["verdict"].tolist()
    assert doc["options"]["delta"] == 0.01 and isinstance(doc["plan"], list)
    assert all(f["statement"] for f in doc["families"])


def test_plan_names_every_undecided_configuration(report):
    from analysis.report import plan_lines

    und = report.summary[report.summary["verdict"] == "undecided"]
    lines = plan_lines(report)
    assert len(lines) == len(und)
    for (_, r), line in zip(und.iterrows(), lines):
        assert str(r["config"]) in line and f"n={r['n']}" in line


def test_delta_flag(monkeypatch, capsys, search_dir):
    code, out, _ = run_cli(monkeypatch, capsys, search_dir, "--delta", "0.2")
    assert code == 0 and "verdict (δ=0.2)" in out
    for bad in ("0", "-1", "abc", "nan"):
        code, out, err = run_cli(monkeypatch, capsys, search_dir, "--delta", bad)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith("fsray: error: --delta must be a positive number")


def test_learned_above_outside_the_metric_range_is_an_error(monkeypatch, capsys, search_dir):
    for bad in ("7", "-0.1", "1"):
        code, out, err = run_cli(monkeypatch, capsys, search_dir, "--learned-above", bad)
        assert code == 2 and out == "" and err.count("\n") == 1 and "--learned-above" in err
    code, _, _ = run_cli(monkeypatch, capsys, search_dir, "--metric", "loss", "--learned-above", "0.5")
    assert code == 0


def test_no_op_configurations_are_listed_never_the_winner(tmp_path):
    """A null surface: noisy real configurations and a provable no-op (status noop, interval
    [0, 0]) plus an all-zero configuration. The no-ops stay listed as A/A evidence, sort last and
    are never the family's best."""
    rng = np.random.default_rng(0)
    recs = []
    for c in range(3):
        for s in range(4):
            recs.append(fsray_record(s, 0.5, 0.5 + rng.normal(0, 0.02), config_hash=f"{c:012d}",
                                     label=f"lstart={c + 1}"))
    for s in range(4):
        noop = fsray_record(s, 0.5, 0.5, config_hash="c" * 12, label="lstart=12", status="noop")
        recs.append(noop)
        recs.append(fsray_record(s, 0.5, 0.5, config_hash="d" * 12, label="gate=0"))
    rep = build(load(write_store(tmp_path / "results.jsonl", recs)), ReportOptions(n_resamples=200))
    s = rep.summary
    assert list(s["config"].iloc[-2:]) in (["lstart=12", "gate=0"], ["gate=0", "lstart=12"])
    assert set(s[s["noop"]]["verdict"]) == {"no-op"} and len(s[s["noop"]]) == 2
    assert set(s[~s["noop"]]["config"]) == {"lstart=1", "lstart=2", "lstart=3"}
    fam = rep.families[0]
    assert fam["top"] in {"lstart=1", "lstart=2", "lstart=3"} and fam["n_noop"] == 2
    assert "2 no-op configuration(s) listed as A/A evidence" in fam["statement"]
    assert "best real configuration: lstart=" in fam["statement"]
    assert s[s["noop"]]["wilcoxon_p_holm"].isna().all()
    assert "no-op" in render(rep, "table")


def test_settling_rounds_are_replayed_as_looks(tmp_path):
    """Records of a settling search carry their round and horizon: the verdict replays those looks."""
    recs = []
    rng = np.random.default_rng(1)
    for s in range(9):
        rec = fsray_record(100 + s, 0.5, 0.5 + 0.02 + rng.normal(0, 0.004), stage="confirmation")
        rec["settle"] = {"round": 0 if s < 3 else 1 + (s - 3) // 2, "horizon": 12}
        recs.append(rec)
    rep = build(load(write_store(tmp_path / "results.jsonl", recs)), ReportOptions(n_resamples=200))
    r = rep.summary.iloc[0]
    assert r["looks"][: 2] == [3, 5] and r["verdict"] == "helps"
    from analysis.verdict import Design, verdict

    d = rep.data.sort_values("settle_round", kind="stable")["d_acc"].to_numpy()
    v = verdict(d, Design(delta=0.01, horizon=12), looks=[3, 5, 7, 9])
    assert (v.verdict, v.decided_at) == (r["verdict"], r["verdict_n"])


def test_build_and_render_are_apart_and_plots_take_frames():
    """No import cycle: plots and the statistics table import neither renderers nor report."""
    import ast
    import analysis

    root = Path(analysis.__file__).parent
    for mod, banned in (("plots.py", {"report", "summary", "renderers"}),
                        ("summary.py", {"report", "renderers", "plots"})):
        tree = ast.parse((root / mod).read_text())
        imported = {a.name.split(".")[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                    for a in n.names} | {n.module.split(".")[-1] for n in ast.walk(tree)
                                         if isinstance(n, ast.ImportFrom) and n.module}
        assert not (imported & banned), (mod, imported & banned)
        assert "_group_cols" not in (root / mod).read_text()


def test_fsray_report_on_the_shipped_example(monkeypatch, capsys):
    """examples/ holds a researcher-format summary and search records written by the project."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    code, out, err = run_cli(monkeypatch, capsys, examples)
    assert code == 0, err
    assert "kvretrieval/qafter L=128" in out and "head_l1 bsz=64" in out
    assert "verdict (δ=0.01)" in out
    for name in ("_summary_kvretrieval_qafter_example_r1_s01234.txt",
                 "_round1_example_search_records.jsonl"):
        assert (examples / name).exists()


def test_verdicts_on_the_researchers_files(upstream_dir):
    """Legacy import: every block gets a verdict; at 3-5 seeds the researchers' blocks are
    undecided (punctuation R29: 5/5 positive, 3 more seeds would say helps) or no-op, except the
    two sudoku 4x4 blocks whose 3 deltas lie within +-0.005 at a spread of 0.001-0.0015: the
    SPRT rules out an effect of 0.01 there (the alpha spending could not at 3 seeds)."""
    rep = build(load(upstream_dir), ReportOptions(n_resamples=200))
    s = rep.summary
    assert s["verdict"].notna().all() and set(s["verdict"]) <= {"undecided", "no-op", "no effect"}
    assert set(s.loc[s["verdict"] == "no effect", "task"]) == {"sudoku4/prefix", "sudoku4/suffix"}
    punc = s[(s["task"] == "punc_restore") & (s["config"] == "head_l8 bsz=2")].iloc[0]
    assert (punc["n"], punc["verdict"], punc["would_decide"]) == (5, "undecided", "helps")
    assert punc["seeds_to_decide"] == 3
    arc = s[s["task"].str.startswith("arc/optionsfirst")]
    assert len(arc) == 6 and set(arc["verdict"]) == {"undecided"}
    # lstart 12 on the 12-layer model: exactly 0 on every seed, A/A evidence, never the best
    noop = s[s["config"].str.contains("lstart12")]
    assert len(noop) and set(noop["verdict"]) == {"no-op"}
    assert all(f["top"] is None or "lstart12" not in f["top"] for f in rep.families)


def test_html_opens_with_the_answer_and_hides_the_other_columns(report):
    """Issue 22: the headline block comes first (one sentence per family with its verdict counts,
    the best candidate, what to run next); the main columns show, the rest carry class "more"
    (shown by the CSS toggle); the plots name configurations by the table's ids, with their key
    beside them; the legend stays in the page."""
    page = render(report, "html")
    body = page.split("<body>", 1)[1]
    assert body.lstrip().startswith("<section id='headline'>")
    head = body.split("</section>", 1)[0]
    for fam in report.families:
        assert f"<b>{fam['task']} [{fam['stage']}]</b>" in head
    assert "best candidate: C1 " in head and "<b>next:</b>" in head
    assert body.index("</section>") < body.index("<table>") < body.index("How to read this report")
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", page, re.S).group(1)
    shown = re.findall(r"<th(?: class='label')?>([^<]*)</th>", header)
    hidden = re.findall(r"<th class='more'>([^<]*)</th>", header)
    assert shown[:2] == ["id", "stage"] and "config" in shown and "verdict (δ=0.01)" in shown
    assert {"std", "Wilcoxon p", "Holm", "BH", "seeds@80%"} <= set(hidden)
    assert "task" not in shown + hidden   # one task: said in the heading instead
    assert "#allcols:checked~.wrap .more{display:table-cell}" in page and "<script" not in page
    # each plot's key lists the ids it shows, with the configuration
    keys = re.findall(r"<ul class='key'>(.*?)</ul>", page, re.S)
    assert len(keys) == 3
    for cid, cfg in zip(report.summary["config_id"], report.summary["config"]):
        assert f"<li><b>{cid}</b> {cfg}</li>" in keys[0]
