"""Real-data task adapters on the fixture files (hub schemas, written by tests/make_fixtures.py)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from fsray.errors import UsageError
from fsray.tasks import get_task
from fsray.tasks.protein import ss_label
from fsray.tasks.punctuation import plain

from test_tasks import TOK, micro_acc, texts

DATA = Path(__file__).parent / "fixtures" / "data"
ARC_DIR = DATA / "ai2_arc" / "ARC-Challenge"
HOTPOT_DIR = DATA / "hotpot_qa" / "distractor"
MBPP_DIR = DATA / "mbpp" / "full"
SS_DIR = DATA / "protein_ss"
CONTACT_DIR = DATA / "protein_contact" / "data"
WIKI_DIR = DATA / "wikitext" / "wikitext-2-raw-v1"


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def keys(examples) -> set:
    return {(tuple(e.prompt), tuple(e.answer)) for e in examples}


# --- ARC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["options_first", "question_first"])
def test_arc_content_order_and_limit(order):
    rows = {r["question"]: r for r in read_parquet(ARC_DIR / "train-00000-of-00001.parquet")}
    task = get_task("arc", order=order, data_dir=str(ARC_DIR))
    examples = task.build(TOK, "train", 8, seed=0)
    for prompt, answer in texts(examples):
        question = re.search(r"Question: (.+)\n", prompt).group(1)
        row = rows[question]
        assert answer == row["answerKey"] + "\n"
        assert prompt.index("Options:") < prompt.index("Question:") if order == "options_first" \
            else prompt.index("Question:") < prompt.index("Options:")
        for label, text in zip(row["choices"]["label"], row["choices"]["text"]):
            assert f"\n{label}. {text}\n" in prompt
        assert prompt.endswith("\nAnswer:")
    assert {q for q in rows} == {re.search(r"Question: (.+)\n", p).group(1) for p, _ in texts(examples)}
    # a limit that only some rows fit: those are skipped, the rest kept
    lengths = sorted(len(e.prompt) for e in examples)
    short = get_task("arc", order=order, data_dir=str(ARC_DIR), max_prompt_len=lengths[3])
    assert all(len(e.prompt) <= lengths[3] for e in short.build(TOK, "train", 4, 0))
    with pytest.raises(UsageError, match="only 4 usable train examples"):
        short.build(TOK, "train", 5, 0)


def test_arc_determinism_disjoint_splits_and_data_files():
    task = get_task("arc", data_dir=str(ARC_DIR))
    a = task.build(TOK, "train", 8, seed=1)
    assert a == task.build(TOK, "train", 8, seed=1)
    assert [e.prompt for e in a] != [e.prompt for e in task.build(TOK, "train", 8, seed=2)]
    assert not keys(a) & keys(task.build(TOK, "val", 6, seed=1))
    by_files = get_task("arc", data_files={
        "train": str(ARC_DIR / "train-00000-of-00001.parquet"),
        "validation": str(ARC_DIR / "validation-00000-of-00001.parquet"),
    })
    assert by_files.build(TOK, "val", 6, seed=1) == task.build(TOK, "val", 6, seed=1)
    # one file holding every row: the splits are a hash partition of the rows
    single = get_task("arc", data_files=str(ARC_DIR / "train-00000-of-00001.parquet"))
    part_train, part_val = single.rows("train"), single.rows("val")
    assert len(part_train) + len(part_val) == 8 and part_train and part_val
    assert not {r["id"] for r in part_train} & {r["id"] for r in part_val}


def test_arc_chance_matches_monte_carlo():
    task = get_task("arc", data_dir=str(ARC_DIR))
    examples = task.build(TOK, "val", 6, seed=0)
    rng = random.Random(0)
    pairs = []
    for _ in range(400):
        for e in examples:
            labels = re.findall(r"\n(\w)\. ", "\n" + TOK.decode(e.prompt))
            pairs.append((TOK.encode(rng.choice(labels) + "\n"), e.answer))
    token_acc, seq_acc = micro_acc(pairs)
    chance = task.chance(TOK)
    assert chance["seq_acc"] == pytest.approx(0.25)
    assert seq_acc == pytest.approx(0.25, abs=0.04) and token_acc == pytest.approx(chance["token_acc"], abs=0.03)


# --- loading failures ----------------------------------------------------------------------------


def test_no_source_offline_is_one_usage_error_naming_both_ways(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as info:
        get_task("arc").build(TOK, "train", 2, 0)
    message = str(info.value)
    assert "allenai/ai2_arc" in message and "data_files" in message and "data_dir" in message
    assert "\n" not in message


@pytest.mark.parametrize("name,hub", [("hotpot", "hotpotqa/hotpot_qa"), ("mbpp", "google-research-datasets/mbpp"),
                                      ("protein_ss", "protein_secondary_structure_from_PDB"),
                                      ("punctuation", "Salesforce/wikitext")])
def test_missing_files_name_data_files_and_the_hub(name, hub, tmp_path):
    with pytest.raises(UsageError) as info:
        get_task(name, data_files=str(tmp_path / "absent.parquet")).build(TOK, "train", 2, 0)
    assert "data_files" in str(info.value) and hub in str(info.value) and "absent.parquet" in str(info.value)
    with pytest.raises(UsageError, match="data_dir"):
        get_task(name, data_dir=str(tmp_path / "nowhere")).build(TOK, "train", 2, 0)


def test_bad_files_are_usage_errors(tmp_path):
    odd = tmp_path / "rows.xml"
    odd.write_text("<rows/>")
    with pytest.raises(UsageError, match="unknown extension"):
        get_task("arc", data_files=str(odd)).build(TOK, "train", 2, 0)
    broken = tmp_path / "rows.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(UsageError, match="cannot read data_files"):
        get_task("arc", data_files=str(broken)).build(TOK, "train", 2, 0)


# --- HotpotQA ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["question_after", "question_first"])
def test_hotpot_gold_paragraphs_order_and_fill(order):
    rows = {r["question"]: r for r in read_parquet(HOTPOT_DIR / "validation-00000-of-00001.parquet")}
    task = get_task("hotpot", order=order, data_dir=str(HOTPOT_DIR), max_prompt_len=600)
    bare = get_task("hotpot", order=order, data_dir=str(HOTPOT_DIR), max_prompt_len=600, fill=False)
    filled, unfilled = task.build(TOK, "val", 3, seed=0), bare.build(TOK, "val", 3, seed=0)
    for (prompt, answer), (bare_prompt, _) in zip(texts(filled), texts(unfilled)):
        question = re.search(r"Question: (.+)\n", prompt).group(1)
        row = rows[question]
        assert answer == row["answer"] + "\n"
        assert prompt.startswith("Context:" if order == "question_after" else "Question:")
        for title in row["supporting_facts"]["title"]:
            assert f"\n{title}: " in "\n" + prompt
        assert len(bare_prompt) < 400 < len(prompt) <= 600  # other rows' paragraphs fill the budget
    tight = get_task("hotpot", data_dir=str(HOTPOT_DIR), max_prompt_len=120, fill=False)
    with pytest.raises(UsageError, match="max_prompt_len=120"):
        tight.build(TOK, "val", 3, 0)


# --- MBPP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["question_after", "question_first"])
def test_mbpp_notes_fill_to_the_limit(order):
    rows = {r["text"]: r for r in read_parquet(MBPP_DIR / "train-00000-of-00001.parquet")}
    task = get_task("mbpp", order=order, data_dir=str(MBPP_DIR), max_prompt_len=256)
    examples = task.build(TOK, "train", 6, seed=3)
    for e, (prompt, answer) in zip(examples, texts(examples)):
        row = rows[re.search(r"Task: (.+)\n", prompt).group(1)]
        assert len(e.prompt) == 256  # notes fill the prompt exactly
        assert answer == row["code"] + "\n"
        assert row["test_list"][0] in prompt
        assert row["code"] not in prompt  # the own solution never appears among the notes
        assert prompt.startswith("Notes:" if order == "question_after" else "Task:")
        assert prompt.endswith("Code:\n")
    assert task.build(TOK, "train", 6, seed=3) == examples
    assert not keys(examples) & keys(task.build(TOK, "val", 4, seed=3))


# --- proteins ------------------------------------------------------------------------------------


def locate(window: str, sequences: list[str]) -> tuple[int, int]:
    hits = [(i, s.find(window)) for i, s in enumerate(sequences) if window in s]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize("order", ["query_after", "query_first"])
@pytest.mark.parametrize("classes", [3, 8])
def test_protein_ss_label_at_the_queried_residue(order, classes):
    rows = [json.loads(l) for l in (SS_DIR / "train.jsonl").read_text().splitlines()]
    sequences = [r["Sequence"] for r in rows]
    task = get_task("protein_ss", order=order, classes=classes, data_dir=str(SS_DIR), max_seq_len=48)
    train, val = task.build(TOK, "train", 20, seed=0), task.build(TOK, "val", 6, seed=0)
    for prompt, answer in texts(train + val):
        window = re.search(r"Protein: ([A-Z]+)\n", prompt).group(1)
        position = int(re.search(r"Position: (\d+)", prompt).group(1))
        assert len(window) <= 48 and 1 <= position <= len(window)
        assert prompt.startswith("Protein:" if order == "query_after" else "Position:")
        row, offset = locate(window, sequences)
        symbol = rows[row]["Secondary_structure"][offset + position - 1]
        assert answer == ss_label(symbol, classes) + "\n"
        assert answer[0] in ("HEC" if classes == 3 else "HGIEBTSC")
    # one hub split: train and val are a partition of the rows
    rows_of = lambda exs: {locate(re.search(r"Protein: ([A-Z]+)\n", p).group(1), sequences)[0]
                           for p, _ in texts(exs)}
    assert not rows_of(train) & rows_of(val)
    chance = task.chance(TOK)
    assert chance["seq_acc"] == pytest.approx(1 / classes)


def test_protein_contact_answers_and_balance():
    rows = read_parquet(CONTACT_DIR / "train-00000-of-00001.parquet")
    sequences = [r["seq"] for r in rows]
    task = get_task("protein_contact", data_dir=str(CONTACT_DIR), max_seq_len=40)
    examples = task.build(TOK, "train", 40, seed=0)
    yes = 0
    for prompt, answer in texts(examples):
        window = re.search(r"Protein: ([A-Z]+)\n", prompt).group(1)
        i, j = map(int, re.search(r"residues (\d+) and (\d+) in contact", prompt).groups())
        row, offset = locate(window, sequences)
        contacts = {tuple(p) for p in rows[row]["label"]}
        assert j - i >= 6
        truth = (offset + i - 1, offset + j - 1) in contacts
        assert answer == ("yes\n" if truth else "no\n")
        yes += truth
    assert 10 <= yes <= 30  # balanced by construction (positive_share 0.5)
    first = get_task("protein_contact", data_dir=str(CONTACT_DIR), order="query_first")
    assert all(p.startswith("Are residues") for p, _ in texts(first.build(TOK, "val", 5, 0)))
    # "yes\n" and "no\n" share no position: E[matched] = (0.5 * 4 + 0.5 * 3) / 2, E[length] = 3.5
    assert task.chance(TOK) == pytest.approx({"token_acc": 0.5, "seq_acc": 0.5})
    with pytest.raises(UsageError, match="positive_share"):
        get_task("protein_contact", positive_share=1.5)


# --- punctuation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["instruction_after", "instruction_first"])
def test_punctuation_restores_the_original_span(order):
    task = get_task("punctuation", order=order, data_dir=str(WIKI_DIR), span_words="6-12")
    examples = task.build(TOK, "train", 12, seed=0)
    originals = " ".join(r["text"] for r in read_parquet(WIKI_DIR / "train-00000-of-00001.parquet"))
    for raw, clean in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" ,", ","), (" .", "."),
                       (" ;", ";"), (" :", ":"), (" 's", "'s"), ("  ", " ")):
        originals = originals.replace(raw, clean)
    for prompt, answer in texts(examples):
        source = re.search(r"Text: (.+)\n", prompt + "\n").group(1)
        span = answer.rstrip("\n")
        assert plain(span) == source and source != span
        assert source == source.lower() and not re.search(r"[^\w\s]", source)
        assert 6 <= len(span.split()) <= 12
        assert " @" not in span and " ," not in span  # wikitext spacing undone
        assert span in originals
        assert prompt.startswith("Text:" if order == "instruction_after" else "Restore")
    assert task.build(TOK, "train", 12, seed=0) == examples
    assert not keys(examples) & keys(task.build(TOK, "val", 4, seed=0))
    assert task.chance(TOK) is None


def test_protein_ss_chance_matches_monte_carlo():
    task = get_task("protein_ss", data_dir=str(SS_DIR))
    examples = task.build(TOK, "val", 10, seed=0)
    rng = random.Random(2)
    pairs = [(TOK.encode(rng.choice("HEC") + "\n"), e.answer) for e in examples for _ in range(100)]
    token_acc, seq_acc = micro_acc(pairs)
    chance = task.chance(TOK)
    # a uniform guess over H/E/C: the label is right 1/3 of the time, the newline always
    assert chance == pytest.approx({"token_acc": (1 / 3 + 1) / 2, "seq_acc": 1 / 3})
    assert seq_acc == pytest.approx(1 / 3, abs=0.05) and token_acc == pytest.approx(chance["token_acc"], abs=0.03)


def test_punctuation_prompt_limit_and_span_option():
    with pytest.raises(UsageError, match="max_prompt_len=60"):
        get_task("punctuation", data_dir=str(WIKI_DIR), max_prompt_len=60).build(TOK, "train", 2, 0)
    with pytest.raises(UsageError, match="span_words"):
        get_task("punctuation", span_words="1-3")
    with pytest.raises(UsageError, match="not both"):
        get_task("punctuation", data_dir=str(WIKI_DIR), data_files=str(WIKI_DIR / "x.parquet"))


def test_fixture_files_are_what_make_fixtures_writes(tmp_path):
    from make_fixtures import main   # tests/make_fixtures.py

    main([str(tmp_path)])
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file())
    assert written == committed
    for rel in written:
        if rel.suffix == ".parquet":
            assert read_parquet(tmp_path / rel) == read_parquet(DATA / rel)
        else:
            assert (tmp_path / rel).read_text() == (DATA / rel).read_text()


def test_hub_probe_answers_quickly_without_flags(monkeypatch):
    import socket
    import time

    from fsray.tasks import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with socket.socket() as listener:  # a reachable "hub"
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setattr(hub, "HUB_HOST", listener.getsockname())
        assert hub.hub_offline() is False
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    monkeypatch.setattr(hub, "HUB_HOST", closed.getsockname())  # bound, not listening: refused
    start = time.perf_counter()
    assert hub.hub_offline() is True
    closed.close()
    assert time.perf_counter() - start < 3.6
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub.hub_offline() is True


REAL = {  # name -> (options, n_train, n_val) that the fixtures can hold
    "arc": ({"data_dir": str(ARC_DIR)}, 6, 4),
    "hotpot": ({"data_dir": str(HOTPOT_DIR), "max_prompt_len": 400}, 4, 3),
    "mbpp": ({"data_dir": str(MBPP_DIR), "max_prompt_len": 300}, 5, 3),
    "protein_ss": ({"data_dir": str(SS_DIR), "max_seq_len": 40}, 12, 6),
    "protein_contact": ({"data_dir": str(CONTACT_DIR), "max_seq_len": 40}, 12, 6),
    "punctuation": ({"data_dir": str(WIKI_DIR)}, 10, 4),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_tasks_deterministic_disjoint_and_limited(name):
    options, n_train, n_val = REAL[name]
    task = get_task(name, **options)
    train = task.build(TOK, "train", n_train, seed=0)
    assert train == task.build(TOK, "train", n_train, seed=0)
    assert [e.prompt for e in train] != [e.prompt for e in task.build(TOK, "train", n_train, seed=1)]
    val = task.build(TOK, "val", n_val, seed=0)
    assert not keys(train) & keys(val)
    assert len(keys(train)) == n_train and all(e.prompt and e.answer for e in train + val)
    # the ordering option really moves the prompt's parts around
    other = get_task(name, **options, order=task.ORDERS[1]).build(TOK, "train", n_train, seed=0)
    assert {p.split("\n")[0][:5] for p, _ in texts(train)} != {p.split("\n")[0][:5] for p, _ in texts(other)}
    # a tighter limit is respected: every prompt fits, or one UsageError names the limit
    limit = sorted(len(e.prompt) for e in train)[len(train) // 2]
    tight = get_task(name, **{**options, "max_prompt_len": limit})
    try:
        assert all(len(e.prompt) <= limit for e in tight.build(TOK, "train", 2, seed=0))
    except UsageError as exc:
        assert f"max_prompt_len={limit}" in str(exc)


def test_files_in_another_schema_are_named_usage_errors(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"query": "q?", "options": ["a", "b"], "gold": 0}) + "\n")
    with pytest.raises(UsageError, match=r"lacks column\(s\) question, choices, answerKey of the allenai/ai2_arc"):
        get_task("arc", data_files=str(rows)).build(TOK, "train", 1, 0)
    odd = tmp_path / "odd.jsonl"  # the right columns holding the wrong types
    odd.write_text("".join(json.dumps({"question": "q?", "choices": ["a", "b"], "answerKey": "A",
                                        "n": i}) + "\n" for i in range(10)))
    with pytest.raises(UsageError, match="does not follow the allenai/ai2_arc schema"):
        get_task("arc", data_files=str(odd)).build(TOK, "train", 1, 0)
