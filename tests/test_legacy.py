"""analysis.legacy: the researchers' three shapes, and every paired block of their real files held to
its own printed figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis import legacy
from analysis.loaders import load


# -------------------------------------------------------------------------------------------------
# the real fixtures: every paired block against its own printed figures


def _all_blocks(upstream: Path) -> list[legacy.PairedBlock]:
    blocks = []
    for path in sorted(upstream.iterdir()):
        blocks.extend(legacy.parse_file(path).blocks)
    return blocks


def test_every_fixture_block_matches_its_printed_figures(upstream_dir):
    blocks = _all_blocks(upstream_dir)
    # 40 files of L= blocks (longfill files hold 3 each) plus the two seed-check rounds' 3 blocks.
    assert len(blocks) >= 45
    checked = {"mean": 0, "std": 0, "sign": 0}
    for b in blocks:
        fig = legacy.recompute_block(b)
        where = f"{Path(b.source).name}:{b.line} ({b.label})"
        assert fig["pairs"] == b.printed["pairs"], where
        for key, printed in b.printed.items():
            if key.startswith(("mean_", "std_")):
                # per-seed values are printed to 4 decimals (0.01pp), the figures from full precision
                assert abs(fig[key] - printed) <= 1.5e-4, f"{where}: {key} {fig[key]} vs {printed}"
                checked[key.split("_")[0]] += 1
            elif key.startswith("sign_"):
                assert fig[key] == printed, f"{where}: {key}"
                checked["sign"] += 1
    # every metric the files print was held: d_acc mean/std everywhere, d_loss, d_seq, signs
    assert checked["mean"] >= 80 and checked["std"] >= 80 and checked["sign"] >= 60


def test_fixture_blocks_cover_every_paired_summary(upstream_dir):
    """No paired-block file is silently dropped: each one with a 'pairs=' line yields its blocks."""
    for path in sorted(upstream_dir.glob("_summary_*.txt")):
        n_heads = sum(1 for ln in path.read_text().splitlines() if legacy._BLOCK_HEAD.match(ln))
        lf = legacy.parse_file(path)
        assert len([b for b in lf.blocks if b.label.startswith(("L=", "all"))]) == n_heads, path.name
        assert lf.problems == [], path.name


def test_spec_table_figures_recovered(upstream_dir):
    """docs/DESIGN.md §5's table, recomputed from the seed lines."""
    blocks = {(Path(b.source).name, b.label): legacy.recompute_block(b)
              for b in _all_blocks(upstream_dir)}
    arc = blocks[("_summary_arc_optionsfirst_stabilized_r2.txt", "L=512")]
    assert arc["mean_d_acc"] == pytest.approx(0.0339, abs=1.5e-4)
    assert (arc["sign_pos"], arc["sign_zero"], arc["sign_neg"]) == (3, 0, 0)
    sud = blocks[("_summary_sudoku9_suffix_r1_s012.txt", "all")]
    assert sud["mean_d_acc"] == pytest.approx(-0.2861, abs=1.5e-4)
    punc = blocks[("_summary_round29_punc_seed5_s01234.txt", "quick")]
    assert punc["mean_d_acc"] == pytest.approx(0.0133, abs=1.5e-4) and punc["sign_pos"] == 5


def test_aggregate_agrees_with_summaries(upstream_dir):
    files = [legacy.parse_file(p) for p in sorted(upstream_dir.iterdir())]
    agg = [f for f in files if f.shape == "aggregate"]
    assert agg and len(agg[0].aggregates) > 30
    assert legacy.cross_check_aggregates(files) == []


# -------------------------------------------------------------------------------------------------
# shapes, on small files written here

PAIRED = """filter: {'ds': 'ai2_arc', 'q_first': False, 'fs_layer_start': 6, 'alpha_init': -2.0}
==========================================================================================
L=512 pairs=3 mean d_acc=+0.0100 std=0.0082 | mean d_loss=-0.0100 std=0.0082 | sign(+/0/-)=2/1/0
  seed=0 d_acc=+0.0200 (no=0.3000 fs=0.3200) d_loss=-0.0200
  seed=1 d_acc=+0.0100 (no=0.3000 fs=0.3100) d_loss=-0.0100
  seed=2 d_acc=+0.0000 (no=0.3000 fs=0.3000) d_loss=+0.0000
==========================================================================================
L=1024 pairs=2 mean d_acc=-0.0050 std=0.0050 | mean d_seq=+0.5000 std=0.5000 | mean d_loss=+0.0000 std=0.0000
  seed=0 d_acc=+0.0000 d_seq=+0.0000 (tok no=0.2000 fs=0.2000; seq no=0.0000 fs=0.0000) d_loss=+0.0000
  seed=1 d_acc=-0.0100 d_seq=+1.0000 (tok no=0.2100 fs=0.2000; seq no=0.0000 fs=1.0000) d_loss=+0.0000
"""


def test_paired_blocks_parse(tmp_path):
    p = tmp_path / "_summary_arc_optionsfirst_myrun_s012.txt"
    p.write_text(PAIRED)
    lf = legacy.parse_file(p)
    assert lf.shape == "paired_blocks" and lf.problems == []
    assert [b.label for b in lf.blocks] == ["L=512", "L=1024"]
    assert lf.blocks[0].printed == {"pairs": 3, "mean_d_acc": 0.01, "std_d_acc": 0.0082,
                                    "mean_d_loss": -0.01, "std_d_loss": 0.0082, "sign_pos": 2,
                                    "sign_zero": 1, "sign_neg": 0}
    fig = legacy.recompute_block(lf.blocks[0])
    assert fig["mean_d_acc"] == pytest.approx(0.01)
    assert fig["std_d_acc"] == pytest.approx(np.std([0.02, 0.01, 0.0]))  # population std
    assert (fig["sign_pos"], fig["sign_zero"], fig["sign_neg"]) == (2, 1, 0)
    r = lf.rows[4]
    assert (r["task"], r["config"], r["seed"], r["stage"]) == ("arc/optionsfirst L=1024", "myrun", 1,
                                                               "import")
    assert (r["base_seq"], r["fs_seq"], r["d_seq"]) == (0.0, 1.0, 1.0)
    assert r["d_acc"] == pytest.approx(-0.01)
    assert legacy.recompute_block(lf.blocks[1])["mean_d_seq"] == pytest.approx(0.5)


def test_paired_block_truncated(tmp_path):
    p = tmp_path / "_summary_arc_optionsfirst_cut.txt"
    # header says 3 pairs; 2 seed lines, then the file ends half-way through the third
    p.write_text("\n".join(PAIRED.splitlines()[:5]) + "\n  seed=2 d_acc=+0.00")
    lf = legacy.parse_file(p)
    assert lf.problems == [
        f"{p}:6: seed line without 'no=... fs=...' accuracies; skipped",
        f"{p}:3: block L=512 says pairs=3 but has 2 seed lines (truncated file?)"]
    assert len(lf.rows) == 2


STAGED = [
    {"task": "mbpp", "stage": "probe", "config": "bsz", "status": "ok", "bsz": 2,
     "best_val_tok_acc": None, "best_val_loss": None},
    {"task": "mbpp", "stage": "quick", "config": "baseline", "status": "ok", "bsz": 2,
     "best_val_tok_acc": 0.10, "best_val_loss": 5.0},
    {"task": "mbpp", "stage": "quick", "config": "head_l8", "status": "ok", "bsz": 2,
     "best_val_tok_acc": 0.12, "best_val_loss": 4.9},
    {"task": "mbpp", "stage": "quick", "config": "scalar_l8", "status": "fail", "bsz": 2,
     "best_val_tok_acc": None, "best_val_loss": None, "error": "CUDA out of memory"},
    {"task": "mbpp", "stage": "med", "config": "head_l8", "status": "ok", "bsz": 2,
     "best_val_tok_acc": 0.25, "best_val_loss": 4.1},
    {"task": "sudoku", "stage": "quick", "config": "baseline", "status": "fail", "bsz": 8,
     "best_val_tok_acc": None, "best_val_loss": None, "error": "OOM"},
    {"task": "sudoku", "stage": "quick", "config": "head_l6", "status": "ok", "bsz": 8,
     "best_val_tok_acc": 0.5, "best_val_loss": 2.0},
]


def test_staged_records_pair_against_their_stage_baseline(tmp_path):
    p = tmp_path / "_round99_search_records.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in STAGED) + "\n")
    lf = legacy.parse_file(p)
    assert lf.shape == "staged_records"
    rows = {r["config"]: r for r in lf.rows}
    assert set(rows) == {"head_l8 bsz=2", "scalar_l8 bsz=2"}  # probe skipped, med not paired
    ok = rows["head_l8 bsz=2"]
    assert (ok["stage"], ok["seed"], ok["task"]) == ("selection", 0, "mbpp")
    assert ok["d_acc"] == pytest.approx(0.02) and ok["d_loss"] == pytest.approx(-0.1)
    failed = rows["scalar_l8 bsz=2"]
    assert failed["status"] == "failed" and failed["failure"] == "CUDA out of memory"
    assert math.isnan(failed["d_acc"])
    notes = "\n".join(lf.notes)
    assert "mbpp stage med: 1 candidate run(s) not paired" in notes
    assert f"{p}:6: baseline of sudoku (quick) failed: OOM" in notes
    assert "sudoku stage quick: 1 candidate run(s) not paired: the stage lost its baseline" in notes
    assert "read as seed 0" in notes


STAGED_TEXT = """==========
Round99 summary (single seed)
==========
[protein]
  baseline quick: acc=25.00% loss=6.0000 bsz=8
    head_l10                 d_acc=+1.50pp acc=26.50%
    scalar_l10               d_acc=-0.50pp acc=24.50%
  med confirmed:
    head_l10                 d_acc=+5.00pp acc=30.00% loss=5.5000
----------
[hotpot]
  baseline quick: acc=0.0617 loss=16.4106 bsz=6
  quick candidates:
    scalar_l12               d_acc=+0.0000 acc=0.0617 [PRUNE]
    scalar_l10               d_acc=+0.0100 acc=0.0717 [KEEP]
----------
[mbpp]
  baseline failed or missing
"""


def test_staged_summary_text(tmp_path):
    p = tmp_path / "_summary_round99_x_s0.txt"
    p.write_text(STAGED_TEXT)
    lf = legacy.parse_file(p)
    assert lf.shape == "staged_summary" and lf.problems == []
    got = {(r["task"], r["config"]): (round(r["d_acc"], 6), r.get("pruned")) for r in lf.rows}
    assert got == {("protein", "head_l10 bsz=8"): (0.015, None),
                   ("protein", "scalar_l10 bsz=8"): (-0.005, None),
                   ("hotpot", "scalar_l12 bsz=6"): (0.0, True),
                   ("hotpot", "scalar_l10 bsz=6"): (0.01, False)}
    assert any("[mbpp] baseline failed or missing" in n for n in lf.notes)
    assert any("protein stage med: 1 candidate run(s) not paired" in n for n in lf.notes)


SWEEP = """====
seed=0 q_first=False n_train=512 lr=3e-05 alpha_init=-2.0
  no_fs      best_loss=16.0000@950 best_acc=0.0900@1150 last_loss=16.3 last_acc=0.07 dir=a
  prompt_fs  best_loss=15.7000@950 best_acc=0.1000@1600 last_loss=16.3 last_acc=0.08 dir=b
  DELTA(prompt_fs - no_fs): best_loss -0.3000 | best_acc +0.0100
====
seed=1 q_first=False n_train=512 lr=3e-05 alpha_init=-2.0
  no_fs      best_loss=16.0000@950 best_acc=0.0800@1150 last_loss=16.3 last_acc=0.07 dir=c
====
seed=0 q_first=True n_train=512 lr=5e-06 alpha_init=-2.0
  no_fs      best_loss=16.0000@950 best_acc=0.0800@1150 last_loss=16.3 last_acc=0.07 dir=c
  prompt_fs  best_loss=16.5000@950 best_acc=0.0700@1150 last_loss=16.3 last_acc=0.07 dir=d
"""


def test_single_run_sweep(tmp_path):
    p = tmp_path / "_summary_squad_mine.txt"
    p.write_text(SWEEP)
    lf = legacy.parse_file(p)
    assert lf.shape == "single_run_sweep"
    assert [(r["task"], r["config"], r["seed"]) for r in lf.rows] == [
        ("squad/qafter", "lr=3e-05", 0), ("squad/qfirst", "lr=5e-06", 0)]
    assert lf.rows[0]["d_acc"] == pytest.approx(0.01) and lf.rows[0]["d_loss"] == pytest.approx(-0.3)
    assert lf.notes == [f"{p}: 1 block(s) hold a single run, not a pair: lines 7 (no_fs)"]


def test_unrecognised_file_listed_as_skipped(tmp_path):
    p = tmp_path / "_summary_round30_embedding.txt"
    p.write_text("[baseline] R@1=1.17% R@5=3.12%\n[fs] R@1=0.78% R@5=3.12%\n")
    assert legacy.parse_file(p).skipped == "fits none of the researchers' result shapes"
    got = load(tmp_path)
    assert got.skipped and got.skipped[0].startswith(str(p))


def test_summary_rows_give_way_to_records_of_the_same_round(tmp_path):
    (tmp_path / "_summary_round99_x_s0.txt").write_text(STAGED_TEXT)
    (tmp_path / "_round99_search_records.jsonl").write_text(
        "\n".join(json.dumps(r) for r in STAGED) + "\n")
    got = load(tmp_path)
    assert set(got.df["source"]) == {str(tmp_path / "_round99_search_records.jsonl")}
    assert any("rows taken from _round99_search_records.jsonl" in n for n in got.notes)
