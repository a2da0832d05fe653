"""Loading real data through ``datasets``: local files in the hub's schema first, then the hub.

Sources, in order:

1. ``data_files``: a path (or list of paths) holding every row, or a mapping split -> path(s)
   (``{"train": ..., "validation": ...}``), loaded with the packaged builder its extension names
   (parquet, json/jsonl, csv, txt, arrow), the way ``datasets.load_dataset`` takes ``data_files``.
2. ``data_dir``: a folder laid out like the hub repository (``datasets`` infers splits from the
   file names, e.g. ``ARC-Challenge/validation-00000-of-00001.parquet``).
3. The hub by name, unless the hub is offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``, or no
   route to huggingface.co within 3 s): then only the local ``datasets`` cache is tried.

If none works, one UsageError names the hub dataset and both local ways.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from functools import lru_cache
from pathlib import Path

from typing import ClassVar, Literal

from pydantic import model_validator

from fsray.errors import UsageError, first_line

from .base import Example, Task, TaskOptions, Tokenizer, split_of

BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv",
            ".txt": "text", ".arrow": "arrow"}
HUB_HOST = ("huggingface.co", 443)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when the hub must not be contacted: offline flags set, or no route within 3 s."""
    if _truthy("HF_HUB_OFFLINE") or _truthy("HF_DATASETS_OFFLINE"):
        return True
    reachable: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(HUB_HOST, timeout=3):
                reachable.append(True)
        except OSError:
            pass

    # a thread bounds the wait: name resolution itself ignores the socket timeout
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(3.5)
    return not reachable


def _paths(files) -> list[str]:
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def _builder(task: str, paths: list[str]) -> str:
    kinds = set()
    for p in paths:
        suffix = "".join(Path(p).suffixes[-1:]).lower()
        if suffix not in BUILDERS:
            raise UsageError(
                f"task {task}: data_files {p!r} has an unknown extension (use one of "
                f"{', '.join(sorted(BUILDERS))})"
            )
        kinds.add(BUILDERS[suffix])
    if len(kinds) > 1:
        raise UsageError(f"task {task}: data_files mix formats {sorted(kinds)}; use one format")
    return kinds.pop()


def how_to(task: str, hub: str, config: str | None, example: str) -> str:
    name = f"{hub}" + (f" (config {config})" if config else "")
    return (
        f"pass data_files= (local files in the schema of {name}, e.g. {example}) or data_dir= "
        f"(a folder laid out like the hub repository), or allow hub access to load {name}"
    )


def load_rows(task: str, hub: str, config: str | None, split: str, *, data_files=None,
              data_dir: str | None = None, example: str = "train.parquet") -> list[dict] | None:
    """Rows of ``split`` (a hub split name). Returns None when the source has no such split but
    holds rows of others (the caller then partitions); raises UsageError when nothing loads."""
    key = json.dumps(data_files, sort_keys=True, default=str) if data_files is not None else None
    return _load_rows_cached(task, hub, config, split, key, data_dir, example)


@lru_cache(maxsize=16)
def _load_rows_cached(task, hub, config, split, files_key, data_dir, example):
    import datasets

    datasets.disable_progress_bars()
    data_files = json.loads(files_key) if files_key is not None else None
    if data_files is not None:
        mapping = data_files if isinstance(data_files, dict) else {"train": data_files}
        flat = [p for files in mapping.values() for p in _paths(files)]
        missing = [p for p in flat if not Path(p).is_file()]
        if missing:
            raise UsageError(
                f"task {task}: data_files not found: {', '.join(missing[:3])}; "
                + how_to(task, hub, config, example)
            )
        mapping = {("validation" if k == "val" else k): _paths(v) for k, v in mapping.items()}
        if split not in mapping:
            return None
        try:
            ds = datasets.load_dataset(_builder(task, flat), data_files={split: mapping[split]},
                                       split=split)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure is bad input, one line
            raise UsageError(f"task {task}: cannot read data_files for {split}: {first_line(exc, with_type=False)}") from None
        return ds.to_list()
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise UsageError(
                f"task {task}: data_dir {data_dir!r} is not a folder; " + how_to(task, hub, config, example)
            )
        try:
            dd = datasets.load_dataset(data_dir)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"task {task}: cannot read data_dir {data_dir!r}: {first_line(exc, with_type=False)}") from None
        return dd[split].to_list() if split in dd else None
    offline = hub_offline()
    saved = datasets.config.HF_HUB_OFFLINE
    try:
        if offline:
            # datasets reads its offline flag at import: force cache-only lookups here
            datasets.config.HF_HUB_OFFLINE = True
        dd = datasets.load_dataset(hub, config)
    except Exception as exc:  # noqa: BLE001
        reason = "the hub is offline and it is not cached" if offline else first_line(exc, with_type=False)
        raise UsageError(
            f"task {task}: cannot load {hub} ({reason}); " + how_to(task, hub, config, example)
        ) from None
    finally:
        datasets.config.HF_HUB_OFFLINE = saved
    return dd[split].to_list() if split in dd else None



# -- the base of real-data tasks -----------------------------------------------------------------


class HubTaskOptions(TaskOptions):
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    data_dir: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "HubTaskOptions":
        if self.data_files is not None and self.data_dir is not None:
            raise ValueError("give data_files or data_dir, not both")
        return self


class HubTask(Task):
    """A task over rows of a hub dataset. Subclasses set HUB, CONFIG, VAL_SPLITS, EXAMPLE_FILES and
    implement ``make(row, rng, tokenizer, pool) -> (prompt ids, answer ids) | None`` (None: the row
    cannot make a fitting example). ``pool`` is every row of the split (for filler notes).

    Train rows come from the hub's train split, val rows from the first of VAL_SPLITS present; a
    source without one (one file, or a hub set with one split) is partitioned by a hash of each row.
    ``REPEATS`` > 1 lets one row give several distinct examples (another position or span).
    """

    HUB: ClassVar[str] = ""
    CONFIG: ClassVar[str | None] = None
    COLUMNS: ClassVar[tuple[str, ...]] = ()  # the hub schema's columns that make() reads
    VAL_SPLITS: ClassVar[tuple[str, ...]] = ("validation",)
    EXAMPLE_FILES: ClassVar[str] = "train.parquet"
    REPEATS: ClassVar[int] = 1
    Options = HubTaskOptions

    def rows(self, split: str) -> list[dict]:
        s = self.settings
        load = lambda hub_split: load_rows(  # noqa: E731
            self.name, self.HUB, self.CONFIG, hub_split, data_files=s.data_files,
            data_dir=s.data_dir, example=self.EXAMPLE_FILES,
        )
        val = None
        for name in self.VAL_SPLITS:
            val = load(name)
            if val is not None:
                break
        train = load("train")
        for rows in (train, val):
            self._check_columns(rows)
        if val is not None and train is not None:
            return train if split == "train" else val
        everything = train if train is not None else val
        if everything is None:
            raise self.fail(
                f"the data has neither a train nor a {'/'.join(self.VAL_SPLITS)} split; "
                + how_to(self.name, self.HUB, self.CONFIG, self.EXAMPLE_FILES)
            )
        return [r for r in everything if split_of(self.row_key(r)) == split]

    def _check_columns(self, rows: list[dict] | None) -> None:
        if not rows:
            return
        missing = [c for c in self.COLUMNS if c not in rows[0]]
        if missing:
            raise self.fail(
                f"the data lacks column(s) {', '.join(missing)} of the {self.HUB} schema "
                f"(expected {', '.join(self.COLUMNS)}; found {', '.join(sorted(rows[0]))})"
            )

    def row_key(self, row: dict) -> str:
        return json.dumps(row, sort_keys=True, default=str)

    def make(self, row: dict, rng, tokenizer: Tokenizer, pool: list[dict]):
        raise NotImplementedError

    def _build(self, tokenizer: Tokenizer, split: str, n: int, seed: int) -> list[Example]:
        rows = self.rows(split)
        rng = self.rng(split, seed)
        order = list(range(len(rows)))
        out: list[Example] = []
        seen: set[tuple] = set()
        for _ in range(self.REPEATS):
            rng.shuffle(order)
            for i in order:
                try:
                    made = self.make(rows[i], rng, tokenizer, rows)
                except (KeyError, TypeError, AttributeError, ValueError) as exc:
                    raise self.fail(
                        f"{split} row {i} does not follow the {self.HUB} schema "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
                if made is None:
                    continue
                prompt, answer = made
                key = (tuple(prompt), tuple(answer))
                if key in seen:
                    continue
                seen.add(key)
                out.append(Example(list(prompt), list(answer)))
                if len(out) == n:
                    return out
        raise self.fail(
            f"only {len(out)} usable {split} examples from {len(rows)} rows, {n} requested "
            f"(rows whose prompt cannot fit max_prompt_len={self.max_prompt_len} are skipped): "
            "lower n, raise max_prompt_len or give more data"
        )


class QuestionOrderOptions(HubTaskOptions):
    order: Literal["question_after", "question_first"] = "question_after"
    max_prompt_len: int = 2048
    fill: bool = True


class QuestionOrderTask(HubTask):
    """A hub task whose prompt is a context (filled up to ``max_prompt_len``) with the question
    after it (unfriendly) or before it: the fixed parts of the prompt come from ``framed``."""

    ORDERS = ("question_after", "question_first")
    Options = QuestionOrderOptions

    def framed(self, tokenizer, question: str, material: str, cue: str) -> tuple[list[int], list[int], int]:
        """The fixed parts of a question-order prompt: ``material`` (the header of the context the
        example fills in) then the question then ``cue`` with ``order: question_after``, the
        question first otherwise. Returns (head ids, tail ids, token budget left for the context)."""
        if self.settings.order == "question_after":
            head, tail = material, "\n" + question + cue
        else:
            head, tail = question + material, "\n" + cue
        head_ids, tail_ids = tokenizer.encode(head), tokenizer.encode(tail)
        return head_ids, tail_ids, self.max_prompt_len - len(head_ids) - len(tail_ids)
