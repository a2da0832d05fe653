"""Write the tiny test fixtures of the real-data tasks, in each hub dataset's schema and layout.

    .venv/bin/python tests/make_fixtures.py [OUT]      # default: tests/fixtures/data

The rows are written by this script (short made-up questions, paragraphs, problems and synthetic
proteins), a few KB per file, laid out like the hub repositories so ``data_dir=`` finds the splits
the way ``datasets`` does on the hub; ``data_files=`` can name single files. Deterministic: running
it again rewrites identical rows.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "fixtures" / "data"


def _parquet(rows: list[dict], path: Path) -> None:
    import datasets

    datasets.disable_progress_bars()
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(path))


def _shard(split: str) -> str:
    return f"{split}-00000-of-00001.parquet"


# -- ARC-Challenge -------------------------------------------------------------------------------

ARC_ROWS = [
    ("Which object conducts electricity best?", ["a wooden spoon", "a copper wire", "a rubber band", "a glass rod"], "B"),
    ("What causes day and night on Earth?", ["the Moon orbiting Earth", "Earth orbiting the Sun", "Earth spinning on its axis", "the Sun spinning"], "C"),
    ("Which gas do plants take in for photosynthesis?", ["oxygen", "nitrogen", "carbon dioxide", "helium"], "C"),
    ("Water freezes at which temperature in Celsius?", ["0", "10", "32", "100"], "A"),
    ("Which is a renewable energy source?", ["coal", "wind", "natural gas", "oil"], "B"),
    ("What part of a plant takes up water?", ["roots", "flowers", "leaves", "seeds"], "A"),
    ("Which tool measures air pressure?", ["thermometer", "barometer", "ruler", "scale"], "B"),
    ("Sound travels fastest through which material?", ["air", "a vacuum", "steel", "water"], "C"),
    ("Which organ pumps blood through the body?", ["lungs", "liver", "heart", "kidney"], "C"),
    ("A student mixes salt into water. What has formed?", ["a solution", "a compound", "an element", "a gas"], "A"),
    ("Which layer of Earth is the outermost?", ["mantle", "outer core", "inner core", "crust"], "D"),
    ("What is the main source of energy for Earth's water cycle?", ["the Moon", "the Sun", "volcanoes", "wind"], "B"),
    ("Which property of a mineral is tested by scratching it?", ["color", "luster", "hardness", "mass"], "C"),
    ("Frogs begin life as which stage?", ["tadpoles", "pupae", "larvae with wings", "adults"], "A"),
]


def arc(out: Path) -> None:
    rows = []
    for i, (question, texts, key) in enumerate(ARC_ROWS):
        # ARC mixes letter and digit labels (and 3 or 5 options now and then)
        labels = ["1", "2", "3", "4"] if i % 5 == 4 else list("ABCD")
        if i % 5 == 4:
            key = str("ABCD".index(key) + 1)
        rows.append({"id": f"Fixture_{i:03d}", "question": question,
                     "choices": {"text": texts, "label": labels}, "answerKey": key})
    base = out / "ai2_arc" / "ARC-Challenge"
    _parquet(rows[:8], base / _shard("train"))
    _parquet(rows[8:], base / _shard("validation"))


# -- HotpotQA distractor -------------------------------------------------------------------------

HOTPOT = [
    ("Which river flows through the city where the Alder Bridge stands?", "the Marrow",
     [("Alder Bridge", ["The Alder Bridge is a stone bridge in Keswold. ", "It opened in 1822."]),
      ("Keswold", ["Keswold is a market town on the River Marrow. ", "It has a cattle fair."])],
     [("Birch Hall", ["Birch Hall is a manor house near Tunby."]),
      ("Tunby", ["Tunby is a village with a windmill."])]),
    ("What instrument did the founder of the Lark Quartet play?", "the viola",
     [("Lark Quartet", ["The Lark Quartet was founded by Mira Holt in 1961."]),
      ("Mira Holt", ["Mira Holt was a violist who taught in Vienna. ", "She played the viola."])],
     [("Finch Trio", ["The Finch Trio toured Canada in 1970."]),
      ("Owen Pike", ["Owen Pike was a cellist from Leeds."])]),
    ("In which year was the architect of Fenwick Tower born?", "1874",
     [("Fenwick Tower", ["Fenwick Tower was designed by Ada Crane."]),
      ("Ada Crane", ["Ada Crane was an architect born in 1874 in Dunmore."])],
     [("Gale Library", ["The Gale Library holds old maps."]),
      ("Dunmore Station", ["Dunmore Station closed in 1964."])]),
    ("Which country is the birthplace of the author of The Salt Road?", "Portugal",
     [("The Salt Road", ["The Salt Road is a novel by Tomas Reis."]),
      ("Tomas Reis", ["Tomas Reis is a writer born in Portugal."])],
     [("The Iron Gate", ["The Iron Gate is a play set in Riga."]),
      ("Lena Voss", ["Lena Voss wrote poems about the sea."])]),
    ("Are Quill Lake and Dorran Lake in the same province?", "no",
     [("Quill Lake", ["Quill Lake lies in the province of Arden."]),
      ("Dorran Lake", ["Dorran Lake lies in the province of Belmar."])],
     [("Arden Falls", ["Arden Falls is a waterfall."]),
      ("Belmar Road", ["Belmar Road is a highway."])]),
    ("Who directed the film that won the 1990 Gull Prize?", "Ines Ward",
     [("Gull Prize", ["The 1990 Gull Prize went to the film Low Tide."]),
      ("Low Tide", ["Low Tide is a film directed by Ines Ward."])],
     [("High Water", ["High Water is a 1988 documentary."]),
      ("Paul Greer", ["Paul Greer is an actor."])]),
    ("What sport did the coach of the Ravens Club play?", "rugby",
     [("Ravens Club", ["The Ravens Club is coached by Dan Fell."]),
      ("Dan Fell", ["Dan Fell played rugby for twelve years."])],
     [("Hawks Club", ["The Hawks Club plays in red."]),
      ("Tom Aske", ["Tom Aske is a referee."])]),
    ("Which sea borders the port where the ship Tern was built?", "the North Sea",
     [("Tern (ship)", ["The Tern was a schooner built in Harlow Port."]),
      ("Harlow Port", ["Harlow Port is a harbour on the North Sea."])],
     [("Puffin (ship)", ["The Puffin was a trawler."]),
      ("Ebb Point", ["Ebb Point has a lighthouse."])]),
]


def hotpot(out: Path) -> None:
    rows = []
    for i, (question, answer, gold, distract) in enumerate(HOTPOT):
        context = gold + distract
        random.Random(i).shuffle(context)
        rows.append({
            "id": f"fixture{i:03d}", "question": question, "answer": answer,
            "type": "bridge", "level": "medium",
            "supporting_facts": {"title": [t for t, _ in gold], "sent_id": [0] * len(gold)},
            "context": {"title": [t for t, _ in context], "sentences": [s for _, s in context]},
        })
    base = out / "hotpot_qa" / "distractor"
    _parquet(rows[:5], base / _shard("train"))
    _parquet(rows[5:], base / _shard("validation"))


# -- MBPP ----------------------------------------------------------------------------------------

MBPP = [
    ("Write a function to add two numbers.", "def add(a, b):\n    return a + b", "add", "(2, 3)", "5"),
    ("Write a function to square a number.", "def square(x):\n    return x * x", "square", "(4)", "16"),
    ("Write a function to reverse a string.", "def rev(s):\n    return s[::-1]", "rev", "('ab')", "'ba'"),
    ("Write a function to find the largest item of a list.", "def largest(xs):\n    return max(xs)", "largest", "([1, 5, 2])", "5"),
    ("Write a function to count vowels in a string.", "def vowels(s):\n    return sum(c in 'aeiou' for c in s)", "vowels", "('hello')", "2"),
    ("Write a function to check if a number is even.", "def is_even(n):\n    return n % 2 == 0", "is_even", "(4)", "True"),
    ("Write a function to sum a list.", "def total(xs):\n    return sum(xs)", "total", "([1, 2, 3])", "6"),
    ("Write a function to get the last element of a list.", "def last(xs):\n    return xs[-1]", "last", "([1, 2, 3])", "3"),
    ("Write a function to join words with a space.", "def join(ws):\n    return ' '.join(ws)", "join", "(['a', 'b'])", "'a b'"),
    ("Write a function to double each item of a list.", "def double(xs):\n    return [2 * x for x in xs]", "double", "([1, 2])", "[2, 4]"),
]


def mbpp(out: Path) -> None:
    rows = [{"task_id": 900 + i, "text": text, "code": code,
             "test_list": [f"assert {fn}{args} == {want}"], "test_setup_code": "",
             "challenge_test_list": []}
            for i, (text, code, fn, args, want) in enumerate(MBPP)]
    base = out / "mbpp" / "full"
    _parquet(rows[:6], base / _shard("train"))
    _parquet(rows[6:], base / _shard("validation"))


# -- proteins (synthetic sequences with plausible structure strings) ------------------------------

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _ss_string(length: int, rng: random.Random) -> str:
    out = []
    while len(out) < length:
        kind = rng.choice("HHEE-TSGB~")
        out += [kind] * (rng.randint(4, 12) if kind in "HE-~" else rng.randint(1, 3))
    return "".join(out[:length])


def protein_ss(out: Path) -> None:
    rng = random.Random(11)
    rows = []
    for i in range(12):
        length = rng.randint(40, 90)
        rows.append({"PDB_ID": f"{i + 1}FX{chr(65 + i)}",
                     "Sequence": "".join(rng.choice(AMINO) for _ in range(length)),
                     "Secondary_structure": _ss_string(length, rng)})
    path = out / "protein_ss" / "train.jsonl"  # the hub has one train split; jsonl shows json input
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def protein_contact(out: Path) -> None:
    rng = random.Random(12)
    rows = []
    for i in range(10):
        length = rng.randint(40, 80)
        pairs = set()
        while len(pairs) < length // 3:
            a = rng.randrange(length - 6)
            pairs.add((a, rng.randrange(a + 6, length)))
        rows.append({"seq": "".join(rng.choice(AMINO) for _ in range(length)),
                     "label": [list(p) for p in sorted(pairs)]})
    base = out / "protein_contact" / "data"
    _parquet(rows[:6], base / _shard("train"))
    _parquet(rows[6:], base / _shard("valid"))


# -- wikitext-style text -------------------------------------------------------------------------

WIKI = [
    " = Marrow Valley = \n",
    " The Marrow Valley is a broad , fertile valley in the north of Arden . Its river , the Marrow , rises in the Kell Hills and flows east for 120 miles before reaching the sea . \n",
    " In 1822 the Alder Bridge was built at Keswold , replacing a wooden ford that had flooded every spring . The bridge , made of local sandstone , still carries traffic today . \n",
    " Farming in the valley is mixed : sheep graze the upper slopes , while wheat , barley and oats grow on the lower fields . A cattle fair has been held in Keswold since the 15th century . \n",
    "",
    " The valley 's wildlife includes otters , kingfishers and several rare orchids . Since 1994 , part of the valley has been a nature reserve , managed by a local trust . \n",
    " Tourism grew after the railway arrived in 1868 ; walkers came from Tunby and beyond to climb the well @-@ known Kell Edge , a ridge 2 @,@ 100 feet high . \n",
    " = = Climate = = \n",
    " Winters are cold and wet , and snow often closes the high roads . Summers are mild , with an average July temperature of 17 @.@ 5 degrees . \n",
    " Rain falls on about 180 days a year , mostly in autumn . Floods were common until a dam was finished upstream in 1957 . \n",
    " The town hall , finished in 1901 , houses a small museum of farm tools , maps and paintings of the valley by the artist Ada Crane . \n",
    " Local tradition says that a bell , lost in the flood of 1770 , can still be heard ringing under the river on stormy nights . \n",
]


def wikitext(out: Path) -> None:
    base = out / "wikitext" / "wikitext-2-raw-v1"
    _parquet([{"text": t} for t in WIKI[:8]], base / _shard("train"))
    _parquet([{"text": t} for t in WIKI[8:]], base / _shard("validation"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else DEFAULT_OUT
    for write in (arc, hotpot, mbpp, protein_ss, protein_contact, wikitext):
        write(out)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"{path.stat().st_size:6d}  {path.relative_to(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
