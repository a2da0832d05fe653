"""Task adapters: ``get_task(name, **options)`` and the registry ``TASKS`` (name -> description).

Each task turns a data source into ``list[Example(prompt, answer)]`` token ids; see ``base.py`` for
the interface. Modules are imported lazily so listing tasks never imports ``datasets``.

Every task has ``order`` (unfriendly value first, the default) and ``max_prompt_len``:

| task | order | other options (defaults) |
|---|---|---|
| kv_retrieval | query_after, query_first | n_pairs 4-6, key_chars a-z, key_len 1, value_chars 0-9, value_len 1-2 (max_prompt_len 64) |
| mc_facts | options_first, question_first | n_facts 3-5, n_options 4 (192) |
| sudoku | givens_suffix, givens_prefix | size 4 or 9, blanks 6 / 30 (128) |
| arc | options_first, question_first | data_files / data_dir (512) |
| hotpot | question_after, question_first | fill true, data_files / data_dir (2048) |
| mbpp | question_after, question_first | fill true, data_files / data_dir (2048) |
| protein_ss | query_after, query_first | classes 3 or 8, max_seq_len 256, data_files / data_dir (512) |
| protein_contact | query_after, query_first | positive_share 0.5, min_separation 6, max_seq_len 256 (512) |
| punctuation | instruction_after, instruction_first | span_words 8-24, data_files / data_dir (256) |

Real-data tasks load by hub name when the hub is reachable, else from ``data_files`` / ``data_dir``
in the hub's schema (``fsray/tasks/hub.py``); ``tests/make_fixtures.py`` writes small examples of
each schema (the test fixtures under ``tests/fixtures/data``).
"""

from __future__ import annotations

import importlib

from fsray.errors import UsageError

from .base import Example, Task

# name -> (module, class, one-line description). The one place a task's description is written.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "kv_retrieval": (
        "fsray.tasks.kv_retrieval", "KVRetrieval",
        "synthetic key-value retrieval, query after (unfriendly) or before the document",
    ),
    "mc_facts": (
        "fsray.tasks.mc_facts", "MCFacts",
        "multiple choice over generated facts, options first (unfriendly) or question first",
    ),
    "sudoku": (
        "fsray.tasks.sudoku", "Sudoku",
        "sudoku 4x4 / 9x9 with unique solutions, givens after (unfriendly) or before the blanks",
    ),
    "arc": (
        "fsray.tasks.arc", "ARC",
        "ARC-Challenge multiple choice, options first (unfriendly) or question first",
    ),
    "hotpot": (
        "fsray.tasks.hotpot", "Hotpot",
        "HotpotQA distractor long context, question after (unfriendly) or first",
    ),
    "mbpp": (
        "fsray.tasks.mbpp", "MBPP",
        "MBPP code with notes filled to the max prompt length, task after (unfriendly) or first",
    ),
    "protein_ss": (
        "fsray.tasks.protein", "ProteinSS",
        "protein secondary-structure label at a queried residue, query after (unfriendly) or first",
    ),
    "protein_contact": (
        "fsray.tasks.protein", "ProteinContact",
        "protein contact-pair QA (are residues i, j in contact), query after (unfriendly) or first",
    ),
    "punctuation": (
        "fsray.tasks.punctuation", "Punctuation",
        "punctuation and case restoration of real text, instruction after (unfriendly) or first",
    ),
}

TASKS: dict[str, str] = {name: entry[2] for name, entry in _REGISTRY.items()}


def task_class(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise UsageError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    module, cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, **options) -> Task:
    """The task ``name`` with validated ``options`` (UsageError naming a bad option)."""
    return task_class(name)(**options)


__all__ = ["Example", "Task", "TASKS", "get_task", "task_class"]
