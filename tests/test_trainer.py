"""The paired trainer: data layout, pairing, determinism, FS on/off, divergence, bad settings, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from analysis.schema import read_records, validate_record
from fsray.data import TrainStream, collate, eval_batches, worker_slice
from fsray.errors import UsageError
from fsray.fsconfig import FSConfig
from fsray.tasks import Example
from fsray.spec import TrainSpec, baseline_key, embedded_default_spec
from fsray.trainer import AnswerScorer, _answer_stats, initial_model, make_record, run_mode, state_digest

TINY = {
    "model": {"n_layer": 2, "d_model": 32, "head_size": 8},
    "budget": {"steps": 4, "batch_size": 16, "eval_every": 2, "warmup": 1, "lr": 3e-3},
    "data": {"n_train": 64, "n_val": 32, "eval_batch_size": 32},
    "wkv_backend": "torch",
}
FS_ON = FSConfig(fs_layer_start=1, alpha_init=0.0, fs_detach=False, alpha_lr=1e-2)


def tiny(**over) -> TrainSpec:
    d = json.loads(json.dumps(TINY))
    for section, values in over.items():
        if isinstance(values, dict):
            d.setdefault(section, {}).update(values)
        else:
            d[section] = values
    return TrainSpec.model_validate(d)


def _metrics(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds", "mode")}


# ----------------------------------------------------------------------------- data layout
def test_collate_left_pads_prompts_and_right_pads_answers():
    b = collate([Example([5, 6, 7], [1]), Example([9], [2, 3, 4])], pad_id=0)
    assert b.prompt.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert b.prompt_mask.tolist() == [[True, True, True], [False, False, True]]
    assert b.answer.tolist() == [[1, 0, 0], [2, 3, 4]]
    assert b.answer_mask.tolist() == [[True, False, False], [True, True, True]]
    assert b.n_tokens == 4 + 4 and b.n_answer_tokens == 4


def test_stream_is_deterministic_epoch_shuffled_and_split_across_workers():
    s1, s2 = TrainStream(10, 4, seed=3), TrainStream(10, 4, seed=3)
    steps = [s1.batch_indices(i) for i in range(6)]
    assert steps == [s2.batch_indices(i) for i in range(6)]
    assert steps != [TrainStream(10, 4, seed=4).batch_indices(i) for i in range(6)]
    # two full batches per epoch, distinct examples within an epoch, a new order next epoch
    assert len(set(steps[0] + steps[1])) == 8
    assert steps[0] + steps[1] != steps[2] + steps[3]
    for idx in steps:
        for world in (1, 2, 3):
            parts = [worker_slice(idx, r, world) for r in range(world)]
            assert sum(parts, []) == idx
    with pytest.raises(UsageError, match="batch_size"):
        TrainStream(3, 4, seed=0)
    assert eval_batches(5, 2) == [[0, 1], [2, 3], [4]]


def test_left_padding_does_not_change_an_examples_loss_or_accuracy():
    spec = tiny()
    model = initial_model(spec, 0, 256).eval()
    scorer = AnswerScorer(model, None)
    short = Example([ord(c) for c in "a:1\nQ:a\nA:"], [ord("1"), ord("\n")])
    long = Example([ord(c) for c in "a:1 b:22 c:3 d:44\nQ:d\nA:"], [ord("4"), ord("4"), ord("\n")])
    with torch.no_grad():
        alone = collate([short])
        ce1, c1, n1, s1 = _answer_stats(scorer(alone.prompt, alone.prompt_mask, alone.answer), alone)
        both = collate([long, short])
        logits = scorer(both.prompt, both.prompt_mask, both.answer)
        assert both.prompt_mask[1].sum() < both.prompt.shape[1]   # the short prompt is padded
        one = collate([short])   # the short example's slice of the padded batch
        one.prompt, one.prompt_mask = both.prompt[1:], both.prompt_mask[1:]
        one.answer, one.answer_mask = both.answer[1:], both.answer_mask[1:]
        ce2, c2, n2, s2 = _answer_stats(logits[1:], one)
    assert n1 == n2 == 2
    assert torch.allclose(ce1, ce2, atol=1e-5) and c1 == c2 and s1 == s2


# ----------------------------------------------------------------------------- pairing
def test_both_modes_start_from_the_same_weights_and_see_the_same_batches():
    spec = tiny()
    base = run_mode(spec, 1, None)
    fs = run_mode(spec, 1, FS_ON)
    assert base["init_hash"] == fs["init_hash"]
    assert base["data_hash"] == fs["data_hash"]
    assert base["mode"] == "no_fs" and fs["mode"] == "prompt_fs"
    # FS active: the runs differ; another seed: different init and data
    assert [c[2] for c in base["curve"]] != [c[2] for c in fs["curve"]]
    other = run_mode(spec, 2, None)
    assert other["init_hash"] != base["init_hash"] and other["data_hash"] != base["data_hash"]


def test_same_seed_twice_is_identical_and_a_noop_config_equals_no_fs():
    spec = tiny()
    a, b = run_mode(spec, 0, None), run_mode(spec, 0, None)
    assert _metrics(a) == _metrics(b)
    assert a["status"] == "ok" and a["steps"] == 4 and a["tokens"] > 0
    assert [c[0] for c in a["curve"]] == [2, 4]
    best = max(a["curve"], key=lambda c: c[1])
    assert (a["best_step"], a["token_acc"], a["loss"], a["seq_acc"]) == tuple(best)
    noop = FSConfig(fs_layer_start=2, alpha_lr=1e-3)   # 2 layers: nothing is seeded
    assert noop.is_noop(2)
    assert _metrics(run_mode(spec, 0, noop)) == _metrics(a)


def test_learned_flag_uses_the_task_chance_plus_margin():
    r = run_mode(tiny(learned_above=-1.0), 0, None)
    assert r["learned"] is True
    r = run_mode(tiny(learned_above=1.0), 0, None)
    assert r["learned"] is False


# ----------------------------------------------------------------------------- failures
def test_a_diverging_run_is_failed_with_its_reason_not_an_exception():
    r = run_mode(tiny(budget={"lr": 1e6, "grad_clip": 0.0, "warmup": 0, "steps": 30, "eval_every": 30}), 0, None)
    assert r["status"] == "failed"
    assert "diverged" in r["failure"]
    rec = make_record(tiny(), FS_ON, 0, r, run_mode(tiny(), 0, FS_ON), stage="train")
    assert rec["status"] == "failed" and "no_fs" in rec["failure"]


@pytest.mark.parametrize("over, match", [
    ({"data": {"n_train": 8}}, "batch_size"),
    ({"task": {"name": "kv_retrieval", "options": {"max_prompt_len": 10}}}, "max_prompt_len"),
    ({"task": {"name": "no_such_task", "options": {}}}, "unknown task"),
    ({"task": {"name": "kv_retrieval", "options": {"n_pairs": "30-40"}}}, "n_pairs"),
])
def test_impossible_settings_raise_usage_error_before_training(over, match):
    with pytest.raises(UsageError, match=match):
        run_mode(tiny(**over), 0, None)


def test_spec_rejects_unknown_fields():
    with pytest.raises(Exception, match="extra"):
        TrainSpec.model_validate({"budget": {"stepz": 3}})


# ----------------------------------------------------------------------------- records
def test_records_and_baseline_key():
    spec = tiny()
    base, fs = run_mode(spec, 0, None), run_mode(spec, 0, FS_ON)
    rec = validate_record(make_record(spec, FS_ON, 0, base, fs, stage="selection", trial_id="t1"))
    assert rec["status"] == "ok" and rec["task"] == "kv_retrieval"
    assert rec["chance"]["seq_acc"] > 0 and rec["baseline"]["mode"] == "no_fs"
    noop = make_record(spec, FSConfig(fs_layer_start=5), 0, base, None, "selection", noop_reason="no layer")
    assert noop["status"] == "noop" and noop["fs"]["token_acc"] == base["token_acc"]
    k = baseline_key(spec, 0)
    assert k == baseline_key(tiny(), 0)
    assert k != baseline_key(spec, 1)
    assert k != baseline_key(tiny(budget={"steps": 5}), 0)
    assert k != baseline_key(tiny(task={"name": "kv_retrieval", "options": {"order": "query_first"}}), 0)


def test_embedded_default_is_a_valid_spec_with_both_orders():
    after, first = embedded_default_spec("query_after"), embedded_default_spec("query_first")
    assert after.task.options["order"] == "query_after" and first.task.options["order"] == "query_first"
    assert after.model == first.model and after.budget == first.budget


def test_fsray_train_cli_writes_valid_records(tmp_path, capsys):
    from fsray.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps(TINY | {"seeds": [0]}))
    out = tmp_path / "runs" / "t" / "results.jsonl"
    code = main(["train", "--config", str(cfg), "--seeds", "0,1", "--fs-layer-start", "1",
                 "--alpha-init", "-1", "--out", str(out)])
    assert code == 0
    got = read_records(out)
    assert not got.problems and [r["seed"] for r in got.records] == [0, 1]
    assert all(r["stage"] == "train" and r["config"]["alpha_init"] == -1 for r in got.records)
    text = capsys.readouterr().out
    assert "tok/s" in text and "d_acc" in text
    assert main(["train", "--config", str(cfg), "--steps", "0", "--out", str(out)]) == 2
    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(out)]) == 2


def test_pretrain_writes_a_loadable_base_and_the_trainer_post_trains_it(tmp_path):
    import random

    from fsray.checkpoint import load_blinkdl
    from fsray.pretrain import generic_text, pretrain

    text = generic_text(random.Random(0), 2000)
    assert text == generic_text(random.Random(0), 2000) and "Q:" not in text
    path = tmp_path / "base.pth"
    model, loss = pretrain(n_layer=2, d_model=32, head_size=8, steps=3, batch_size=4, seq_len=16,
                           out=path, log=None)
    assert math.isfinite(loss)
    loaded = load_blinkdl(path)
    assert state_digest(loaded) == state_digest(model)
    spec = tiny(model={"checkpoint": str(path)})
    a, b = run_mode(spec, 0, None), run_mode(spec, 1, None)
    assert a["init_hash"] == b["init_hash"] == state_digest(model)   # seeds share the pretrained init
    assert a["data_hash"] != b["data_hash"]
    with pytest.raises(UsageError, match="not found"):
        run_mode(tiny(model={"checkpoint": str(tmp_path / "missing.pth")}), 0, None)
