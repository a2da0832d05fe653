"""MBPP code generation (google-research-datasets/mbpp, config full), the task after its notes
(unfriendly) or first; notes fill the prompt up to max_prompt_len (2048 by default).

Hub schema: ``task_id`` (int), ``text`` (str), ``code`` (str), ``test_list`` ([str]),
``test_setup_code`` (str), ``challenge_test_list`` ([str]); splits train / validation / test /
prompt (parquet under ``full/``).

Prompt (question_after)::

    Notes:
    # <another problem's text>
    <its code>
    ...
    Task: <text>
    Tests:
    assert ...
    Code:

question_first puts the task and tests before the notes. Notes are other problems of the same split
(text and solution), drawn at random and cut so the prompt is exactly max_prompt_len tokens when the
split has enough text. Answer: the reference code then a newline. No chance level (open answer).
"""

from __future__ import annotations

from .base import Tokenizer
from .fill import fill
from .hub import QuestionOrderTask


class MBPP(QuestionOrderTask):
    name = "mbpp"
    HUB, CONFIG = "google-research-datasets/mbpp", "full"
    COLUMNS = ("task_id", "text", "code", "test_list")
    EXAMPLE_FILES = "full/validation-00000-of-00001.parquet"

    def make(self, row, rng, tokenizer: Tokenizer, pool):
        tests = "\n".join(t.strip() for t in row["test_list"])
        question = f"Task: {row['text'].strip()}\nTests:\n{tests}\n"
        head_ids, tail_ids, budget = self.framed(tokenizer, question, "Notes:\n", "Code:\n")
        if budget < 0:
            return None
        notes = []
        if self.settings.fill:
            notes = fill(
                budget, pool,
                lambda r: tokenizer.encode(f"# {r['text'].strip()}\n{r['code'].strip()}\n\n"),
                rng, exclude=lambda r: r["task_id"] == row["task_id"], exact=True,
            )
        prompt = head_ids + [tok for p in notes for tok in p] + tail_ids
        return prompt, tokenizer.encode(row["code"].strip() + "\n")
