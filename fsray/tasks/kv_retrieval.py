"""Synthetic key-value retrieval: a document of ``key:value`` pairs and a query key.

Prompt (query_after, the causally unfriendly order)::

    a:12 b:3 c:45 d:7
    Q:b
    A:

query_first puts the ``Q:b`` line before the document. Answer: the value then a newline (``3\\n``),
one fixed format whatever the order. Keys are distinct within a document, so are values.

With the defaults (4-6 pairs, 1-letter keys, values 0-99 written without leading zeros) a prompt is
22-36 bytes: the setting that learns on a CPU (docs/DESIGN.md §6).

Chance (``chance``): the guesser answers one of the document's values, uniformly. The query's value
is uniform over all values (by symmetry of the draw), so with n pairs the guess is right with
probability 1/n and otherwise a uniform other value: seq_acc = E[1/n] over the n_pairs range, and
token_acc = E[matched tokens] / E[answer tokens] computed exactly over the value set.
"""

from __future__ import annotations

import math
import random
import string
from functools import cached_property

from typing import Literal

from pydantic import field_validator, model_validator

from .base import VAL_SHARE, GeneratedTask, TaskOptions, Tokenizer, parse_range, uniform_pick_chance

RESERVED = set(": \n")
MAX_CHANCE_VALUES = 50_000


class Strings:
    """All strings of length ``lengths`` over ``chars`` (optionally no leading ``chars[0]``),
    indexable without materialising them, so a draw is uniform over the whole set."""

    def __init__(self, chars: str, lengths: tuple[int, int], no_leading_first: bool) -> None:
        self.chars = chars
        self.no_leading_first = no_leading_first
        self.blocks: list[tuple[int, int]] = []  # (length, count)
        for length in range(lengths[0], lengths[1] + 1):
            k = len(chars)
            count = k**length
            if no_leading_first and length > 1:
                count = (k - 1) * k ** (length - 1)
            self.blocks.append((length, count))

    def __len__(self) -> int:
        return sum(c for _, c in self.blocks)

    def __getitem__(self, index: int) -> str:
        k = len(self.chars)
        for length, count in self.blocks:
            if index < count:
                digits = []
                for pos in range(length):
                    index, d = divmod(index, k)
                    digits.append(d)
                digits.reverse()  # most significant first
                if self.no_leading_first and length > 1:
                    # the leading digit ranges over chars[1:] (count was (k-1) * k**(length-1))
                    return "".join(self.chars[d if i else d + 1] for i, d in enumerate(digits))
                return "".join(self.chars[d] for d in digits)
            index -= count
        raise IndexError(index)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def sample(self, rng: random.Random, n: int) -> list[str]:
        return [self[i] for i in rng.sample(range(len(self)), n)]


class KVOptions(TaskOptions):
    order: Literal["query_after", "query_first"] = "query_after"
    n_pairs: tuple[int, int] = (4, 6)
    key_chars: str = string.ascii_lowercase
    key_len: tuple[int, int] = (1, 1)
    value_chars: str = string.digits
    value_len: tuple[int, int] = (1, 2)
    max_prompt_len: int = 64

    @field_validator("n_pairs", "key_len", "value_len", mode="before")
    @classmethod
    def _range(cls, v, info):
        lo, hi = parse_range(v, info.field_name)
        if lo < 1:
            raise ValueError(f"must be >= 1, got {lo}")
        return lo, hi

    @field_validator("key_chars", "value_chars")
    @classmethod
    def _alphabet(cls, v: str, info):
        if not v:
            raise ValueError("must not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"has repeated characters: {v!r}")
        bad = RESERVED & set(v)
        if bad:
            raise ValueError(f"must not contain the separators {sorted(bad)!r}")
        return v

    @model_validator(mode="after")
    def _enough(self) -> "KVOptions":
        need = self.n_pairs[1]
        n_keys = len(Strings(self.key_chars, self.key_len, False))
        n_values = len(Strings(self.value_chars, self.value_len, True))
        if n_keys < need:
            raise ValueError(
                f"n_pairs up to {need} needs {need} distinct keys, key_chars/key_len give {n_keys}"
            )
        if n_values < need:
            raise ValueError(
                f"n_pairs up to {need} needs {need} distinct values, value_chars/value_len give {n_values}"
            )
        return self


class KVRetrieval(GeneratedTask):
    name = "kv_retrieval"
    ORDERS = ("query_after", "query_first")
    Options = KVOptions

    @cached_property
    def keys(self) -> Strings:
        return Strings(self.settings.key_chars, self.settings.key_len, False)

    @cached_property
    def values(self) -> Strings:
        return Strings(self.settings.value_chars, self.settings.value_len, True)

    def render(self, content: tuple) -> tuple[str, str]:
        pairs, query = content
        document = " ".join(f"{k}:{v}" for k, v in pairs)
        question = f"Q:{query}"
        if self.settings.order == "query_after":
            prompt = f"{document}\n{question}\nA:"
        else:
            prompt = f"{question}\n{document}\nA:"
        answer = dict(pairs)[query] + "\n"
        return prompt, answer

    def draw(self, rng: random.Random) -> tuple:
        lo, hi = self.settings.n_pairs
        n = rng.randint(lo, hi)
        keys = self.keys.sample(rng, n)
        values = self.values.sample(rng, n)
        query = keys[rng.randrange(n)]
        return tuple(zip(keys, values)), query

    def check(self, tokenizer: Tokenizer) -> None:
        # The longest prompt: the most pairs with the longest keys and values.
        s = self.settings
        n = s.n_pairs[1]
        key = s.key_chars[-1] * s.key_len[1]
        value = s.value_chars[-1] * s.value_len[1]
        pairs = [(key, value)] * n
        prompt, _ = self.render((pairs, key))
        length = len(tokenizer.encode(prompt))
        if length > s.max_prompt_len:
            raise self.fail(
                f"prompts reach {length} tokens with n_pairs up to {n}, key_len up to {s.key_len[1]} "
                f"and value_len up to {s.value_len[1]}: raise max_prompt_len={s.max_prompt_len} "
                "or shrink them"
            )

    def chance(self, tokenizer: Tokenizer) -> dict:
        lo, hi = self.settings.n_pairs
        values: object = self.values
        if len(self.values) > MAX_CHANCE_VALUES:
            # beyond this, a fixed uniform sample of the values estimates the token level (the
            # sequence level stays exact: it does not depend on the values)
            values = self.values.sample(random.Random(0), MAX_CHANCE_VALUES)
        answers = [tokenizer.encode(v + "\n") for v in values]
        return uniform_pick_chance(answers, range(lo, hi + 1))

    def space_size(self, split: str, n: int) -> int:
        lo, hi = self.settings.n_pairs
        k, v = len(self.keys), len(self.values)
        total = sum(math.perm(k, m) * math.perm(v, m) * m for m in range(lo, hi + 1))
        share = VAL_SHARE if split == "val" else 1 - VAL_SHARE
        return int(total * share * 1.5) + 10  # the hash split gives about `share` of them

    def space_description(self) -> str:
        s = self.settings
        return (
            f"n_pairs={s.n_pairs[0]}-{s.n_pairs[1]}, {len(self.keys)} keys "
            f"(key_chars={s.key_chars!r}, key_len={s.key_len[0]}-{s.key_len[1]}), "
            f"{len(self.values)} values (value_chars={s.value_chars!r}, "
            f"value_len={s.value_len[0]}-{s.value_len[1]})"
        )
