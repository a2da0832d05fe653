"""The task interface: every task is a data adapter that turns text into prompt/answer token ids.

The trainer only sees ``list[Example]``; it left-pads prompts, batches, and puts the loss on answer
tokens. A task never owns a training loop.

Conventions shared by all tasks:

- ``build(tokenizer, split, n, seed)`` is deterministic in ``seed``. Train and val are disjoint by
  construction: generated tasks assign each distinct example to a split by a hash of its text
  (so val never overlaps train, whatever the seeds); real-data tasks read the hub's own splits.
- ``order`` is the ordering option: the first value listed in ``ORDERS`` is the causally unfriendly
  one (what the reader needs in order to use the document comes after the document), the second the
  friendly one.
- ``chance(tokenizer)`` is what a model that knows the answer format, but not the answer, scores.
  ``seq_acc``: probability that its whole answer is right. ``token_acc``: expected matched answer
  tokens over expected answer tokens (the micro-average the trainer reports: matched tokens / answer
  tokens, summed over examples), comparing the guess with the truth position by position, where a
  guess shorter than the truth misses the positions it lacks. Each task documents its guesser.
- Impossible settings (bad option values, a prompt that cannot fit ``max_prompt_len``, too few
  distinct examples for a split) raise ``fsray.errors.UsageError`` naming the setting.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from fsray.errors import UsageError

Split = Literal["train", "val"]
SPLITS: tuple[str, ...] = ("train", "val")
# Share of the distinct generated examples that belong to val (by hash of the example text).
VAL_SHARE = 0.2


@dataclass(frozen=True)
class Example:
    """One training/eval example: prompt token ids and answer token ids (the loss targets)."""

    prompt: list[int]
    answer: list[int]


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def split_of(text: str) -> str:
    """The split a distinct example belongs to, from a hash of its text (stable across runs)."""
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return "val" if h / 2**64 < VAL_SHARE else "train"


def parse_range(value, name: str) -> tuple[int, int]:
    """An inclusive integer range from 5, "4-6", "4..6", (4, 6) or [4, 6]."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer or a range like 4-6, got {value!r}")
    if isinstance(value, int):
        lo = hi = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:(?:-|\.\.|:)\s*(\d+)\s*)?", value)
        if not m:
            raise ValueError(f"{name} must be an integer or a range like 4-6, got {value!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        lo, hi = value
    else:
        raise ValueError(f"{name} must be an integer or a range like 4-6, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name} range {lo}-{hi} is empty (low > high)")
    return int(lo), int(hi)


class TaskOptions(BaseModel):
    """Options every task has; each task subclasses this with its own fields and defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_prompt_len: int = 512

    @field_validator("max_prompt_len")
    @classmethod
    def _positive_len(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v


def _validation_line(task: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown option"
        parts.append(f"option {loc}: {msg}" if loc else msg)
    return f"task {task}: bad options: " + "; ".join(parts)


class Task:
    """Base class of task adapters. Subclasses set ``name``, ``ORDERS``, ``Options`` and implement
    ``_build`` (and ``chance`` / ``check`` where they can); a task's one-line description lives in
    the registry (``fsray.tasks.TASKS``)."""

    name: ClassVar[str] = "task"
    ORDERS: ClassVar[tuple[str, str]] = ("", "")
    Options: ClassVar[type[TaskOptions]] = TaskOptions

    def __init__(self, **options) -> None:
        try:
            self.settings = self.Options(**options)
        except ValidationError as exc:
            raise UsageError(_validation_line(self.name, exc)) from None

    @property
    def options(self) -> dict:
        """The validated options as plain JSON-able values (for records and hashes)."""
        return self.settings.model_dump(mode="json")

    @property
    def max_prompt_len(self) -> int:
        return self.settings.max_prompt_len

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    # -- the interface -------------------------------------------------------------------------

    def build(self, tokenizer: Tokenizer, split: str, n: int, seed: int) -> list[Example]:
        """``n`` examples of ``split`` ("train" or "val"), deterministic in ``seed``."""
        if split not in SPLITS:
            raise UsageError(f"task {self.name}: split must be 'train' or 'val', got {split!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"task {self.name}: number of {split} examples must be >= 1, got {n!r}")
        self.check(tokenizer)
        examples = self._build(tokenizer, split, n, int(seed))
        for ex in examples:
            if len(ex.prompt) > self.max_prompt_len:  # each task must keep to the limit
                raise AssertionError(f"{self.name} built a prompt of {len(ex.prompt)} tokens")
        return examples

    def check(self, tokenizer: Tokenizer) -> None:
        """Raise UsageError if the settings cannot produce valid examples with this tokenizer."""

    def chance(self, tokenizer: Tokenizer) -> dict | None:
        """``{"token_acc", "seq_acc"}`` of a format-aware guesser, or None where undefined."""
        return None

    def _build(self, tokenizer: Tokenizer, split: str, n: int, seed: int) -> list[Example]:
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------------

    def rng(self, split: str, seed: int, salt: str = "") -> random.Random:
        """A generator seeded by (task, split, seed): string seeds hash deterministically."""
        return random.Random(f"{self.name}|{split}|{seed}|{salt}")

    def fail(self, message: str) -> UsageError:
        return UsageError(f"task {self.name}: {message}")


class GeneratedTask(Task):
    """A task whose examples are drawn locally: ``draw(rng)`` returns the content of an example
    (a tuple of plain values) and ``render(content) -> (prompt_text, answer_text)`` lays it out.

    Distinct contents are kept when their hash puts them in the requested split, until ``n`` are
    found; a setting whose space is too small for ``n`` raises UsageError instead of looping.
    The split and the draws do not depend on the layout, so both orderings of a task get the same
    examples for a seed, only laid out differently.
    """

    def draw(self, rng: random.Random) -> tuple:
        raise NotImplementedError

    def render(self, content: tuple) -> tuple[str, str]:
        raise NotImplementedError

    def split_key(self, content: tuple) -> str:
        """The text whose hash decides the split of ``content`` (all of it by default)."""
        return repr(content)

    def draw_for(self, rng: random.Random, split: str) -> tuple:
        """A draw for ``split``; tasks with costly draws override it to skip other splits early."""
        return self.draw(rng)

    def space_size(self, split: str, n: int) -> int | None:
        """An upper bound on the distinct examples of ``split`` (None: unknown or plenty; a task
        may skip costly counting when ``n`` is clearly feasible)."""
        return None

    def space_description(self) -> str:
        """A phrase naming the settings that bound the number of distinct examples."""
        return ", ".join(f"{k}={v}" for k, v in self.options.items() if k != "max_prompt_len")

    def _build(self, tokenizer: Tokenizer, split: str, n: int, seed: int) -> list[Example]:
        return sample_distinct(self, tokenizer, split, n, self.rng(split, seed))


def sample_distinct(
    task: GeneratedTask,
    tokenizer: Tokenizer,
    split: str,
    n: int,
    rng: random.Random,
    max_draws: int | None = None,
) -> list[Example]:
    """Draw until ``n`` distinct examples of ``split`` are found, or raise UsageError: at once when
    the space bound cannot hold them, else when draws stall (the space is nearly exhausted)."""
    bound = task.space_size(split, n)

    def too_few(found: int, draws: int) -> UsageError:
        at_most = f"at most {bound}" if bound is not None else "too few"
        return task.fail(
            f"cannot build {n} distinct {split} examples (found {found} in {draws} draws; "
            f"{at_most} exist in {split}): the settings ({task.space_description()}) allow too "
            "few; widen them or lower n"
        )

    if bound is not None and n > bound:
        raise too_few(0, 0)
    # Fallback for spaces without a bound: give up after this many draws without a new example.
    stall_limit = max_draws if max_draws is not None else 1000 + 5 * n
    seen: set[str] = set()
    out: list[Example] = []
    draws = stalled = 0
    while len(out) < n:
        if stalled >= stall_limit:
            raise too_few(len(out), draws)
        draws += 1
        stalled += 1
        content = task.draw_for(rng, split)
        key = repr(content)
        if key in seen:
            continue
        seen.add(key)
        if split_of(task.split_key(content)) != split:
            continue
        stalled = 0
        prompt_text, answer_text = task.render(content)
        prompt = list(tokenizer.encode(prompt_text))
        if len(prompt) > task.max_prompt_len:
            raise task.fail(
                f"a prompt of {len(prompt)} tokens does not fit max_prompt_len={task.max_prompt_len}"
            )
        out.append(Example(prompt=prompt, answer=list(tokenizer.encode(answer_text))))
    return out


def token_match_stats(guess: Sequence[int], truth: Sequence[int]) -> int:
    """Answer positions where ``guess`` equals ``truth`` (a shorter guess misses the rest)."""
    return sum(1 for g, t in zip(guess, truth) if g == t)


def uniform_pick_chance(answers: Sequence[Sequence[int]], candidate_counts: Sequence[int]) -> dict:
    """Chance of a guesser that picks one of n candidate answers uniformly, where the truth is
    uniform over ``answers`` (token ids of every possible answer) and the other candidates are
    uniform among the rest; n is uniform over ``candidate_counts``.

    A guess is right with probability 1/n, else a uniform other answer. Matched positions summed
    over ordered pairs (t, g) are sum_j sum_x count_j(x)^2, so this is exact in O(total tokens).
    """
    from collections import Counter

    n_answers = len(answers)
    mean_len = sum(len(a) for a in answers) / n_answers
    per_position: list[Counter] = []
    for a in answers:
        for j, tok in enumerate(a):
            if j == len(per_position):
                per_position.append(Counter())
            per_position[j][tok] += 1
    all_pairs = sum(c * c for counter in per_position for c in counter.values())
    self_pairs = sum(len(a) for a in answers)
    other = (all_pairs - self_pairs) / (n_answers * (n_answers - 1)) if n_answers > 1 else 0.0
    ns = list(candidate_counts)
    expected_match = sum(mean_len / n + (1 - 1 / n) * other for n in ns) / len(ns)
    return {"token_acc": expected_match / mean_len, "seq_acc": sum(1 / n for n in ns) / len(ns)}


def guess_chance(items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]], float]]) -> dict:
    """Chance of a guesser that picks uniformly among candidates, independently of the truth.

    ``items``: (truth ids, candidate answers' ids, weight) per example (weights = probabilities
    or counts). token_acc = E[matched positions] / E[truth tokens]; seq_acc = E[P(guess == truth)].
    """
    matched = tokens = exact = weight = 0.0
    for truth, candidates, w in items:
        k = len(candidates)
        matched += w * sum(token_match_stats(c, truth) for c in candidates) / k
        exact += w * sum(list(c) == list(truth) for c in candidates) / k
        tokens += w * len(truth)
        weight += w
    return {"token_acc": matched / tokens, "seq_acc": exact / weight}
