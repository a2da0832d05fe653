"""Punctuation and case restoration of real text (Salesforce/wikitext, wikitext-2-raw-v1, or any
dataset with a ``text`` column).

A span of ``span_words`` words from one paragraph is shown lowercased with its punctuation removed;
the answer is the original span. The instruction comes after the text (unfriendly: the reader does
not know the job while reading) or before it::

    Text: the river rises in the hills and flows east
    Restore the punctuation and capitals of the text above.
    Restored:

Answer: the original span then a newline. WikiText's tokenised spacing (`` @-@ ``, `` , ``) is
undone first; headings (``= Title =``) and lines without anything to restore are skipped.
No chance level (open answer).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from .base import Tokenizer, parse_range
from .hub import HubTask, HubTaskOptions


def detokenize(text: str) -> str:
    text = re.sub(r" @(.)@ ", r"\1", text.strip())
    text = re.sub(r" ([.,;:!?%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$]) ", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    return re.sub(r"\s+", " ", text)


def plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


class PunctuationOptions(HubTaskOptions):
    order: Literal["instruction_after", "instruction_first"] = "instruction_after"
    span_words: tuple[int, int] = (8, 24)
    max_prompt_len: int = 256

    @field_validator("span_words", mode="before")
    @classmethod
    def _span(cls, v, info):
        lo, hi = parse_range(v, info.field_name)
        if lo < 2:
            raise ValueError(f"must be >= 2, got {lo}")
        return lo, hi


class Punctuation(HubTask):
    name = "punctuation"
    ORDERS = ("instruction_after", "instruction_first")
    Options = PunctuationOptions
    HUB, CONFIG = "Salesforce/wikitext", "wikitext-2-raw-v1"
    COLUMNS = ("text",)
    EXAMPLE_FILES = "wikitext-2-raw-v1/validation-00000-of-00001.parquet"
    REPEATS = 4

    def make(self, row, rng, tokenizer: Tokenizer, pool):
        text = str(row["text"] or "").strip()
        if not text or text.startswith("="):
            return None
        words = detokenize(text).split(" ")
        lo, hi = self.settings.span_words
        if len(words) < lo:
            return None
        length = rng.randint(lo, min(hi, len(words)))
        start = rng.randrange(len(words) - length + 1)
        span = " ".join(words[start:start + length])
        source = plain(span)
        if not source or source == span:
            return None
        if self.settings.order == "instruction_after":
            prompt = f"Text: {source}\nRestore the punctuation and capitals of the text above.\nRestored:"
        else:
            prompt = f"Restore the punctuation and capitals of the text below.\nText: {source}\nRestored:"
        ids = tokenizer.encode(prompt)
        if len(ids) > self.max_prompt_len:
            return None
        return ids, tokenizer.encode(span + "\n")
