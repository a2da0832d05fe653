"""Load paired results from files or directories into one normalised table.

Formats are recognised by content, never by extension:

* fsray results stores (JSONL records of schema ``fsray.paired/1``, see ``analysis.schema``);
* the researchers' files (``analysis.legacy``): paired-block summaries, staged search records and
  summaries, single-run sweeps, and ``_aggregate_results.jsonl`` (figures only: a cross-check);
* a plain CSV or JSONL table with a config, a seed and a baseline and an FS metric per row
  (``baseline_acc``/``fs_acc``, ``no_fs``/``prompt_fs``, ... see ``COLUMN_ALIASES``).

``load(paths)`` returns ``Loaded(df, problems, skipped, notes, ...)``: one row per paired seed with the
columns of ``COLUMNS``. Records of status failed/noop stay in ``df`` (their status says so) and are
kept out of the statistics by the report. ``problems`` are input lines or records that were dropped,
``skipped`` whole files; both name the file (and line).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import legacy
from .errors import AnalysisInputError
from .schema import (DELTA_NAMES, METRIC_SHORT, SCHEMA, json_lines, not_json, paired_delta, read_records,
                     record_semantics, run_metric, semantics_mismatch, validate_record)

COLUMNS = (
    "source", "line", "task", "config", "config_hash", "stage", "seed",
    "base_acc", "fs_acc", "d_acc", "base_loss", "fs_loss", "d_loss", "base_seq", "fs_seq", "d_seq",
    "base_learned", "fs_learned", "chance_acc", "chance_seq", "status",
)
# Extra columns carried when known: trial_id, failure, learned_margin and learned_metric (acc|seq:
# what the recorded learned flags judged), pruned (legacy PRUNE mark), config_json (the FS knobs),
# format (the detected input format), settle_round / settle_horizon (the settling round a record
# belongs to and its design's seed horizon: the looks a verdict replays, analysis.verdict),
# task_options_json / init_hash (a record's task options and its runs' initial-weights digest) and
# legacy_config (a researchers' file's configuration object): the factors and the pairing rule of
# analysis.contrast.
EXTRA_COLUMNS = ("trial_id", "failure", "learned_margin", "learned_metric", "pruned", "settle_round",
                 "settle_horizon", "config_json",
                 "format", "task_options_json", "init_hash", "legacy_config",
                 # per-item eval outcomes of each run (analysis.evalsplit form) and the eval items
                 # per run where a file states them (the variance split)
                 "base_items", "fs_items", "eval_n",
                 "settle_design",   # the design a settling search ran (sprt | spending)
                 "settle_curtail")  # ... and its curtailment level (absent before it had one)

# Plain tables: accepted column names (lower-cased) for each normalised column.
COLUMN_ALIASES = {
    "base_acc": ("base_acc", "baseline_acc", "no_fs_acc", "acc_no_fs", "baseline", "no_fs",
                 "baseline_token_acc", "no_fs_token_acc", "base_token_acc"),
    "fs_acc": ("fs_acc", "prompt_fs_acc", "acc_fs", "acc_prompt_fs", "fs", "prompt_fs",
               "fs_token_acc", "prompt_fs_token_acc"),
    "base_loss": ("base_loss", "baseline_loss", "no_fs_loss", "loss_no_fs"),
    "fs_loss": ("fs_loss", "prompt_fs_loss", "loss_fs", "loss_prompt_fs"),
    "base_seq": ("base_seq", "baseline_seq", "no_fs_seq", "baseline_seq_acc", "no_fs_seq_acc",
                 "base_seq_acc"),
    "fs_seq": ("fs_seq", "prompt_fs_seq", "fs_seq_acc", "prompt_fs_seq_acc"),
    "d_acc": ("d_acc", "delta_acc", "delta"),
    "d_loss": ("d_loss", "delta_loss"),
    "d_seq": ("d_seq", "delta_seq"),
    "config": ("config", "config_label", "cfg", "configuration", "name"),
    "task": ("task",),
    "seed": ("seed",),
    "stage": ("stage",),
    "status": ("status",),
    "config_hash": ("config_hash",),
    "base_learned": ("base_learned", "baseline_learned", "no_fs_learned"),
    "fs_learned": ("fs_learned", "prompt_fs_learned"),
    "chance_acc": ("chance_acc", "chance_token_acc"),
    "chance_seq": ("chance_seq", "chance_seq_acc"),
}
_NUMERIC = ("base_acc", "fs_acc", "base_loss", "fs_loss", "base_seq", "fs_seq", "d_acc", "d_loss",
            "d_seq", "chance_acc", "chance_seq")

# Files a directory walk passes over without a word: pictures, pages, code, configs, checkpoints.
_IGNORED_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".pdf", ".html", ".htm", ".py", ".yaml",
                     ".yml", ".toml", ".log", ".pkl", ".pt", ".pth", ".ckpt", ".safetensors",
                     ".md", ".lock", ".db", ".sqlite", ".npz", ".npy", ".parquet", ".pyc",
                     ".damaged"}   # what fsray set aside as unreadable (results.jsonl.damaged, ...)
# What an fsray search directory holds besides its results (fsray.search.driver): passed over in a
# directory walk, as is any folder of Ray Tune experiment state.
RUN_METADATA = {"space.json", "summary.json", "baselines.jsonl", "contrast.json"}


def _is_tune_state(names: list[str]) -> bool:
    return "tuner.pkl" in names or any(n.startswith("experiment_state") for n in names)
_MAX_BYTES = 200 * 1024 * 1024


@dataclass
class Loaded:
    df: pd.DataFrame
    problems: list[str] = field(default_factory=list)   # dropped lines/records: "file:line: why"
    skipped: list[str] = field(default_factory=list)    # whole files: "file: why"
    notes: list[str] = field(default_factory=list)      # recognised but not paired, assumptions
    formats: dict[str, str] = field(default_factory=dict)  # file -> detected format
    blocks: list = field(default_factory=list)          # legacy.PairedBlock, with printed figures
    importance: dict | None = None                      # tuner's importance.json, if found

    @property
    def usable(self) -> bool:
        return bool(len(self.df)) and bool((self.df["status"] == "ok").any())


# --------------------------------------------------------------------------------------------------
# file discovery


def _expand(paths: Iterable[str | os.PathLike], out: Loaded) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                if _is_tune_state(names):
                    out.notes.append(f"{root}: Ray Tune experiment state, not results: passed over")
                    dirs[:] = []
                    continue
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    if (name.startswith(".") or f.suffix.lower() in _IGNORED_SUFFIXES
                            or name in RUN_METADATA):
                        continue
                    files.append(f)
        elif p.is_file():
            files.append(p)
        else:
            out.skipped.append(f"{p}: no such file or directory")
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _read_text(path: Path, out: Loaded) -> tuple[str, bool] | None:
    """(text, whether every byte was UTF-8), or None (the file is skipped, and said why). A file
    with bytes that are not UTF-8 is decoded with replacement characters for detection only: an
    fsray store is then read line by line (one damaged line is skipped, not the file)."""
    try:
        if path.stat().st_size > _MAX_BYTES:
            out.skipped.append(f"{path}: larger than {_MAX_BYTES >> 20} MB; not a results file")
            return None
        raw = path.read_bytes()
    except OSError as exc:
        out.skipped.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return None
    if b"\x00" in raw[:4096]:
        out.skipped.append(f"{path}: binary file, not a results file")
        return None
    clean = True
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text, clean = raw.decode("utf-8", errors="replace"), False
    if not text.strip():
        out.skipped.append(f"{path}: empty file")
        return None
    return text, clean


# --------------------------------------------------------------------------------------------------
# detection


def _first_json_objects(text: str, k: int = 5) -> list[dict]:
    objs = []
    for _, obj in json_lines(text.splitlines()):
        if isinstance(obj, dict):
            objs.append(obj)
        if len(objs) >= k:
            break
    return objs


def _plain_columns(names: Iterable[str]) -> dict[str, str]:
    """Map normalised column -> the table's column name, for the aliases present."""
    lower = {str(n).strip().lower(): n for n in names}
    found = {}
    for col, aliases in COLUMN_ALIASES.items():
        for a in aliases:
            if a in lower:
                found[col] = lower[a]
                break
    return found


def _is_plain(cols: dict[str, str]) -> bool:
    has_pair = "base_acc" in cols and "fs_acc" in cols
    return "seed" in cols and "config" in cols and (has_pair or "d_acc" in cols)


def _delimiter(header_line: str) -> str:
    return "\t" if "\t" in header_line and "," not in header_line else ","


def detect(text: str) -> tuple[str | None, str]:
    """(format, reason): format is 'fsray', a legacy shape, 'plain_jsonl', 'plain_csv',
    'importance' or None (reason says what the file looks like)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        objs = _first_json_objects(text)
        if any(o.get("schema") == SCHEMA for o in objs):
            return "fsray", ""
        if any(str(o.get("schema", "")).startswith("fsray.") for o in objs):
            return None, f"fsray schema {objs[0].get('schema')!r} is not {SCHEMA!r} (newer fsray?)"
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and ("mean_delta" in doc or "spread" in doc):
            return "importance", ""
        if isinstance(doc, dict) and "experiments" in doc:
            return None, "an experiment manifest (no per-seed results)"
        shape = legacy.detect(text)
        if shape:
            return shape, ""
        if objs and _is_plain(_plain_columns(objs[0])):
            return "plain_jsonl", ""
        if objs and any(k.startswith(("val_r", "r@", "val_mrr")) for k in objs[0]):
            return None, "retrieval metrics (R@k, MRR) without a paired token accuracy"
        if not objs:
            return None, "starts like JSON but no line parses (truncated or malformed)"
        return None, "JSON lines without the fields of a known format (schema, config+seed+metrics)"
    shape = legacy.detect(text)
    if shape:
        return shape, ""
    if re.search(r"\bR@\d|\bMRR", text):
        return None, "retrieval metrics (R@k, MRR) without a paired token accuracy"
    first = text.splitlines()[0] if text.splitlines() else ""
    if "," in first or "\t" in first:
        try:
            header = next(csv.reader(io.StringIO(first), delimiter=_delimiter(first)))
        except (csv.Error, StopIteration):
            header = []
        cols = _plain_columns(header)
        if _is_plain(cols):
            return "plain_csv", ""
        if len(cols) < 2:  # prose with a comma, or a table of something else
            return None, ("unknown format (not an fsray results store, a researchers' file or a "
                          "paired table)")
        if "seed" not in cols:
            return None, "a table without a 'seed' column"
        return None, ("a table without a config column and a baseline/FS metric pair "
                      "(e.g. baseline_acc,fs_acc)")
    return None, "unknown format (not an fsray results store, a researchers' file or a paired table)"


# --------------------------------------------------------------------------------------------------
# fsray records


def _run_metric(run: dict | None, key: str) -> float:
    v = run_metric(run, key)
    return math.nan if v is None else v


def _settle(rec: dict, key: str) -> float:
    """An integer field of the record's ``settle`` object (NaN when absent)."""
    v = (rec.get("settle") or {}).get(key) if isinstance(rec.get("settle"), dict) else None
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else math.nan


def _settle_probability(rec: dict, key: str) -> float:
    """A probability field of the record's ``settle`` object (NaN when absent or not one)."""
    v = (rec.get("settle") or {}).get(key) if isinstance(rec.get("settle"), dict) else None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) < 1.0
    return float(v) if ok else math.nan


def _fsray_rows(path: Path, out: Loaded) -> list[dict]:
    res = read_records(path)
    out.problems.extend(res.problems)
    lines = res.lines
    rows = []
    old_semantics = 0
    for k, rec in enumerate(res.records):
        base, fs = rec.get("baseline"), rec.get("fs")
        chance = rec.get("chance") or {}
        chash = str(rec["config_hash"])
        label = str(rec.get("config_label") or f"cfg {chash[:8]}")
        if semantics_mismatch(rec) is not None:
            # same knobs, another transform: a configuration of its own, never pooled with today's
            old_semantics += 1
            v = record_semantics(rec)
            chash, label = f"{chash}~fs{v}", f"{label} [FS semantics {v}]"
        row = {
            "source": str(path), "line": lines[k] if k < len(lines) else 0,
            "task": str(rec["task"]), "config_hash": chash,
            "config": label,
            "stage": str(rec.get("stage") or "selection"), "seed": int(rec["seed"]),
            "status": rec["status"], "trial_id": rec.get("trial_id"),
            "failure": rec.get("failure") or (base or {}).get("failure") or (fs or {}).get("failure"),
            "chance_acc": _run_metric(chance, "token_acc"), "chance_seq": _run_metric(chance, "seq_acc"),
            "learned_margin": _run_metric(rec, "learned_margin"),
            "learned_metric": {m: METRIC_SHORT[m] for m in ("token_acc", "seq_acc")}.get(rec.get("learned_metric")),
            "base_learned": (base or {}).get("learned") if isinstance(base, dict) else None,
            "fs_learned": (fs or {}).get("learned") if isinstance(fs, dict) else None,
            "config_json": json.dumps(rec.get("config") or {}, sort_keys=True),
            "settle_round": _settle(rec, "round"), "settle_horizon": _settle(rec, "horizon"),
            "task_options_json": (json.dumps(rec["task_options"], sort_keys=True, default=str)
                                  if isinstance(rec.get("task_options"), dict) else None),
            "init_hash": _init_hash(base, fs),
            "settle_design": (rec.get("settle") or {}).get("design") if isinstance(rec.get("settle"), dict) else None,
            "settle_curtail": _settle_probability(rec, "curtail"),
            "base_items": (base or {}).get("eval_items") if isinstance(base, dict) else None,
            "fs_items": (fs or {}).get("eval_items") if isinstance(fs, dict) else None,
        }
        if isinstance(row["base_items"], dict) and isinstance(row["base_items"].get("n"), int):
            row["eval_n"] = row["base_items"]["n"]
        for key, short in METRIC_SHORT.items():
            d = paired_delta(rec, key)
            row[f"base_{short}"], row[f"fs_{short}"] = _run_metric(base, key), _run_metric(fs, key)
            row[DELTA_NAMES[key]] = math.nan if d is None else d
        rows.append(row)
    if old_semantics:
        out.notes.append(f"{path}: {old_semantics} record(s) of input-gate configurations made under an "
                         f"older FS semantics are reported apart (labelled [FS semantics N])")
    return rows


def _init_hash(base, fs) -> str | None:
    """The digest of the initial weights both runs of a pair started from (None: not recorded, or
    the two runs disagree)."""
    b = base.get("init_hash") if isinstance(base, dict) else None
    f = fs.get("init_hash") if isinstance(fs, dict) else None
    return str(b) if b and (f is None or f == b) else None


# --------------------------------------------------------------------------------------------------
# plain tables


def _to_bool(v) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "t"):
        return True
    if s in ("0", "false", "no", "n", "f"):
        return False
    return None


def _plain_rows(path: Path, records: list[tuple[int, dict]], out: Loaded) -> list[dict]:
    """Rows of a plain table; ``records`` are (line number, mapping of the file's columns, or the
    reason a line could not be read)."""
    rows = []
    for line, rec in records:
        if isinstance(rec, str):  # the reader's verdict on a malformed line
            out.problems.append(f"{path}:{line}: {rec}")
            continue
        cols = _plain_columns(rec.keys())
        where = f"{path}:{line}"
        get = lambda c: rec.get(cols[c]) if c in cols else None  # noqa: E731
        seed = get("seed")
        if seed is None or (isinstance(seed, float) and math.isnan(seed)) or str(seed).strip() == "":
            out.problems.append(f"{where}: record without a seed; skipped")
            continue
        try:
            seed_f = float(seed)
            if not seed_f.is_integer():
                raise ValueError
            seed = int(seed_f)
        except (TypeError, ValueError):
            out.problems.append(f"{where}: seed must be an integer, got {seed!r}; skipped")
            continue
        config = get("config")
        if config is None or str(config).strip() == "" or str(config) == "nan":
            out.problems.append(f"{where}: record without a config; skipped")
            continue
        row = {"source": str(path), "line": line, "seed": seed, "config": str(config),
               "task": str(get("task") or path.stem), "stage": str(get("stage") or "import"),
               "status": str(get("status") or "ok")}
        bad = None
        for c in _NUMERIC:
            v = get(c)
            if v is None or (isinstance(v, str) and v.strip() == ""):
                row[c] = math.nan
                continue
            try:
                row[c] = float(v)
            except (TypeError, ValueError):
                bad = f"{where}: column {cols[c]!r} is not a number ({v!r}); skipped"
                break
            if not math.isfinite(row[c]) and not (isinstance(v, float) and math.isnan(v)):
                bad = f"{where}: column {cols[c]!r} is not finite ({v!r}); skipped"
                break
        if bad:
            out.problems.append(bad)
            continue
        for short in ("acc", "loss", "seq"):
            b, f = row[f"base_{short}"], row[f"fs_{short}"]
            if not (math.isnan(b) or math.isnan(f)):
                row[f"d_{short}"] = f - b
        if math.isnan(row["d_acc"]) and row["status"] == "ok":
            out.problems.append(f"{where}: no baseline/FS accuracy pair and no d_acc; skipped")
            continue
        row["base_learned"], row["fs_learned"] = _to_bool(get("base_learned")), _to_bool(get("fs_learned"))
        row["config_hash"] = str(get("config_hash") or legacy.content_hash({"plain": row["config"]}))
        rows.append(row)
    return rows


def _plain_jsonl(path: Path, text: str, out: Loaded) -> list[dict]:
    records = []
    for i, obj in json_lines(text.splitlines()):
        if isinstance(obj, json.JSONDecodeError):
            records.append((i, not_json(obj)))
            continue
        records.append((i, obj if isinstance(obj, dict) else "not a JSON object; skipped"))
    return _plain_rows(path, records, out)


def _plain_csv(path: Path, text: str, out: Loaded) -> list[dict]:
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text.splitlines()[0]))
    header = next(reader)
    records = []
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            records.append((line, f"{len(row)} fields, header has {len(header)} (truncated or "
                                  "malformed row); skipped"))
            continue
        records.append((line, dict(zip(header, row))))
    return _plain_rows(path, records, out)


# --------------------------------------------------------------------------------------------------
# duplicates and load()


def _same(a: dict, b: dict) -> bool:
    for c in ("base_acc", "fs_acc", "d_acc", "d_loss", "d_seq"):
        x, y = a.get(c, math.nan), b.get(c, math.nan)
        if math.isnan(x) and math.isnan(y):
            continue
        if math.isnan(x) or math.isnan(y) or abs(x - y) > 1e-12:
            return False
    return True


def _drop_duplicates(rows: list[dict], out: Loaded) -> list[dict]:
    """One row per (task, config, stage, seed): identical copies count once; conflicting copies are
    all dropped (which one is right cannot be told) and listed."""
    first: dict[tuple, int] = {}
    conflicts: set[tuple] = set()
    keep: list[dict] = []
    for row in rows:
        key = (row["task"], row["config_hash"], row["stage"], row["seed"])
        if key not in first:
            first[key] = len(keep)
            keep.append(row)
            continue
        orig = keep[first[key]]
        where = f"{row['source']}:{row['line']}"
        was = f"{orig['source']}:{orig['line']}"
        if _same(orig, row):
            out.problems.append(f"{where}: duplicate of {was} ({row['config']}, seed {row['seed']}, "
                                "same values): counted once")
        else:
            out.problems.append(f"{where}: conflicts with {was} ({row['config']}, seed {row['seed']}, "
                                f"d_acc {row['d_acc']:+.4f} vs {orig['d_acc']:+.4f}): both dropped")
            conflicts.add(key)
    return [r for r in keep if (r["task"], r["config_hash"], r["stage"], r["seed"]) not in conflicts]


_ROUND = re.compile(r"round(\d+)")


def load(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Loaded:
    """Load every recognised file under ``paths`` into one normalised table (see module doc)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = Loaded(pd.DataFrame(columns=list(COLUMNS)))
    files = _expand(list(paths), out)
    rows: list[dict] = []
    legacy_files: list[legacy.LegacyFile] = []
    for path in files:
        read = _read_text(path, out)
        if read is None:
            continue
        text, clean = read
        fmt, reason = detect(text)
        if fmt is None:
            out.skipped.append(f"{path}: {reason if clean else 'not UTF-8 text, not a results file'}")
            continue
        if not clean and fmt != "fsray":   # only a results store is read line by line
            out.skipped.append(f"{path}: not UTF-8 text ({fmt} files are read whole)")
            continue
        out.formats[str(path)] = fmt
        if fmt == "fsray":
            new = _fsray_rows(path, out)
        elif fmt == "importance":
            try:
                out.importance = json.loads(text)
            except json.JSONDecodeError:
                out.skipped.append(f"{path}: importance file is not valid JSON")
            continue
        elif fmt == "plain_jsonl":
            new = _plain_jsonl(path, text, out)
        elif fmt == "plain_csv":
            new = _plain_csv(path, text, out)
        else:
            lf = legacy.parse_file(path, text)
            legacy_files.append(lf)
            out.problems.extend(lf.problems)
            out.notes.extend(lf.notes)
            out.blocks.extend(lf.blocks)
            if lf.skipped:
                out.skipped.append(f"{path}: {lf.skipped}")
            new = lf.rows
        for r in new:
            r.setdefault("format", fmt)
        rows.extend(new)
        if not new and fmt in ("fsray", "plain_jsonl", "plain_csv"):
            out.skipped.append(f"{path}: no usable record")

    rows = _prefer_records(rows, legacy_files, out)
    out.notes.extend(legacy.cross_check_aggregates(legacy_files))
    rows = _drop_duplicates(rows, out)
    df = pd.DataFrame(rows)
    for c in (*COLUMNS, *EXTRA_COLUMNS):
        if c not in df.columns:
            df[c] = None if c in ("base_learned", "fs_learned", "trial_id", "failure", "pruned",
                                  "config_json", "format", "learned_metric", "task_options_json",
                                  "init_hash", "legacy_config", "base_items", "fs_items",
                                  "settle_design") else (math.nan if c not in
                                  ("source", "task", "config", "config_hash", "stage", "status")
                                  else "")
    out.df = df[[*COLUMNS, *EXTRA_COLUMNS]].reset_index(drop=True)
    return out


def _prefer_records(rows: list[dict], files: list[legacy.LegacyFile], out: Loaded) -> list[dict]:
    """A round's text summary and its ``*_records.jsonl`` hold the same runs; the records have full
    precision, so where both are loaded the summary's rows are dropped (its blocks still checked)."""
    record_rounds = {}
    for f in files:
        m = _ROUND.search(Path(f.path).name)
        if f.shape == "staged_records" and m:
            record_rounds[m.group(1)] = f.path
    drop = set()
    for f in files:
        m = _ROUND.search(Path(f.path).name)
        if f.shape != "staged_records" and m and m.group(1) in record_rounds and f.rows:
            drop.add(f.path)
            out.notes.append(f"{f.path}: rows taken from {Path(record_rounds[m.group(1)]).name} "
                             "(same runs, full precision)")
    # What the superseded summary said about unpaired runs, the records file says again.
    out.notes[:] = [n for n in out.notes
                    if not any(n.startswith(f"{d}:") and "rows taken from" not in n for d in drop)]
    return [r for r in rows if r["source"] not in drop]
