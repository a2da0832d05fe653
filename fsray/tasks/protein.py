"""Protein probes on real structures: secondary-structure spot labelling and contact-pair QA.

``protein_ss``: lamm-mit/protein_secondary_structure_from_PDB (the researchers' source). Schema:
``PDB_ID`` (str), ``Sequence`` (str, one letter per residue), ``Secondary_structure`` (str, one DSSP
symbol per residue: H G I E B T S, coil as ``-``, ``~``, ``C``, ``P`` or a space); one train split, so
val is a hash partition of the rows. A queried residue's label, reduced to 3 classes (H: H G I,
E: E B, C: the rest) or kept as 8 (coil symbols folded into C).

``protein_contact``: proteinglm/contact_prediction_binary (TAPE/ProteinNet contacts). Schema:
``seq`` (str), ``label`` ([[i, j]], 0-based residue pairs closer than 8 Angstrom); splits train /
valid / test. A queried pair (|i - j| >= min_separation) answered ``yes`` or ``no``; positives are
drawn with probability positive_share (balanced by default).

Sequences longer than max_seq_len are cropped to a random window. query_after (unfriendly) puts the
query after the sequence, query_first before it. Positions in prompts are 1-based.

Chance: a uniform guess among the classes, independent of the truth. protein_ss weighs truths by
the per-residue label frequencies of the val rows; protein_contact by positive_share.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from pydantic import field_validator

from .base import Tokenizer, guess_chance
from .hub import HubTask, HubTaskOptions

Q3 = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E"}
Q8 = "HGIEBTSC"


def residues(text) -> str:
    return re.sub(r"[^A-Z]", "", str(text).upper())


def ss_label(symbol: str, classes: int) -> str:
    if classes == 3:
        return Q3.get(symbol, "C")
    return symbol if symbol in Q8 else "C"


class ProteinOptions(HubTaskOptions):
    order: Literal["query_after", "query_first"] = "query_after"
    max_seq_len: int = 256
    max_prompt_len: int = 512

    @field_validator("max_seq_len")
    @classmethod
    def _seq_len(cls, v: int) -> int:
        if v < 8:
            raise ValueError(f"must be >= 8, got {v}")
        return v


class _ProteinTask(HubTask):
    ORDERS = ("query_after", "query_first")
    REPEATS = 8

    def layout(self, window: str, query: str, tail: str) -> str:
        if self.settings.order == "query_after":
            return f"Protein: {window}\n{query}\n{tail}"
        return f"{query}\nProtein: {window}\n{tail}"

    def crop(self, length: int, rng) -> tuple[int, int]:
        span = min(length, self.settings.max_seq_len)
        start = rng.randrange(length - span + 1)
        return start, start + span


class ProteinSSOptions(ProteinOptions):
    classes: Literal[3, 8] = 3


class ProteinSS(_ProteinTask):
    name = "protein_ss"
    Options = ProteinSSOptions
    HUB, CONFIG = "lamm-mit/protein_secondary_structure_from_PDB", None
    COLUMNS = ("Sequence", "Secondary_structure")
    VAL_SPLITS = ("validation", "test")
    EXAMPLE_FILES = "data/train-00000-of-00001.parquet"

    def pair(self, row) -> tuple[str, str] | None:
        seq = residues(row["Sequence"])
        ss = str(row["Secondary_structure"]).replace("\n", "").replace("\r", "")
        return (seq, ss) if seq and len(seq) == len(ss) else None

    def make(self, row, rng, tokenizer: Tokenizer, pool):
        pair = self.pair(row)
        if pair is None:
            return None
        seq, ss = pair
        start, end = self.crop(len(seq), rng)
        pos = rng.randrange(start, end)
        prompt = self.layout(seq[start:end], f"Position: {pos - start + 1}", "Structure:")
        ids = tokenizer.encode(prompt)
        if len(ids) > self.max_prompt_len:
            return None
        return ids, tokenizer.encode(ss_label(ss[pos], self.settings.classes) + "\n")

    def labels(self) -> str:
        return "HEC" if self.settings.classes == 3 else Q8

    def chance(self, tokenizer: Tokenizer) -> dict | None:
        counts: Counter = Counter()
        for row in self.rows("val"):
            pair = self.pair(row)
            if pair:
                counts.update(ss_label(s, self.settings.classes) for s in pair[1])
        if not counts:
            return None
        candidates = [tokenizer.encode(l + "\n") for l in self.labels()]
        return guess_chance([(tokenizer.encode(l + "\n"), candidates, c) for l, c in counts.items()])


class ProteinContactOptions(ProteinOptions):
    positive_share: float = 0.5
    min_separation: int = 6

    @field_validator("positive_share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"must lie in [0, 1], got {v}")
        return v

    @field_validator("min_separation")
    @classmethod
    def _sep(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v


class ProteinContact(_ProteinTask):
    name = "protein_contact"
    Options = ProteinContactOptions
    HUB, CONFIG = "proteinglm/contact_prediction_binary", None
    COLUMNS = ("seq", "label")
    VAL_SPLITS = ("valid", "validation")
    EXAMPLE_FILES = "data/valid-00000-of-00001.parquet"

    def make(self, row, rng, tokenizer: Tokenizer, pool):
        s = self.settings
        seq = residues(row["seq"])
        if len(seq) <= s.min_separation:
            return None
        start, end = self.crop(len(seq), rng)
        contacts = {(min(i, j), max(i, j)) for i, j in row["label"] or []}
        inside = sorted((i, j) for i, j in contacts
                        if j - i >= s.min_separation and start <= i and j < end)
        if rng.random() < s.positive_share:
            if not inside:
                return None
            (i, j), answer = inside[rng.randrange(len(inside))], "yes"
        else:
            for _ in range(50):
                i = rng.randrange(start, end - s.min_separation)
                j = rng.randrange(i + s.min_separation, end)
                if (i, j) not in contacts:
                    break
            else:
                return None
            answer = "no"
        query = f"Are residues {i - start + 1} and {j - start + 1} in contact?"
        ids = tokenizer.encode(self.layout(seq[start:end], query, "Answer:"))
        if len(ids) > self.max_prompt_len:
            return None
        return ids, tokenizer.encode(answer + "\n")

    def chance(self, tokenizer: Tokenizer) -> dict:
        share = self.settings.positive_share
        yes, no = tokenizer.encode("yes\n"), tokenizer.encode("no\n")
        return guess_chance([(yes, [yes, no], share), (no, [yes, no], 1 - share)])
