"""HotpotQA distractor (hotpotqa/hotpot_qa, config distractor): long-context QA with the question
after the context (unfriendly) or before it; prompts filled with paragraphs up to max_prompt_len
(2048 by default; 4096 as the researchers also ran).

Hub schema: ``id``, ``question``, ``answer``, ``type``, ``level`` (str), ``supporting_facts``
{``title``: [str], ``sent_id``: [int]}, ``context`` {``title``: [str], ``sentences``: [[str]]};
splits train / validation (parquet under ``distractor/``).

Prompt: ``Context:`` then paragraphs (``Title: sentences``, one per line), ``Question: ...``,
``Answer:``; question_first puts the question line first. The row's supporting paragraphs are always
included (a row whose question and supporting paragraphs do not fit is skipped); then its own
distractors; then, with ``fill`` (default), paragraphs of other rows of the split, while they fit.
Paragraph order is shuffled. Answer: the answer text then a newline. No chance level (open answer).
"""

from __future__ import annotations

from .base import Tokenizer
from .fill import fill
from .hub import QuestionOrderTask


def paragraphs(row: dict) -> list[tuple[str, str]]:
    ctx = row["context"]
    return [(t, "".join(s).strip()) for t, s in zip(ctx["title"], ctx["sentences"])]


class Hotpot(QuestionOrderTask):
    name = "hotpot"
    HUB, CONFIG = "hotpotqa/hotpot_qa", "distractor"
    COLUMNS = ("question", "answer", "supporting_facts", "context")
    EXAMPLE_FILES = "distractor/validation-00000-of-00001.parquet"

    def make(self, row, rng, tokenizer: Tokenizer, pool):
        question = f"Question: {row['question'].strip()}\n"
        head_ids, tail_ids, budget = self.framed(tokenizer, question, "Context:\n", "Answer:")
        render = lambda title, text: tokenizer.encode(f"{title}: {text}\n")  # noqa: E731
        gold = set(row["supporting_facts"]["title"])
        own = paragraphs(row)
        chosen = [render(t, x) for t, x in own if t in gold]
        budget -= sum(len(p) for p in chosen)
        if budget < 0:
            return None
        for t, x in own:
            if t not in gold:
                ids = render(t, x)
                if len(ids) <= budget:
                    chosen.append(ids)
                    budget -= len(ids)
        if self.settings.fill:
            titles = {t for t, _ in own}
            extra = fill(
                budget, pool,
                lambda r: render(*paragraphs(r)[rng.randrange(len(paragraphs(r)))]),
                rng, exclude=lambda r: r is row or bool(titles & set(r["context"]["title"])),
                exact=False,
            )
            chosen += extra
        rng.shuffle(chosen)
        prompt = head_ids + [tok for p in chosen for tok in p] + tail_ids
        return prompt, tokenizer.encode(row["answer"].strip() + "\n")
