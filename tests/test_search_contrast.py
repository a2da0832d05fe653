"""A search's contrast field: parsed and validated in fsray.search.space, the simulated trainable's
per-level effects, and the contrast settling loop (fsray.search.contrast) reaching the right
verdict on the simulated surface in seconds; `fsray report --contrast` replays the same verdict."""

from __future__ import annotations

import json

import pytest
import yaml

from analysis.loaders import load
from analysis import contrast as acontrast
from fsray.errors import UsageError
from fsray.search.contrast import settle_contrast
from fsray.search.evaluate import SimulatedRunner
from fsray.search.simulated import baseline_run, true_effect
from fsray.search.space import parse_space
from fsray.search.store import ResultsStore

BASE = {
    "name": "sim_contrast", "trainable": "simulated",
    "task": {"name": "kv_retrieval", "options": {"order": "query_after"}},
    "seeds": {"count": 3},
    "space": {"fs_layer_start": {"type": "int", "low": 1, "high": 12}},
    "fixed": {"fs_clip": 1.0},
    "settle": {"enabled": True, "round_size": 2, "max_seeds_per_config": 16},
    "contrast": {"order": ["query_after", "query_first"]},
    "simulated": {"n_layer": 12, "noise_sd": 0.003,
                  "effects": {"fs_layer_start": {"peak": 8, "width": 2.5, "height": 0.03}},
                  "level_effects": {"order": {"query_after": 0.0}}},
}


def _space(**over):
    raw = json.loads(json.dumps(BASE))
    for k, v in over.items():
        raw[k] = v
    return parse_space(raw)


def test_contrast_field_parses_and_sets_the_level():
    s = _space()
    assert s.contrast.key == "order" and s.contrast.levels == ("query_after", "query_first")
    b = s.at_level("query_first")
    assert b.task.options["order"] == "query_first" and b.contrast is None
    assert s.task.options["order"] == "query_after"     # the search itself unchanged


@pytest.mark.parametrize("contrast,says", [
    ({"order": ["query_after"]}, "exactly two levels"),
    ({"order": ["query_after", "query_after"]}, "the two levels are the same"),
    ({"order": ["query_after", "sideways"]}, "order='sideways'"),
    ({"alpha_init": [-2, -3]}, "is an FS knob"),
    ({"order": ["a", "b"], "n_pairs": ["1", "2"]}, "name one task option"),
])
def test_bad_contrast_field_is_one_line(contrast, says):
    with pytest.raises(UsageError) as exc:
        _space(contrast=contrast)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_simulated_levels_have_their_own_baselines_and_effects():
    s = _space(simulated={**BASE["simulated"], "level_effects": {"order": {"query_after": 0.02}}})
    sim = s.simulated
    cfg = s.fs_config({"fs_layer_start": 8})
    a, b = s.at_level("query_after"), s.at_level("query_first")
    assert true_effect(sim, cfg, a.task.options) - true_effect(sim, cfg, b.task.options) == pytest.approx(0.02)
    ra, rb = SimulatedRunner(a), SimulatedRunner(b)
    assert ra.baseline_key(0) != rb.baseline_key(0)
    assert baseline_run(sim, 0, a.task.options)["token_acc"] != baseline_run(sim, 0, b.task.options)["token_acc"]
    assert baseline_run(sim, 0, a.task.options)["init_hash"] == baseline_run(sim, 0, b.task.options)["init_hash"]


def _settle(tmp_path, space, shortlist):
    levels = {}
    for lv in space.contrast.levels:
        d = tmp_path / f"{space.contrast.key}={lv}"
        store = ResultsStore(str(d), str(tmp_path / "cache"), space.objective.model_dump())
        levels[lv] = (SimulatedRunner(space.at_level(lv)), store, d)
    lines = []
    return settle_contrast(space, shortlist, levels, say=lines.append), lines, [levels[lv][2] for lv in levels]


@pytest.mark.parametrize("extra,want", [(0.03, "differs"), (0.0, "same within delta")])
def test_contrast_settles_to_the_true_verdict(tmp_path, extra, want):
    space = _space(simulated={**BASE["simulated"], "level_effects": {"order": {"query_after": extra}}})
    out, lines, dirs = _settle(tmp_path, space, [{"fs_layer_start": 8}])
    (row,) = out["configs"].values()
    assert row["verdict"] == want, lines
    assert row["pairing"] == acontrast.PAIRED              # shared seeds, same initial weights
    assert row["diff"] == pytest.approx(extra, abs=0.01)
    assert row["n_a"] == row["n_b"] < 16 and out["rounds"] == len(lines) >= 1
    # the report replays the same looks from the records and says the same
    data = load([str(d) for d in dirs]).df
    rep = acontrast.build(data[data["stage"] == "confirmation"],
                          acontrast.ContrastSpec("order", ("query_after", "query_first")),
                          horizon=16)
    assert rep.rows.iloc[0]["verdict"] == want
    assert rep.rows.iloc[0]["looks"] == row["looks"]
    # resuming a settled contrast runs nothing more
    again, lines2, _ = _settle(tmp_path, space, [{"fs_layer_start": 8}])
    assert again["new_rounds"] == 0 and again["rounds"] == out["rounds"] and lines2 == []


@pytest.mark.slow
def test_fsray_tune_settles_a_search_contrast_end_to_end(ray_local, tmp_path, monkeypatch, capsys):
    """`fsray tune FILE` with a contrast: selection at the first level, the shortlist at both
    levels until the contrast decides; `fsray report RUN --contrast order` says the same."""
    from fsray.cli import main

    raw = json.loads(json.dumps(BASE))
    raw.update({
        "seeds": {"count": 3}, "racing": {"enabled": False},
        "space": {"fs_layer_start": {"type": "categorical", "choices": [2, 8]}},
        "search": {"sampler": "random", "sampler_seed": 0, "trials": 2, "concurrency": 1},
        "settle": {"top_k": 1, "round_size": 2, "max_seeds_per_config": 16},
        "baseline_cache": str(tmp_path / "cache"),
    })
    raw["simulated"]["level_effects"] = {"order": {"query_after": 0.03}}
    path = tmp_path / "contrast.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["tune", str(path), "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    (row,) = summary["contrast"]["configs"].values()
    assert row["verdict"] == "differs" and row["diff"] > 0 and row["pairing"] == acontrast.PAIRED
    assert (run / "order=query_first" / "results.jsonl").exists()
    capsys.readouterr()
    assert main(["report", str(run), "--contrast", "order", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["contrasts"][0]["rows"]
    settled = [r for r in rows if r["stage"] == "confirmation"]
    assert len(settled) == 1 and settled[0]["verdict"] == "differs"
    assert settled[0]["p"] == pytest.approx(row["p"], rel=1e-9)
