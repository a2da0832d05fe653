"""Multiple choice over generated facts: options first (unfriendly) or question first.

A small fact table (``Ann likes tea.``) is followed by a question about one person and lettered
options drawn from the table's objects (padded from the vocabulary when the table is smaller than
the option count). options_first::

    Options: A) tea B) jam C) fig D) oat
    Facts: Ann likes tea. Bob likes fig. Cal likes jam.
    Question: What does Cal like?
    Answer:

question_first puts the question line first and the options last, so a causal reader knows what to
look for. Answer: the option letter then a newline (``B\\n``).

Chance: the guesser answers a uniform letter among the options; the correct letter's position is
uniform, so seq_acc = 1 / n_options, and token_acc is computed exactly over the letters' token ids.
"""

from __future__ import annotations

import random
import string
from typing import Literal

from pydantic import field_validator, model_validator

from .base import GeneratedTask, TaskOptions, Tokenizer, parse_range, uniform_pick_chance

PEOPLE = (
    "Ann Bob Cal Dee Eve Fay Gus Hal Ida Jon Kim Lea Max Ned Oli Pam Quin Ray Sam Tom Uma Val Wes "
    "Xia Yul Zoe"
).split()
OBJECTS = (
    "tea jam fig oat rye yam pea nut egg ham cod eel kale leek lime plum pear corn rice soup "
    "beans bread honey lemon mango melon olive onion"
).split()


class MCFactsOptions(TaskOptions):
    order: Literal["options_first", "question_first"] = "options_first"
    n_facts: tuple[int, int] = (3, 5)
    n_options: int = 4
    max_prompt_len: int = 192

    @field_validator("n_facts", mode="before")
    @classmethod
    def _range(cls, v, info):
        lo, hi = parse_range(v, info.field_name)
        if lo < 1 or hi > len(PEOPLE):
            raise ValueError(f"must lie in 1-{len(PEOPLE)}, got {lo}-{hi}")
        return lo, hi

    @field_validator("n_options")
    @classmethod
    def _options(cls, v: int) -> int:
        if not 2 <= v <= min(26, len(OBJECTS)):
            raise ValueError(f"must lie in 2-{min(26, len(OBJECTS))}, got {v}")
        return v

    @model_validator(mode="after")
    def _objects(self) -> "MCFactsOptions":
        if self.n_facts[1] > len(OBJECTS):
            raise ValueError(f"n_facts up to {self.n_facts[1]} exceeds the {len(OBJECTS)} objects")
        return self


class MCFacts(GeneratedTask):
    name = "mc_facts"
    ORDERS = ("options_first", "question_first")
    Options = MCFactsOptions

    @property
    def letters(self) -> str:
        return string.ascii_uppercase[: self.settings.n_options]

    def render(self, content: tuple) -> tuple[str, str]:
        facts, person, options = content
        fact_line = "Facts: " + " ".join(f"{p} likes {o}." for p, o in facts)
        option_line = "Options: " + " ".join(f"{l}) {o}" for l, o in zip(self.letters, options))
        question = f"Question: What does {person} like?"
        if self.settings.order == "options_first":
            lines = [option_line, fact_line, question]
        else:
            lines = [question, fact_line, option_line]
        truth = dict(facts)[person]
        return "\n".join(lines) + "\nAnswer:", self.letters[list(options).index(truth)] + "\n"

    def draw(self, rng: random.Random) -> tuple[str, str]:
        s = self.settings
        n = rng.randint(*s.n_facts)
        people = rng.sample(PEOPLE, n)
        objects = rng.sample(OBJECTS, n)
        facts = list(zip(people, objects))
        person, truth = facts[rng.randrange(n)]
        # distractors: the table's other objects first (reading the facts is needed), then others
        others = [o for o in objects if o != truth]
        rng.shuffle(others)
        distractors = others[: s.n_options - 1]
        if len(distractors) < s.n_options - 1:
            rest = [o for o in OBJECTS if o not in objects]
            distractors += rng.sample(rest, s.n_options - 1 - len(distractors))
        options = distractors + [truth]
        rng.shuffle(options)
        return tuple(facts), person, tuple(options)

    def check(self, tokenizer: Tokenizer) -> None:
        s = self.settings
        longest = sorted(OBJECTS, key=len)[-max(s.n_facts[1], s.n_options):]
        people = sorted(PEOPLE, key=len)[-s.n_facts[1]:]
        facts = list(zip(people, longest))
        options = longest[-s.n_options:]
        if facts[-1][1] not in options:
            options = options[:-1] + [facts[-1][1]]
        prompt, _ = self.render((facts, facts[-1][0], options))
        length = len(tokenizer.encode(prompt))
        if length > s.max_prompt_len:
            raise self.fail(
                f"prompts reach {length} tokens with n_facts up to {s.n_facts[1]} and "
                f"n_options={s.n_options}: raise max_prompt_len={s.max_prompt_len} or lower them"
            )

    def chance(self, tokenizer: Tokenizer) -> dict:
        answers = [tokenizer.encode(letter + "\n") for letter in self.letters]
        return uniform_pick_chance(answers, [self.settings.n_options])
