"""Generated task adapters: content, ordering, limits, determinism, disjoint splits, chance."""

from __future__ import annotations

import json
import random
import re

import pytest

from fsray.errors import UsageError
from fsray.tasks import TASKS, Example, get_task


class Bytes:
    """A tiny byte tokenizer (the project's ByteTokenizer may add special ids; tasks only encode)."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8")


class Words:
    """A tokenizer with multi-character tokens: each run of digits, each letter run, each other
    character is one id, so token-level chance differs from the byte-level one."""

    vocab_size = 10_000

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.strs: list[str] = []

    def encode(self, text: str) -> list[int]:
        out = []
        for piece in re.findall(r"\d+|[A-Za-z]+|.", text, flags=re.S):
            if piece not in self.ids:
                self.ids[piece] = len(self.strs)
                self.strs.append(piece)
            out.append(self.ids[piece])
        return out

    def decode(self, ids) -> str:
        return "".join(self.strs[i] for i in ids)


TOK = Bytes()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Generated-task disk caches go to a temporary folder, never the home directory."""
    monkeypatch.setenv("FSRAY_CACHE_DIR", str(tmp_path / "cache"))


def texts(examples: list[Example], tok=TOK) -> list[tuple[str, str]]:
    return [(tok.decode(e.prompt), tok.decode(e.answer)) for e in examples]


def micro_acc(pairs):
    """Micro-averaged token accuracy and exact match of (guess ids, truth ids) pairs."""
    matched = sum(sum(g == t for g, t in zip(guess, truth)) for guess, truth in pairs)
    total = sum(len(truth) for _, truth in pairs)
    exact = sum(list(guess) == list(truth) for guess, truth in pairs) / len(pairs)
    return matched / total, exact


def test_registry_lists_descriptions_and_rejects_unknown():
    assert "kv_retrieval" in TASKS and all(isinstance(d, str) and d for d in TASKS.values())
    with pytest.raises(UsageError, match="unknown task 'nope'"):
        get_task("nope")


def test_bad_options_raise_one_usage_error_naming_the_option():
    with pytest.raises(UsageError, match="n_pairs"):
        get_task("kv_retrieval", n_pairs="6-4")
    with pytest.raises(UsageError, match="unknown option"):
        get_task("kv_retrieval", colour="red")
    with pytest.raises(UsageError, match="order"):
        get_task("kv_retrieval", order="sideways")
    with pytest.raises(UsageError, match="distinct keys"):
        get_task("kv_retrieval", key_chars="ab", n_pairs=3)
    with pytest.raises(UsageError, match="separators"):
        get_task("kv_retrieval", value_chars="1:2")
    task = get_task("kv_retrieval")
    with pytest.raises(UsageError, match="split"):
        task.build(TOK, "test", 3, 0)
    with pytest.raises(UsageError, match=">= 1"):
        task.build(TOK, "train", 0, 0)


# --- kv_retrieval --------------------------------------------------------------------------------

KV_LINE = re.compile(r"^(?:Q:(\w+)\n)?((?:\w+:\w+ ?)+)\n(?:Q:(\w+)\n)?A:$")


def parse_kv(prompt: str):
    m = KV_LINE.match(prompt)
    assert m, prompt
    query = m.group(1) or m.group(3)
    pairs = dict(p.split(":") for p in m.group(2).split(" "))
    return query, pairs, m.group(1) is not None


@pytest.mark.parametrize("order", ["query_after", "query_first"])
def test_kv_content_and_order(order):
    examples = get_task("kv_retrieval", order=order).build(TOK, "train", 300, seed=1)
    lengths = []
    for prompt, answer in texts(examples):
        query, pairs, query_first = parse_kv(prompt)
        assert query_first == (order == "query_first")
        assert 4 <= len(pairs) <= 6
        assert len(set(pairs.values())) == len(pairs)  # values distinct within a document
        assert all(len(k) == 1 and k.isalpha() for k in pairs)
        assert all(v == str(int(v)) and 0 <= int(v) <= 99 for v in pairs.values())
        assert answer == pairs[query] + "\n"
        lengths.append(len(prompt))
    # docs/DESIGN.md §6's learnable setting: prompts of 22-36 byte tokens (4 one-digit pairs make 22)
    assert min(lengths) >= 22 and max(lengths) == 36
    short = get_task("kv_retrieval", order=order, n_pairs=4, value_len=1).build(TOK, "train", 5, 1)
    assert {len(e.prompt) for e in short} == {22}


def test_kv_determinism_and_disjoint_splits():
    task = get_task("kv_retrieval")
    a = task.build(TOK, "train", 200, seed=3)
    assert a == task.build(TOK, "train", 200, seed=3)
    assert a != task.build(TOK, "train", 200, seed=4)
    val = {tuple(e.prompt + [-1] + e.answer) for e in task.build(TOK, "val", 200, seed=3)}
    for seed in (3, 4):
        train = {tuple(e.prompt + [-1] + e.answer) for e in task.build(TOK, "train", 400, seed=seed)}
        assert not (train & val)
    assert len(val) == 200  # distinct


def test_kv_prompt_limit_and_too_small_space():
    with pytest.raises(UsageError, match="max_prompt_len=30"):
        get_task("kv_retrieval", max_prompt_len=30).build(TOK, "train", 5, 0)
    ok = get_task("kv_retrieval", max_prompt_len=36).build(TOK, "train", 50, 0)
    assert max(len(e.prompt) for e in ok) <= 36
    tiny = get_task("kv_retrieval", key_chars="ab", value_chars="12", value_len=1, n_pairs=2)
    with pytest.raises(UsageError, match="allow too few"):
        tiny.build(TOK, "train", 50, 0)


def test_kv_custom_alphabets_reachable():
    task = get_task("kv_retrieval", key_chars="XYZ", key_len="2-3", value_chars="012", value_len=3,
                    n_pairs=5, max_prompt_len=200)
    for prompt, answer in texts(task.build(TOK, "train", 50, 0)):
        _, pairs, _ = parse_kv(prompt)
        assert len(pairs) == 5
        assert all(set(k) <= set("XYZ") and 2 <= len(k) <= 3 for k in pairs)
        assert all(v[0] != "0" and len(v) == 3 for v in pairs.values())  # no leading "zero"


@pytest.mark.parametrize("tok", [Bytes(), Words()], ids=["bytes", "words"])
@pytest.mark.parametrize("order", ["query_after", "query_first"])
def test_kv_chance_matches_monte_carlo(tok, order):
    task = get_task("kv_retrieval", order=order)
    examples = task.build(tok, "train", 3000, seed=7)
    rng = random.Random(0)
    pairs = []
    for e in examples:
        _, doc, _ = parse_kv(tok.decode(e.prompt))
        guess = rng.choice(list(doc.values())) + "\n"
        pairs.append((tok.encode(guess), e.answer))
    token_acc, seq_acc = micro_acc(pairs)
    chance = task.chance(tok)
    assert chance["seq_acc"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 6) / 3)
    assert seq_acc == pytest.approx(chance["seq_acc"], abs=4 * (0.21 * 0.79 / 3000) ** 0.5)
    assert token_acc == pytest.approx(chance["token_acc"], abs=0.025)


# --- mc_facts ------------------------------------------------------------------------------------

MC = re.compile(
    r"^(?:(?P<q1>Question: What does (?P<p1>\w+) like\?)\n)?"
    r"(?:Options: (?P<o1>.+)\n)?Facts: (?P<facts>.+)\n"
    r"(?:Question: What does (?P<p2>\w+) like\?\n)?(?:Options: (?P<o2>.+)\n)?Answer:$"
)


def parse_mc(prompt: str):
    m = MC.match(prompt)
    assert m, prompt
    facts = dict(re.findall(r"(\w+) likes (\w+)\.", m.group("facts")))
    options = dict(re.findall(r"([A-Z])\) (\w+)", m.group("o1") or m.group("o2")))
    return m.group("p1") or m.group("p2"), facts, options, m.group("o1") is not None


@pytest.mark.parametrize("order", ["options_first", "question_first"])
def test_mc_facts_content_and_order(order):
    task = get_task("mc_facts", order=order, n_options=4)
    for prompt, answer in texts(task.build(TOK, "train", 300, seed=2)):
        person, facts, options, options_first = parse_mc(prompt)
        assert options_first == (order == "options_first")
        assert prompt.startswith("Options:" if options_first else "Question:")
        assert sorted(options) == list("ABCD") and len(set(options.values())) == 4
        assert 3 <= len(facts) <= 5
        assert answer == next(l for l, o in options.items() if o == facts[person]) + "\n"
        # distractors come from the facts table first: reading the facts is needed
        in_table = sum(o in facts.values() for o in options.values())
        assert in_table == min(len(facts), 4)
    assert len(prompt) <= task.max_prompt_len


def test_mc_facts_determinism_split_limits_and_chance():
    task = get_task("mc_facts", n_options=3)
    a = task.build(TOK, "val", 100, seed=5)
    assert a == task.build(TOK, "val", 100, seed=5)
    train = {tuple(e.prompt) for e in task.build(TOK, "train", 400, seed=5)}
    assert not train & {tuple(e.prompt) for e in a}
    with pytest.raises(UsageError, match="max_prompt_len"):
        get_task("mc_facts", max_prompt_len=100).build(TOK, "train", 3, 0)
    with pytest.raises(UsageError, match="n_options"):
        get_task("mc_facts", n_options=1)
    examples = task.build(TOK, "train", 3000, seed=9)
    rng = random.Random(1)
    pairs = [(TOK.encode(rng.choice("ABC") + "\n"), e.answer) for e in examples]
    token_acc, seq_acc = micro_acc(pairs)
    chance = task.chance(TOK)
    assert chance == pytest.approx({"token_acc": (1 / 3 + 1) / 2, "seq_acc": 1 / 3})
    assert seq_acc == pytest.approx(1 / 3, abs=0.035) and token_acc == pytest.approx((1 / 3 + 1) / 2, abs=0.02)


# --- sudoku --------------------------------------------------------------------------------------


def all_4x4_grids() -> list[tuple[int, ...]]:
    """Every valid 4x4 sudoku by brute force over row permutations (independent of the solver)."""
    from itertools import permutations, product

    rows = list(permutations((1, 2, 3, 4)))
    grids = []
    for r in product(rows, repeat=4):
        if any(len({r[i][c] for i in range(4)}) < 4 for c in range(4)):
            continue
        boxes = [{r[br + i][bc + j] for i in range(2) for j in range(2)} for br in (0, 2) for bc in (0, 2)]
        if all(len(b) == 4 for b in boxes):
            grids.append(sum(r, ()))
    return grids


GRIDS4 = all_4x4_grids()


def cells_of(rows: str) -> list[int]:
    return [0 if ch == "." else int(ch) for ch in rows.replace("/", "")]


def valid_solution(cells: list[int], size: int) -> bool:
    box = int(size**0.5)
    groups = [[r * size + c for c in range(size)] for r in range(size)]
    groups += [[r * size + c for r in range(size)] for c in range(size)]
    groups += [[(br + i) * size + bc + j for i in range(box) for j in range(box)]
               for br in range(0, size, box) for bc in range(0, size, box)]
    return all(sorted(cells[i] for i in g) == list(range(1, size + 1)) for g in groups)


def test_brute_force_has_the_288_grids():
    assert len(GRIDS4) == 288


def test_solution_counter_matches_brute_force_on_4x4():
    from fsray.tasks.sudoku import count_solutions

    rng = random.Random(0)
    counts = set()
    for _ in range(200):
        grid = rng.choice(GRIDS4)
        k = rng.randint(4, 14)
        puzzle = list(grid)
        for cell in rng.sample(range(16), k):
            puzzle[cell] = 0
        truth = sum(all(p == 0 or p == g for p, g in zip(puzzle, other)) for other in GRIDS4)
        assert count_solutions(puzzle, 4, limit=1000) == truth
        assert count_solutions(puzzle, 4) == min(truth, 2)
        counts.add(min(truth, 3))
    assert counts == {1, 2, 3}  # unique and ambiguous puzzles were both exercised


@pytest.mark.parametrize("givens", ["prefix", "suffix"])
def test_sudoku_4x4_unique_layout_and_order(givens):
    task = get_task("sudoku", size=4, order=f"givens_{givens}", blanks=6)
    for prompt, answer in texts(task.build(TOK, "train", 150, seed=0)):
        title, rows, tail = prompt.split("\n")
        assert (title, tail) == ("Sudoku 4x4", "Solution:")
        puzzle, solution = cells_of(rows), cells_of(answer.rstrip("\n"))
        assert answer.endswith("\n") and tuple(solution) in GRIDS4
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        blanks = [i for i, v in enumerate(puzzle) if v == 0]
        assert len(blanks) == 6
        assert all(i >= 8 for i in blanks) if givens == "prefix" else all(i < 8 for i in blanks)
        matches = [g for g in GRIDS4 if all(p == 0 or p == v for p, v in zip(puzzle, g))]
        assert matches == [tuple(solution)]  # exactly one completion, found by brute force


@pytest.mark.parametrize("givens", ["prefix", "suffix"])
def test_sudoku_9x9_valid_and_unique(givens):
    from fsray.tasks.sudoku import count_solutions

    task = get_task("sudoku", size=9, order=f"givens_{givens}")
    examples = task.build(TOK, "val", 12, seed=1)  # ~10 ms a puzzle on one core
    for prompt, answer in texts(examples):
        puzzle, solution = cells_of(prompt.split("\n")[1]), cells_of(answer.strip())
        assert valid_solution(solution, 9)
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        assert puzzle.count(0) == 30
        blanks = [i for i, v in enumerate(puzzle) if v == 0]
        assert (min(blanks) >= 41) if givens == "prefix" else (max(blanks) < 40)
        assert count_solutions(puzzle, 9, limit=5) == 1
        assert len(TOK.encode(prompt)) <= task.max_prompt_len


def test_sudoku_determinism_disjoint_and_bad_settings():
    task = get_task("sudoku", size=4)
    assert task.build(TOK, "train", 50, 3) == task.build(TOK, "train", 50, 3)
    train = {tuple(e.prompt) for e in task.build(TOK, "train", 300, 3)}
    val = {tuple(e.prompt) for e in task.build(TOK, "val", 60, 3)}
    assert len(val) == 60 and not train & val
    with pytest.raises(UsageError, match="blanks"):
        get_task("sudoku", size=4, blanks=9)
    with pytest.raises(UsageError, match="size"):
        get_task("sudoku", size=6)
    with pytest.raises(UsageError, match="max_prompt_len"):
        get_task("sudoku", size=9, max_prompt_len=64).build(TOK, "train", 2, 0)
    # 288 grids x C(8, 6) patterns bound the 4x4 space: an impossible n fails at once
    with pytest.raises(UsageError, match=r"8192 distinct train examples .* at most \d+ exist"):
        get_task("sudoku", size=4).build(TOK, "train", 8192, 0)


@pytest.mark.parametrize("tok", [Bytes(), Words()], ids=["bytes", "words"])
def test_sudoku_chance_matches_monte_carlo(tok):
    task = get_task("sudoku", size=4, blanks=4)
    rng = random.Random(3)
    pairs = []
    for e in task.build(tok, "train", 1200, seed=4):
        rows = tok.decode(e.prompt).split("\n")[1]
        guess = "".join(str(rng.randint(1, 4)) if ch == "." else ch for ch in rows) + "\n"
        pairs.append((tok.encode(guess), e.answer))
    token_acc, seq_acc = micro_acc(pairs)
    chance = task.chance(tok)
    assert chance["seq_acc"] == pytest.approx(4.0**-4)
    assert seq_acc == pytest.approx(chance["seq_acc"], abs=0.015)
    assert token_acc == pytest.approx(chance["token_acc"], abs=0.02)


# --- every task ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_has_an_order_option_unfriendly_first(name):
    from fsray.tasks import task_class

    cls = task_class(name)
    assert cls.name == name and not hasattr(cls, "description")   # described once, in TASKS
    task = get_task(name)
    assert task.options["order"] == cls.ORDERS[0] and len(set(cls.ORDERS)) == 2
    assert get_task(name, order=cls.ORDERS[1]).options["order"] == cls.ORDERS[1]
    with pytest.raises(UsageError, match="order"):
        get_task(name, order="backwards")
    with pytest.raises(UsageError, match="max_prompt_len"):
        get_task(name, max_prompt_len=0)


@pytest.mark.parametrize("name", ["kv_retrieval", "mc_facts", "sudoku"])
def test_orders_give_the_same_content_in_another_order(name):
    unfriendly, friendly = (get_task(name, order=o) for o in get_task(name).ORDERS)
    a, b = unfriendly.build(TOK, "train", 20, 0), friendly.build(TOK, "train", 20, 0)
    assert [e.prompt for e in a] != [e.prompt for e in b]
    # the same draws, laid out differently: same answers, same multiset of prompt bytes
    # (sudoku moves the blanks instead, so only its prompt lengths agree)
    assert [e.answer for e in a] == [e.answer for e in b] or name == "sudoku"
    assert [len(e.prompt) for e in a] == [len(e.prompt) for e in b]
    if name != "sudoku":
        assert [sorted(e.prompt) for e in a] == [sorted(e.prompt) for e in b]


def test_sudoku_9x9_builds_are_cached_on_disk(tmp_path, monkeypatch):
    from fsray.tasks import sudoku

    monkeypatch.setenv("FSRAY_CACHE_DIR", str(tmp_path))
    sudoku._cached_texts.cache_clear()
    task = get_task("sudoku", size=9, blanks=20)
    first = task.build(TOK, "train", 3, seed=11)
    files = list((tmp_path / "tasks").glob("sudoku-*.json"))
    assert len(files) == 1
    sudoku._cached_texts.cache_clear()  # a new process: only the disk copy remains
    stored = json.loads(files[0].read_text())
    assert [[TOK.decode(e.prompt), TOK.decode(e.answer)] for e in first] == stored
    files[0].write_text(json.dumps([[p.replace("Sudoku", "Cached"), a] for p, a in stored]))
    assert TOK.decode(task.build(TOK, "train", 3, seed=11)[0].prompt).startswith("Cached")
    sudoku._cached_texts.cache_clear()
    files[0].write_text("{broken")
    assert task.build(TOK, "train", 3, seed=11) == first  # rebuilt from scratch


# --- with the project's tokenizers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    pytest.importorskip("pyrwkv_tokenizer")  # the pure-Python fallback takes ~5 s to build
    from fsray.tokenizer import WorldTokenizer

    return WorldTokenizer()


@pytest.mark.parametrize("name,options", [("kv_retrieval", {}), ("mc_facts", {}), ("sudoku", {"size": 4})])
def test_generated_tasks_with_the_project_tokenizers(world, name, options):
    from fsray.tokenizer import ByteTokenizer

    task = get_task(name, **options)
    ours = task.build(ByteTokenizer(), "train", 40, 0)
    assert ours == task.build(TOK, "train", 40, 0)
    merged = task.build(world, "train", 40, 0)
    # the same texts, in fewer tokens: tasks draw text, tokenizers only encode it
    assert texts(merged, world) == texts(ours)
    assert sum(len(e.prompt) for e in merged) < sum(len(e.prompt) for e in ours)
    assert all(len(e.prompt) <= task.max_prompt_len for e in merged)


def test_kv_chance_with_the_world_tokenizer(world):
    task = get_task("kv_retrieval")
    examples = task.build(world, "train", 2000, seed=8)
    rng = random.Random(5)
    pairs = []
    for e in examples:
        _, doc, _ = parse_kv(world.decode(e.prompt))
        pairs.append((world.encode(rng.choice(list(doc.values())) + "\n"), e.answer))
    token_acc, seq_acc = micro_acc(pairs)
    chance = task.chance(world)
    assert chance["token_acc"] != pytest.approx(task.chance(TOK)["token_acc"], abs=0.05)  # "12" is one token
    assert token_acc == pytest.approx(chance["token_acc"], abs=0.03)
    assert seq_acc == pytest.approx(chance["seq_acc"], abs=0.04)
