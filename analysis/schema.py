"""The one versioned schema of a paired seed record, shared by the trainer, the tuner and the analysis.

A results store is a JSONL file (``results.jsonl``): one JSON object per line, one line per finished
paired seed (or per failed / provably no-op one). Lines are appended with a single ``write`` of the
whole line followed by ``fsync``, so a crash can at worst leave one truncated *last* line, which the
reader reports and skips; nothing completed before it is lost.

Record, schema ``fsray.paired/1``::

    {
      "schema": "fsray.paired/1",
      "task": "kv_retrieval/query_after",     # task name + ordering option, a grouping key
      "config": {...},                         # FS knobs (FSConfig.model_dump()), or {} for plain pairs
      "config_hash": "1a2b3c4d5e6f",          # fsray.fsconfig.config_hash(config), 12 hex chars
      "config_label": "lstart=1 alpha=-2 ...", # short human label (optional)
      "seed": 0,                                # int, required
      "stage": "selection",                    # selection | confirmation | train (fsray train) | import
      "trial_id": "abc",                       # optional: Tune trial / search candidate id
      "status": "ok",                          # ok | failed | noop
      "failure": null,                         # reason string when status == failed
      "chance": {"token_acc": 0.1, "seq_acc": 0.2},  # optional: chance level of the task
      "learned_margin": 0.1,                   # optional: margin above chance that counts as learned
      "baseline": RunResult,                   # the no_fs run (null when status is noop/failed early)
      "fs": RunResult,                         # the prompt_fs run (for noop: a copy of baseline)
      "settle": {"round": 2, "horizon": 20},   # optional: settling round of a confirmation seed and
                                               # its design's seed horizon (analysis.verdict)
      "model": {...}, "budget": {...},         # optional: what determined the runs
      "fs_semantics": 2,                       # version of the FS transform's meaning (below)
      "code_version": "0.1.0+g1234abc",
      "time": "2026-11-25T18:00:00Z"
    }

RunResult::

    {"mode": "no_fs" | "prompt_fs", "status": "ok" | "failed", "failure": null | str,
     "token_acc": float, "loss": float, "seq_acc": float,    # at the best-token-acc eval
     "best_step": int, "steps": int, "tokens": int, "seconds": float,
     "curve": [[step, token_acc, loss, seq_acc], ...],
     "learned": bool | null,                                  # metric above chance + margin
     "cached": bool,                                          # baseline reused from the cache
     "eval_items": {"unit": "example", "n": int, "dtype": "u1" | "u2",   # optional: per eval
                    "tokens": base64, "correct": base64}}    # example at that eval (analysis.evalsplit)

Paired deltas are always ``fs - baseline``: d_acc (token accuracy), d_loss, d_seq.

``fs_semantics`` says what the FS knobs in ``config`` meant when the record was made; a record
without it predates the field and is version 1. Version 1 (fsray before 2026-12-02) computed the input
gate as a product of two sigmoids over layer i's ln1 output; version 2 is the researchers' definition
(docs/DESIGN.md §3: one sigmoid over the sum, on layer i's input). Per-head records of version 1 carry an
explicit ``head_alpha_init`` (then 0.0), which version 2 honours, so only input-gate records changed
meaning: ``semantics_mismatch`` names them, and readers keep them apart (never pooled with version 2).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import AnalysisInputError

SCHEMA = "fsray.paired/1"
STAGES = ("selection", "confirmation", "train", "import")
STATUSES = ("ok", "failed", "noop")
MODES = ("no_fs", "prompt_fs")              # RunResult.mode: the baseline run, the FS run
METRICS = ("token_acc", "loss", "seq_acc")  # what a RunResult measures (at its best evaluation)
# Their short names: report columns (base_acc, fs_acc, d_acc, ...), ``fsray report --metric``, a
# search's ``objective.metric``.
METRIC_SHORT = {"token_acc": "acc", "loss": "loss", "seq_acc": "seq"}
METRIC_OF_SHORT = {short: metric for metric, short in METRIC_SHORT.items()}
METRIC_TEXT = {"acc": "token accuracy", "loss": "loss", "seq": "sequence accuracy"}  # by short name
DELTA_NAMES = {metric: f"d_{short}" for metric, short in METRIC_SHORT.items()}     # paired-delta columns


def task_label(name: str, options: dict | None) -> str:
    """A record's ``task``, its grouping key: the task's name, plus the ordering option when there
    is one (``kv_retrieval/query_after``)."""
    for key in ("order", "ordering"):
        if options and key in options:
            return f"{name}/{options[key]}"
    return name


def mode_name(fs) -> str:
    """The RunResult mode of a run with FS configuration ``fs`` (None: the no_fs baseline)."""
    return "prompt_fs" if fs is not None else "no_fs"


def run_metric(run: Any, metric: str) -> float | None:
    """A run's ``metric`` as a finite float; None where the run or the value is missing or not one."""
    return _finite_or_none(run.get(metric)) if isinstance(run, dict) else None


def paired_delta(rec: dict, metric: str) -> float | None:
    """The paired delta of a record: ``fs - baseline`` of ``metric`` (deltas are always that way
    round); None where either run lacks a finite value. Status is the caller's business (a no-op
    counts as 0 in a search, a failed seed as no seed)."""
    base, fs = run_metric(rec.get("baseline"), metric), run_metric(rec.get("fs"), metric)
    return None if base is None or fs is None else fs - base


FS_SEMANTICS = 2


def record_semantics(rec: dict) -> int:
    v = rec.get("fs_semantics", 1)
    return v if isinstance(v, int) and not isinstance(v, bool) else -1


def semantics_mismatch(rec: dict) -> str | None:
    """Why ``rec``'s FS configuration means something else under ``FS_SEMANTICS`` (None if it does
    not: no FS, a version-2 record, or a version-1 record without the input gate)."""
    version, config = record_semantics(rec), rec.get("config") or {}
    if version == FS_SEMANTICS or not config:
        return None
    if version == 1:
        if config.get("fs_input_gate"):
            return ("its fs_input_gate was fsray's FS semantics 1 (two sigmoids on the ln1 output), "
                    f"not the researchers' gate (semantics {FS_SEMANTICS})")
        return None
    return f"unknown fs_semantics {rec.get('fs_semantics')!r} (this version knows 1 and {FS_SEMANTICS})"


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def validate_record(rec: Any, where: str = "record") -> dict:
    """Check a record against ``fsray.paired/1``; raise AnalysisInputError naming ``where``."""
    if not isinstance(rec, dict):
        raise AnalysisInputError(f"{where}: not a JSON object")
    if rec.get("schema") != SCHEMA:
        raise AnalysisInputError(f"{where}: schema is {rec.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("task", "config_hash", "seed", "status"):
        if key not in rec or rec[key] is None:
            raise AnalysisInputError(f"{where}: missing field {key!r}")
    if isinstance(rec["seed"], bool) or not isinstance(rec["seed"], int):
        raise AnalysisInputError(f"{where}: seed must be an integer, got {rec['seed']!r}")
    if rec["status"] not in STATUSES:
        raise AnalysisInputError(f"{where}: status {rec['status']!r} not in {STATUSES}")
    if rec["status"] == "ok":
        for side in ("baseline", "fs"):
            run = rec.get(side)
            if not isinstance(run, dict):
                raise AnalysisInputError(f"{where}: status ok but {side!r} run is missing")
            if run_metric(run, "token_acc") is None:
                raise AnalysisInputError(f"{where}: {side}.token_acc is missing or not finite")
    return rec


def append_record(path: str | os.PathLike, rec: dict) -> None:
    """Append one record durably: one write of the whole line, flushed and fsynced."""
    validate_record(rec)
    line = json.dumps(rec, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A previous crash may have left a truncated last line without "\n": start on a fresh line so
    # this record stays parseable (the reader skips and reports the fragment).
    prefix = ""
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = "\n"
    data = (prefix + line).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError:
            # a full disk (or a short write) must not leave a fragment: cut the file back to what it
            # held, so every record before stays whole and the seed simply has no record yet
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


@dataclass
class ReadResult:
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "file:line: what is wrong"
    lines: list[int] = field(default_factory=list)      # line number of each record, in order
    bad: list[tuple[int, bytes]] = field(default_factory=list)  # (line number, raw bytes) not read


def json_lines(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-empty line of a JSON-lines text, numbered from 1; a
    line that is not valid JSON gives its ``json.JSONDecodeError`` in place of the value (the caller
    reports or skips it: ``not_json``)."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            value = exc
        yield lineno, value


def not_json(exc: json.JSONDecodeError) -> str:
    """What a malformed JSON line is called in a problem line (at worst a truncated last line)."""
    return f"not valid JSON ({exc.msg}); truncated line?"


def read_records(path: str | os.PathLike) -> ReadResult:
    """Read a results store; a line that is not a record (truncated, malformed, bytes that are not
    UTF-8, a record that fails the schema) is reported in ``problems``, kept in ``bad`` and skipped:
    one damaged line never makes the others unreachable. Lines are split and decoded one by one."""
    out = ReadResult()
    path = Path(path)
    if not path.exists():
        raise AnalysisInputError(f"{path}: no such file")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                out.problems.append(f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                    f"{exc.start + 1}); damaged line skipped")
                out.bad.append((lineno, raw))
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                out.problems.append(f"{where}: {not_json(exc)}")
                out.bad.append((lineno, raw))
                continue
            try:
                out.records.append(validate_record(rec, where))
                out.lines.append(lineno)
            except AnalysisInputError as exc:
                out.problems.append(str(exc))
                out.bad.append((lineno, raw))
    return out


def iter_ok(records: list[dict]) -> Iterator[dict]:
    return (r for r in records if r.get("status") == "ok")
