"""ARC-Challenge multiple choice (allenai/ai2_arc, config ARC-Challenge), options first
(unfriendly) or question first; prompts of at most max_prompt_len (512) tokens.

Hub schema: ``id`` (str), ``question`` (str), ``choices`` {``text``: [str], ``label``: [str]},
``answerKey`` (str); splits train / validation / test (parquet under ``ARC-Challenge/``).

Prompt (options_first)::

    Options:
    A. a wire
    B. a rubber band
    Question: Which object conducts electricity best?
    Answer:

Answer: the label then a newline (``A\\n``). Rows whose prompt exceeds max_prompt_len are skipped.
Chance: a uniform guess among the row's labels, exact over the validation rows that fit.
"""

from __future__ import annotations

from typing import Literal

from .base import Tokenizer, guess_chance
from .hub import HubTask, HubTaskOptions


class ARCOptions(HubTaskOptions):
    order: Literal["options_first", "question_first"] = "options_first"
    max_prompt_len: int = 512


class ARC(HubTask):
    name = "arc"
    ORDERS = ("options_first", "question_first")
    Options = ARCOptions
    HUB, CONFIG = "allenai/ai2_arc", "ARC-Challenge"
    COLUMNS = ("question", "choices", "answerKey")
    EXAMPLE_FILES = "ARC-Challenge/validation-00000-of-00001.parquet"

    def texts(self, row: dict) -> tuple[str, str, list[str]] | None:
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        key = str(row["answerKey"]).strip()
        if key not in labels or len(labels) != len(texts) or len(labels) < 2:
            return None
        options = "Options:\n" + "\n".join(f"{l}. {t}" for l, t in zip(labels, texts))
        question = f"Question: {row['question'].strip()}"
        if self.settings.order == "options_first":
            prompt = f"{options}\n{question}\nAnswer:"
        else:
            prompt = f"{question}\n{options}\nAnswer:"
        return prompt, key + "\n", [l + "\n" for l in labels]

    def make(self, row, rng, tokenizer: Tokenizer, pool):
        made = self.texts(row)
        if made is None:
            return None
        prompt = tokenizer.encode(made[0])
        if len(prompt) > self.max_prompt_len:
            return None
        return prompt, tokenizer.encode(made[1])

    def chance(self, tokenizer: Tokenizer) -> dict | None:
        items = []
        for row in self.rows("val"):
            made = self.texts(row)
            if made is None or len(tokenizer.encode(made[0])) > self.max_prompt_len:
                continue
            items.append((tokenizer.encode(made[1]), [tokenizer.encode(c) for c in made[2]], 1.0))
        return guess_chance(items) if items else None
