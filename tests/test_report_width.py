"""The terminal table fits the terminal's width (issue 12, item 4): the configuration, n, mean, CI
and verdict first, the rest while they fit, one line naming what was left out; ``--wide`` and the
md/html/csv/json formats keep every column."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import renderers
from analysis.loaders import load
from analysis.report import ReportOptions, build, render, table_rows
from analysis.renderers import render_table, table_columns, terminal_width
from test_loaders import fsray_record, write_store
from test_report import run_cli, search_records

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("search") / "run"
    write_store(d / "results.jsonl", search_records())
    return d


@pytest.fixture(scope="module")
def search(search_dir):
    """Two stages, one task, all-or-nothing seeds: the breakthrough columns are there."""
    return build(load(search_dir), ReportOptions(n_resamples=200))


@pytest.fixture(scope="module")
def example():
    """Two stages and three tasks (the shipped example)."""
    return build(load(EXAMPLES), ReportOptions(n_resamples=200))


def _table(text: str) -> list[str]:
    """The lines of the table: everything before the first blank line."""
    return text.split("\n\n", 1)[0].splitlines()


def _header(text: str) -> str:
    lines = _table(text)
    return next(ln for i, ln in enumerate(lines) if lines[i + 1].startswith("--"))


ROW = re.compile(r"^(C\d+) +(\S.*?)(?: {2,}|$)")


def _rows(lines: list[str]) -> list[tuple[str, str]]:
    """(id, printed label) of each configuration row of a fitted table."""
    return [(m.group(1), m.group(2)) for ln in lines if (m := ROW.match(ln))]


def _left_out(text: str) -> str:
    lines = _table(text)
    i = next((i for i, ln in enumerate(lines) if ln.startswith("not shown at ")), None)
    return "" if i is None else " ".join(lines[i:])


@pytest.mark.parametrize("width", [100, 80])
@pytest.mark.parametrize("which", ["search", "example"])
def test_every_line_of_the_table_fits_and_keeps_ci_and_verdict(which, width, request):
    report = request.getfixturevalue(which)
    text = render_table(report, width=width)
    lines = _table(text)
    assert lines and all(len(ln) <= width for ln in lines), max(lines, key=len)
    head = _header(text)
    for name in ("config", "n", "mean d_acc", "95% CI (t)", "verdict (δ=0.01)", "+/0/-"):
        assert name in head
    # every configuration is a row with its interval and verdict
    for _, r in report.summary.iterrows():
        ci = renderers._interval(r["ci_lo"], r["ci_hi"])
        assert any(ci in ln and str(r["verdict_label"]) in ln for ln in lines), ci
    # the answer closes the output; the legend, family statements and plan are behind explain
    assert text.rstrip().splitlines()[-1].startswith(("next: ", "  ", "    "))
    assert "\n== answer (δ=0.01)\n" in text and "family: " not in text
    explained = render_table(report, width=width, explain=True)
    assert "family: " in explained and "Seeds to add per configuration to decide" in explained
    # the verdict rule's legend line (its words depend on the design: SPRT or alpha spending)
    assert "'undecided (+k)'" in explained and "'undecided (+k)'" not in text


@pytest.mark.parametrize("width", [100, 80])
def test_left_out_line_names_every_dropped_column(search, width):
    text = render_table(search, width=width)
    head = _header(text)
    note = _left_out(text)
    assert note.startswith(f"not shown at {width} columns: ") and "--wide" in note
    assert "md/html/csv/json" in note
    for col in table_columns(search):
        if col.key in ("stage", "task", "config"):
            continue
        # each column is either in the header or named as left out
        assert (col.header in head) != (col.name in note.split(": ", 1)[1].split(" (--wide")[0]
                                        .split(", ")), col.name
    # at 80 columns the wide breakthrough columns cannot be there
    assert "breakthrough" in note and "given both learned" in note


def test_wide_prints_every_column_as_before(search):
    header, rows = table_rows(search)
    text = render_table(search, wide=True)
    assert _header(text).split() == "  ".join(header).split()
    assert _left_out(text) == ""
    for row in rows:
        assert any(row[2] in ln and row[-1] in ln for ln in _table(text))
    # the same with any width: wide wins
    assert render_table(search, width=60, wide=True) == text
    assert render(search, "table", wide=True) == text


def test_all_columns_fit_a_wide_terminal(search):
    text = render_table(search, width=400)
    assert _left_out(text) == ""
    head = _header(text)
    for col in table_columns(search):
        if col.key not in ("stage", "task"):
            assert col.header in head
    assert "stage" not in head.split() and "task" not in head.split()


def test_one_task_is_said_once_above_and_stages_become_group_headers(search):
    lines = _table(render_table(search, width=100))
    assert lines[0] == "task kv/query_after"
    assert "stage selection:" in lines and "stage confirmation:" in lines
    sel, conf = lines.index("stage selection:"), lines.index("stage confirmation:")
    assert conf - sel - 1 == 4 and len(lines[conf + 1:]) >= 1  # 4 selected, then the confirmation
    # the confirmed configuration keeps its selection id
    (cid, label), = _rows(lines[conf + 1: conf + 2])
    assert label == "alpha=-3" and (cid, label) in _rows(lines[sel + 1: conf])


def test_several_tasks_keep_the_order_within_each_family(example):
    lines = _table(render_table(example, width=100))
    assert "task kv_retrieval, stage selection:" in lines
    assert "task kvretrieval/qafter L=128, stage import:" in lines
    s = example.summary
    sel = s[s["stage"] == "selection"]["config"].tolist()
    i = lines.index("task kv_retrieval, stage selection:")
    assert [label for _, label in _rows(lines[i + 1: i + 1 + len(sel)])] == sel


def _long_labels(tmp_path, labels):
    recs = [fsray_record(s, 0.5, 0.5 + 0.01 * s + 0.003 * c, config_hash=f"{c:012x}", label=lab)
            for c, lab in enumerate(labels) for s in range(3)]
    return build(load(write_store(tmp_path / "results.jsonl", recs)), ReportOptions(n_resamples=200))


def test_a_long_configuration_label_is_cut_not_wrapped(tmp_path):
    long = "fs_layer_start=4 fs_alpha_schedule=cosine alpha_init=-2.5 alpha_lr=0.001 " * 3
    rep = _long_labels(tmp_path, [long.strip(), "alpha_init=-1"])
    text = render_table(rep, width=80)
    lines = _table(text)
    assert all(len(ln) <= 80 for ln in lines)
    cid, label = next(r for r in _rows(lines) if r[1].startswith("fs_layer_start="))
    row = rep.summary[rep.summary["config_id"] == cid].iloc[0]
    assert label.endswith("…") and str(row["verdict_label"]) in next(
        ln for ln in lines if ln.startswith(cid + " "))
    assert not any(ln.startswith(("alpha_lr", "fs_alpha_schedule")) for ln in lines)  # no wrap
    # the whole label is given once, by its id, in the key under the table (wrapped there)
    key = " ".join(" ".join(lines[lines.index("key (labels cut above):") + 1:]).split())
    assert f"{cid} {long.strip()}" in key


def test_knobs_shared_by_every_label_are_said_once(tmp_path):
    common = "fs_layer_start=4 fs_alpha_schedule=cosine alpha_lr=0.001 gate=sigmoid width=768"
    rep = _long_labels(tmp_path, [f"alpha_init=-{c} {common}" for c in range(3)])
    lines = _table(render_table(rep, width=80))
    assert "every configuration: " + common in " ".join(" ".join(lines).split())  # wrapped
    assert [label for _, label in _rows(lines)] == ["alpha_init=-2", "alpha_init=-1", "alpha_init=-0"]
    assert all(len(ln) <= 80 for ln in lines) and "key (labels cut above):" not in lines
    # said once even when every label would fit
    wide_lines = _table(render_table(rep, width=400))
    assert "every configuration: " + common in wide_lines


MIDDLE = ("fs_layer_start=4 fs_alpha_schedule=cosine alpha_init=-2.15 {} fs_norm=True "
          "fs_detach=False fs_clip=1.0 fs_gate=sigmoid")


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 160, 240])
def test_labels_that_differ_only_in_the_middle_never_print_alike(tmp_path, width):
    """Issue 22: two configurations printed as the same "alpha_init=-2.15… fs_detach=False". Each
    row now has its id, every id is a different configuration, and a cut label is given whole in
    the key by that id."""
    labels = [MIDDLE.format(v) for v in ("fs_variant=head", "fs_variant=scalar", "fs_variant=gate")]
    rep = _long_labels(tmp_path, labels)
    lines = _table(render_table(rep, width=width))
    assert all(len(ln) <= width for ln in lines), max(lines, key=len)
    rows = _rows(lines)
    assert len(rows) == 3 and len({cid for cid, _ in rows}) == 3
    if "key (labels cut above):" in lines:
        key = " ".join(" ".join(lines[lines.index("key (labels cut above):") + 1:]).split())
    else:
        key = ""
    by_id = dict(zip(rep.summary["config_id"], rep.summary["config"]))
    shared = "fs_layer_start=4 fs_alpha_schedule=cosine alpha_init=-2.15 fs_norm=True fs_detach=False fs_clip=1.0 fs_gate=sigmoid"
    for cid, label in rows:
        whole = by_id[cid]
        # what tells them apart is never lost: printed in full, or in the key by the row's id
        shown = " ".join(w for w in whole.split() if w not in shared.split())
        assert shown in label or f"{cid} {shown}" in key or f"{cid} {whole}" in key, (cid, label)
    # the shared knobs are said once above the table, not on every row
    assert "every configuration:" in " ".join(lines)


def test_look_alike_hash_suffix_survives_the_cut():
    assert renderers._truncate_label("a" * 30 + " #abcdef", 16) == "a" * 7 + "… #abcdef"
    assert renderers._truncate_label("short", 16) == "short"


def test_ids_are_the_same_in_the_table_the_plots_and_the_answer(search):
    """One configuration, one id: its selection and confirmation rows, the HTML plots' key and the
    closing answer all name it so."""
    s = search.summary
    ids = dict(zip(zip(s["stage"], s["config_hash"]), s["config_id"]))
    for h in set(s["config_hash"]):
        assert len({v for (st, hh), v in ids.items() if hh == h}) == 1
    assert len(set(s["config_id"])) == s["config_hash"].nunique()
    page = render(search, "html")
    for cid in s["config_id"]:
        assert f"<li><b>{cid}</b>" in page
    from analysis.answer import answer

    best = answer(search).best[0]
    assert best.config_id == s.iloc[0]["config_id"] and best.stage == "confirmation"


def test_default_width_is_the_terminal_and_no_terminal_prints_every_column(search, monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    assert terminal_width() == 90
    narrow = render(search, "table")
    assert all(len(ln) <= 90 for ln in _table(narrow)) and "not shown at 90 columns" in narrow
    monkeypatch.delenv("COLUMNS")
    for name in ("stdout", "__stdout__", "stderr", "__stderr__"):
        monkeypatch.setattr(sys, name, io.StringIO())
    assert terminal_width() is None
    # no terminal (a log, CI): fitted to 120 columns as on a terminal of that width, not 260 wide
    text = render(search, "table")
    assert text == render_table(search, width=renderers.NO_TERMINAL_WIDTH)
    assert all(len(ln) <= 120 for ln in text.splitlines() if not ln.startswith("  fsray "))


def test_other_formats_keep_every_column_whatever_the_width(search, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    header, _ = table_rows(search)
    md = render(search, "md")
    assert all(h.replace("|", "\\|") in md for h in header)
    page = render(search, "html")
    assert all(h in page for h in ("Wilcoxon p", "seeds@80%", "given both learned", "flags"))
    csv_df = pd.read_csv(io.StringIO(render(search, "csv")))
    doc = json.loads(render(search, "json"))
    for col in ("std", "sign_p", "wilcoxon_p_holm", "wilcoxon_p_bh", "seeds_needed", "verdict",
                "bt_mcnemar_p", "bt_quality_mean"):
        assert col in csv_df.columns and col in doc["summary"][0]


def test_fsray_report_wide_flag(monkeypatch, capsys, search_dir, tmp_path):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(monkeypatch, capsys, search_dir)
    assert code == 0 and all(len(ln) <= 80 for ln in _table(out))
    assert "not shown at 80 columns" in out and "Wilcoxon p" not in _header(out)
    code, out, _ = run_cli(monkeypatch, capsys, search_dir, "--wide")
    head = _header(out)
    assert code == 0 and "not shown at" not in out
    assert all(h in head for h in ("stage", "task", "Wilcoxon p", "breakthrough", "flags"))
    # a table written to a file has every column
    code, _, _ = run_cli(monkeypatch, capsys, search_dir, "--out", tmp_path / "t.txt")
    assert code == 0 and "Wilcoxon p" in _header((tmp_path / "t.txt").read_text())


def test_tune_end_of_search_report_fits_and_takes_wide(monkeypatch, capsys, search_dir, tmp_path):
    """fsray tune's closing table (fsray.commands.tune.write_stability_report)."""
    from fsray.commands.tune import write_stability_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_bytes((search_dir / "results.jsonl").read_bytes())
    monkeypatch.setenv("COLUMNS", "80")
    assert write_stability_report(run) == run / "report.html"
    out = capsys.readouterr().out
    table = out.split("\n== stability report", 1)[1].split("\n", 1)[1]
    assert all(len(ln) <= 80 for ln in _table(table)) and "not shown at 80 columns" in table
    write_stability_report(run, wide=True)
    table = capsys.readouterr().out.split("\n== stability report", 1)[1].split("\n", 1)[1]
    assert "Wilcoxon p" in _header(table) and "not shown at" not in table
    assert "given both learned" in (run / "report.html").read_text()


def test_narrow_terminals_still_fit(search):
    for width in (60, 40, 20):
        lines = _table(render_table(search, width=width))
        assert all(len(ln) <= width for ln in lines), (width, max(lines, key=len))
        assert "config" in _header(render_table(search, width=width))
    assert all(len(ln) <= 20 for ln in _table(render_table(search, width=1)))  # clamped to 20
