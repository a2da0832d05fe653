"""Import of the researchers' own result files (before fsray existed).

Three shapes, recognised by content:

* paired blocks (``_summary_<task>_<ordering>_*.txt``): a header ``L=512 pairs=3 mean d_acc=+0.0052
  std=0.0184 | mean d_loss=... | sign(+/0/-)=2/0/1`` then one ``seed=...`` line per pair; several blocks
  per file (one per prompt length). The seed-check rounds print the same idea in percent points
  (``seed=0: baseline=9.18% fs=9.99% d_acc=+0.80pp`` ... ``mean d_acc=+1.19pp, positive_seeds=3/3``).
* staged searches: ``*_records.jsonl`` (one JSON line per run: task, stage quick|med|probe, config
  ``baseline`` or a candidate name, best_val_tok_acc, best_val_loss) and their text summaries
  (``baseline quick: acc=...`` then candidate lines with ``[PRUNE]``/``[KEEP]`` marks). Candidates import
  as deltas against the baseline of their own stage (same task, seed and batch size); a stage without a
  baseline of its own (the researchers' "med" confirmations) cannot be paired and is listed.
* single-run sweeps (``_summary_squad_*.txt``): a settings line ``seed=0 q_first=False lr=... `` then
  ``no_fs`` / ``prompt_fs`` lines with ``best_acc=X@step``; a block holding both modes is one pair.

Every block keeps its own printed figures (``PairedBlock.printed``) so that they can be held against
the figures recomputed from its seed lines (``recompute_block``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .schema import json_lines, not_json

SHAPES = ("paired_blocks", "staged_records", "staged_summary", "single_run_sweep", "aggregate")

# Stage names of the researchers' staged search -> stages of the fsray schema.
STAGE_MAP = {"quick": "selection", "med": "confirmation", "medium": "confirmation"}

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BLOCK_HEAD = re.compile(r"^\s*(?:L=(?P<L>\d+)\s+)?pairs=(?P<pairs>\d+)\s+mean d_acc=")
_SEED_LINE = re.compile(r"^\s*seed=(?P<seed>\d+)\s+d_acc=")
_PP_SEED_LINE = re.compile(
    rf"^\s*seed=(?P<seed>\d+):\s*baseline=(?P<base>{_NUM})%\s+fs=(?P<fs>{_NUM})%\s+d_acc=(?P<d>{_NUM})pp"
)
_PP_MEAN_LINE = re.compile(
    rf"^\s*mean d_acc=(?P<mean>{_NUM})pp,\s*positive_seeds=(?P<pos>\d+)/(?P<n>\d+)"
)
_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_SEP = re.compile(r"^\s*[=\-]{10,}\s*$")
_FILE_TASK = re.compile(r"^_summary_(?P<task>.+?)_(?P<order>optionsfirst|qfirst|qafter|prefix|suffix)(?:_|$)")
_SEED_SUFFIX = re.compile(r"_s\d+$")


def fnum(text: str) -> float:
    """A number as the researchers printed it: ``0.1234``, ``+1.00pp`` or ``15.49%`` -> fraction."""
    text = text.strip()
    if text.endswith("pp") or text.endswith("%"):
        return float(text.rstrip("p%")) / 100.0
    return float(text)


def content_hash(obj: Any) -> str:
    """12-hex hash of canonical JSON: the recipe of ``fsray.fsconfig.config_hash`` (torch/pydantic-free)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class PairedBlock:
    """One printed block of paired seeds: the file's own figures and the seed rows under it."""

    source: str
    line: int
    label: str                      # "L=512", "quick", "mbpp_low + scalar_l8_trainable", ...
    printed: dict[str, float]       # pairs, mean_d_acc, std_d_acc, ..., sign_pos/zero/neg (as printed)
    rows: list[dict] = field(default_factory=list)


@dataclass
class LegacyFile:
    path: str
    shape: str | None = None        # one of SHAPES, None when nothing fits
    rows: list[dict] = field(default_factory=list)         # normalised paired rows
    blocks: list[PairedBlock] = field(default_factory=list)
    aggregates: list[dict] = field(default_factory=list)   # rows of _aggregate_results.jsonl
    problems: list[str] = field(default_factory=list)      # "file:line: what is wrong" (dropped)
    notes: list[str] = field(default_factory=list)         # what was recognised but not paired
    skipped: str | None = None      # why the whole file was skipped


def _row(source: str, line: int, task: str, config: str, config_obj: Any, stage: str, seed: int,
         base: dict, fs: dict, **extra) -> dict:
    """A normalised paired row (the loader's columns); metrics absent from a file stay NaN."""
    nan = math.nan
    row = {
        "source": source, "line": line, "task": task, "config": config,
        "config_hash": content_hash(config_obj), "stage": stage, "seed": int(seed),
        "status": "ok", "chance_acc": nan, "chance_seq": nan,
        "base_learned": None, "fs_learned": None,
        # what the configuration is, as the file says it (analysis.contrast reads its factors)
        "legacy_config": json.dumps(config_obj, sort_keys=True, default=str),
    }
    for key in ("acc", "loss", "seq"):
        b, f = base.get(key, nan), fs.get(key, nan)
        b = nan if b is None else float(b)
        f = nan if f is None else float(f)
        row[f"base_{key}"], row[f"fs_{key}"], row[f"d_{key}"] = b, f, f - b
    row.update(extra)
    return row


def _eval_items(filt: dict | None) -> float:
    """Eval examples per run where the filter line states them (val_batches x bsz), else NaN."""
    try:
        return float(int(filt["val_batches"]) * int(filt["bsz"]))
    except (TypeError, KeyError, ValueError):
        return math.nan


def _experiment_name(path: Path) -> str:
    """``_summary_hotpot_qafter_stabilized_r4_s012.txt`` -> ``hotpot_qafter_stabilized_r4``: the seed
    suffix names which seeds ran, not what ran, so files of one experiment share a configuration."""
    stem = path.stem
    if stem.startswith("_summary_"):
        stem = stem[len("_summary_"):]
    stem = stem.lstrip("_")
    if stem.endswith("_records"):
        stem = stem[: -len("_records")]
    return _SEED_SUFFIX.sub("", stem)


def _task_from_file(path: Path, filt: dict | None) -> str:
    m = _FILE_TASK.match(path.stem)
    if m:
        return f"{m['task']}/{m['order']}"
    if filt and "ds" in filt:
        order = "qfirst" if filt.get("q_first") else "qafter"
        return f"{str(filt['ds']).split('/')[-1]}/{order}"
    return _experiment_name(path)


# --------------------------------------------------------------------------------------------------
# detection


def detect(text: str) -> str | None:
    """Which legacy shape ``text`` has (by content), or None."""
    head = text.lstrip()[:1]
    if head == "{":
        first = text.strip().splitlines()[0]
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        if "summary_name" in obj and "mean_d_acc" in obj:
            return "aggregate"
        if "best_val_tok_acc" in obj and "config" in obj and "stage" in obj:
            return "staged_records"
        return None
    lines = text.splitlines()
    if any(_BLOCK_HEAD.match(ln) for ln in lines) or any(_PP_SEED_LINE.match(ln) for ln in lines):
        return "paired_blocks"
    if any(re.match(r"^\s*baseline quick:", ln) for ln in lines):
        return "staged_summary"
    if any(re.match(r"^\s*(no_fs|prompt_fs)\s+best_loss=", ln) for ln in lines):
        return "single_run_sweep"
    return None


def parse_file(path: str | Path, text: str | None = None) -> LegacyFile:
    """Parse one researchers' file; what fits no shape comes back with ``skipped`` set."""
    path = Path(path)
    if text is None:
        text = path.read_text(encoding="utf-8", errors="replace")
    out = LegacyFile(str(path))
    out.shape = detect(text)
    if out.shape is None:
        out.skipped = "fits none of the researchers' result shapes"
        return out
    {
        "paired_blocks": _parse_paired_blocks,
        "staged_records": _parse_staged_records,
        "staged_summary": _parse_staged_summary,
        "single_run_sweep": _parse_single_run_sweep,
        "aggregate": _parse_aggregate,
    }[out.shape](path, text, out)
    if not out.rows and not out.aggregates and out.skipped is None:
        out.skipped = f"recognised as {out.shape.replace('_', ' ')} but holds no paired seed"
    return out


# --------------------------------------------------------------------------------------------------
# paired blocks


def _parse_filter(line: str) -> dict | None:
    try:
        obj = ast.literal_eval(line.split(":", 1)[1].strip())
    except (ValueError, SyntaxError):
        return None
    return obj if isinstance(obj, dict) else None


def _printed_figures(head: str) -> dict[str, float]:
    """Figures of a block header: pairs, mean/std of d_acc, d_loss, d_seq, signs."""
    fig: dict[str, float] = {}
    m = _BLOCK_HEAD.match(head)
    fig["pairs"] = int(m["pairs"])
    for metric in ("acc", "loss", "seq"):
        mm = re.search(rf"mean d_{metric}=({_NUM})\s+std=({_NUM})", head)
        if mm:
            fig[f"mean_d_{metric}"], fig[f"std_d_{metric}"] = float(mm[1]), float(mm[2])
    mm = re.search(r"sign\(\+/0/-\)=(\d+)/(\d+)/(\d+)", head)
    if mm:
        fig["sign_pos"], fig["sign_zero"], fig["sign_neg"] = (int(g) for g in mm.groups())
    return fig


def _seed_line_values(line: str) -> tuple[dict, dict, dict] | None:
    """``seed=0 d_acc=-0.0078 (no=0.3281 fs=0.3203) d_loss=+0.0221`` (or with ``tok no=..; seq no=..``)
    -> (base, fs, printed deltas)."""
    printed = {k: float(v) for k, v in re.findall(rf"\bd_(acc|loss|seq)=({_NUM})", line)}
    base, fs = {}, {}
    m = re.search(rf"\((?:tok )?no=({_NUM}) fs=({_NUM})", line)
    if m:
        base["acc"], fs["acc"] = float(m[1]), float(m[2])
    m = re.search(rf"seq no=({_NUM}) fs=({_NUM})", line)
    if m:
        base["seq"], fs["seq"] = float(m[1]), float(m[2])
    if "acc" not in printed or "acc" not in base:
        return None
    return base, fs, printed


def _parse_paired_blocks(path: Path, text: str, out: LegacyFile) -> None:
    src = str(path)
    lines = text.splitlines()
    filt: dict | None = None
    for i, ln in enumerate(lines, 1):
        if ln.startswith("filter:"):
            filt = _parse_filter(ln)
            if filt is None:
                out.problems.append(f"{src}:{i}: filter line is not a readable dict; settings unknown")
            break
    if any(_PP_SEED_LINE.match(ln) for ln in lines):
        _parse_pp_blocks(path, lines, out)
        return
    name = _experiment_name(path)
    base_task = _task_from_file(path, filt)
    # The label drops the task and ordering the task column already shows.
    m = _FILE_TASK.match(path.stem)
    cfg_label = name[len(m.group(0)) - len("_summary_"):] if m else ""
    cfg_label = cfg_label.strip("_") or name
    block: PairedBlock | None = None
    for i, ln in enumerate(lines, 1):
        if _BLOCK_HEAD.match(ln):
            fig = _printed_figures(ln)
            m = _BLOCK_HEAD.match(ln)
            label = f"L={m['L']}" if m["L"] else "all"
            block = PairedBlock(src, i, label, fig)
            out.blocks.append(block)
            continue
        if not _SEED_LINE.match(ln):
            continue
        if block is None:
            out.problems.append(f"{src}:{i}: seed line before any 'pairs=' block header; skipped")
            continue
        parsed = _seed_line_values(ln)
        if parsed is None:
            out.problems.append(f"{src}:{i}: seed line without 'no=... fs=...' accuracies; skipped")
            continue
        base, fs, printed = parsed
        # The loss of each run is not printed, only its delta: keep d_loss as printed.
        seed = int(_SEED_LINE.match(ln)["seed"])
        task = base_task if block.label == "all" else f"{base_task} {block.label}"
        cfg_obj = {"legacy": name, "block": block.label, "filter": filt}
        row = _row(src, i, task, cfg_label, cfg_obj, "import", seed, base, fs, eval_n=_eval_items(filt))
        if "loss" in printed:
            row["d_loss"] = printed["loss"]
        for key in ("acc", "seq"):
            # The printed delta was rounded from full-precision accuracies: prefer it over the
            # difference of two rounded accuracies (each off by up to 5e-5).
            if key in printed:
                row[f"d_{key}"] = printed[key]
        block.rows.append(row)
        out.rows.append(row)
    for b in out.blocks:
        if len(b.rows) != b.printed["pairs"]:
            out.problems.append(
                f"{src}:{b.line}: block {b.label} says pairs={b.printed['pairs']} but has "
                f"{len(b.rows)} seed lines (truncated file?)"
            )


def _parse_pp_blocks(path: Path, lines: list[str], out: LegacyFile) -> None:
    """Seed-check rounds: ``[task + config]`` or ``[quick]`` sections of ``seed=N: baseline=..% fs=..%``
    lines closed by ``mean d_acc=..pp, positive_seeds=k/n``. All are quick-stage (selection) deltas."""
    src, name = str(path), _experiment_name(path)
    section, block = name, None
    for i, ln in enumerate(lines, 1):
        m = _SECTION.match(ln)
        if m:
            section, block = m["name"].strip(), None
            continue
        m = _PP_SEED_LINE.match(ln)
        if m:
            if block is None:
                block = PairedBlock(src, i, section, {})
                out.blocks.append(block)
            if "+" in section:  # "[mbpp_low + scalar_l8_trainable]"
                task, config = (s.strip() for s in section.split("+", 1))
            else:  # "[quick]": the file names neither task nor config, only the experiment
                task = config = name
            base, fs = {"acc": fnum(m["base"] + "%")}, {"acc": fnum(m["fs"] + "%")}
            row = _row(src, i, task, config, {"legacy_search": task, "config": config, "bsz": None},
                       "selection", int(m["seed"]), base, fs)
            row["d_acc"] = fnum(m["d"] + "pp")  # printed from unrounded accuracies: the better value
            block.rows.append(row)
            out.rows.append(row)
            continue
        m = _PP_MEAN_LINE.match(ln)
        if m and block is not None:
            block.printed.update(
                pairs=int(m["n"]), mean_d_acc=fnum(m["mean"] + "pp"), sign_pos=int(m["pos"])
            )
            block = None
    for b in out.blocks:
        b.printed.setdefault("pairs", len(b.rows))


def recompute_block(block: PairedBlock) -> dict[str, float]:
    """A block's figures recomputed from its seed lines, with the researchers' conventions
    (population std, sign counts of d_acc). Same keys as ``block.printed``."""
    fig: dict[str, float] = {"pairs": len(block.rows)}
    for metric in ("acc", "loss", "seq"):
        d = np.array([r[f"d_{metric}"] for r in block.rows], dtype=float)
        if d.size and np.isfinite(d).all():
            fig[f"mean_d_{metric}"] = float(d.mean())
            fig[f"std_d_{metric}"] = float(d.std(ddof=0))
    d = np.array([r["d_acc"] for r in block.rows], dtype=float)
    fig["sign_pos"] = int((d > 0).sum())
    fig["sign_zero"] = int((d == 0).sum())
    fig["sign_neg"] = int((d < 0).sum())
    return fig


# --------------------------------------------------------------------------------------------------
# staged searches


def _staged_key(task: str, stage: str, seed: int, bsz: Any) -> tuple:
    return (task, stage, seed, bsz)


def _pair_staged(path: Path, runs: list[dict], out: LegacyFile) -> None:
    """Pair each candidate run with the baseline of its own (task, stage, seed, bsz).

    ``runs``: dicts with line, task, stage (quick|med), seed, bsz, config, status, acc, loss, pruned.
    """
    src = str(path)
    baselines: dict[tuple, dict] = {}
    for r in runs:
        if r["config"] == "baseline":
            key = _staged_key(r["task"], r["stage"], r["seed"], r["bsz"])
            if r["status"] != "ok" or r["acc"] is None:
                out.notes.append(f"{src}:{r['line']}: baseline of {r['task']} ({r['stage']}) failed: "
                                 f"{r.get('error') or 'no accuracy'}; its candidates cannot be paired")
            baselines[key] = r
    unpaired: dict[tuple, int] = {}
    for r in runs:
        if r["config"] == "baseline":
            continue
        stage = STAGE_MAP.get(r["stage"])
        if stage is None:
            continue  # 'probe' runs measure throughput (batch size), not FS
        key = _staged_key(r["task"], r["stage"], r["seed"], r["bsz"])
        base = baselines.get(key)
        config = r["config"] if r["bsz"] is None else f"{r['config']} bsz={r['bsz']}"
        cfg_obj = {"legacy_search": r["task"], "config": r["config"], "bsz": r["bsz"]}
        if base is None or base["status"] != "ok" or base["acc"] is None:
            ukey = (r["task"], r["stage"], base is None)
            unpaired[ukey] = unpaired.get(ukey, 0) + 1
            continue
        row = _row(src, r["line"], r["task"], config, cfg_obj, stage, r["seed"],
                   {"acc": base["acc"], "loss": base["loss"]}, {"acc": r["acc"], "loss": r["loss"]},
                   pruned=r.get("pruned"))
        if r["status"] != "ok" or r["acc"] is None:
            row["status"] = "failed"
            row["failure"] = r.get("error") or "run failed"
        out.rows.append(row)
    for (task, stage, missing), n in unpaired.items():
        why = ("has no baseline of its own (the researchers compared it with the shorter quick "
               "baseline)" if missing else "lost its baseline")
        out.notes.append(f"{src}: {task} stage {stage}: {n} candidate run(s) not paired: the stage {why}")


def _json_lines(src: str, text: str, problems: list[str]):
    """(line number, object) of each non-empty JSONL line; a malformed line is reported and skipped."""
    for i, obj in json_lines(text.splitlines()):
        if isinstance(obj, json.JSONDecodeError):
            problems.append(f"{src}:{i}: {not_json(obj)}")
        else:
            yield i, obj


def _parse_staged_records(path: Path, text: str, out: LegacyFile) -> None:
    src = str(path)
    runs, no_seed = [], 0
    for i, rec in _json_lines(src, text, out.problems):
        if not isinstance(rec, dict) or "config" not in rec or "stage" not in rec:
            out.problems.append(f"{src}:{i}: not a staged search record (needs config and stage)")
            continue
        no_seed += "seed" not in rec
        seed = rec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            out.problems.append(f"{src}:{i}: seed must be an integer, got {seed!r}; skipped")
            continue
        runs.append({
            "line": i, "task": rec.get("task") or _experiment_name(path), "stage": rec["stage"],
            "seed": seed, "bsz": rec.get("bsz"), "config": rec["config"],
            "status": "ok" if rec.get("status") == "ok" else "failed",
            "acc": rec.get("best_val_tok_acc"), "loss": rec.get("best_val_loss"),
            "error": (rec.get("error") or "").strip()[:120] or None,
        })
    if no_seed:
        out.notes.append(f"{src}: {no_seed} record(s) carry no seed field: read as seed 0 "
                         "(the staged rounds ran one seed, the default 0)")
    _pair_staged(path, runs, out)


_BASELINE_LINE = re.compile(rf"^\s*baseline (?P<stage>quick|med):\s+acc=(?P<acc>{_NUM}%?)"
                            rf"(?:\s+loss=(?P<loss>{_NUM}))?(?:\s+bsz=(?P<bsz>\d+))?")
_CAND_LINE = re.compile(rf"^\s*(?P<name>[A-Za-z][\w\-.]*)\s+d_acc=(?P<d>{_NUM}(?:pp)?)\s+"
                        rf"acc=(?P<acc>{_NUM}%?)(?:\s+loss=(?P<loss>{_NUM}))?"
                        rf"(?:\s+\[(?P<mark>PRUNE|KEEP)\])?\s*$")
_FS_LINE = re.compile(rf"^\s*fs (?P<stage>quick|med):\s+acc=(?P<acc>{_NUM}%?)\s+d_acc=(?P<d>{_NUM}(?:pp)?)"
                      rf"(?:\s+loss=(?P<loss>{_NUM}))?")


def _parse_staged_summary(path: Path, text: str, out: LegacyFile) -> None:
    """Text summary of a staged search: sections of a quick baseline, candidates, 'med confirmed'."""
    src, name = str(path), _experiment_name(path)
    runs: list[dict] = []
    section, stage, bsz = name, "quick", None
    printed_d: dict[int, float] = {}
    for i, ln in enumerate(text.splitlines(), 1):
        m = _SECTION.match(ln)
        if m:
            section, stage, bsz = m["name"].strip(), "quick", None
            mb = re.match(r"bsz=(\d+)$", section)
            if mb:  # a batch-size sweep: one section per batch size of one search
                section, bsz = name, int(mb[1])
            continue
        if re.match(r"^\s*baseline failed", ln):
            out.notes.append(f"{src}:{i}: [{section}] baseline failed or missing: nothing to pair")
            continue
        m = _BASELINE_LINE.match(ln)
        if m:
            stage = m["stage"]
            runs.append({"line": i, "task": section, "stage": stage, "seed": 0,
                         "bsz": int(m["bsz"]) if m["bsz"] else bsz, "config": "baseline",
                         "status": "ok", "acc": fnum(m["acc"]),
                         "loss": float(m["loss"]) if m["loss"] else None})
            bsz = runs[-1]["bsz"]
            continue
        if re.match(r"^\s*(med confirmed|quick candidates)", ln):
            stage = "med" if ln.strip().startswith("med") else "quick"
            continue
        m = _CAND_LINE.match(ln) or _FS_LINE.match(ln)
        if m:
            gd = m.groupdict()
            cand_stage = gd.get("stage") or stage
            runs.append({"line": i, "task": section, "stage": cand_stage, "seed": 0, "bsz": bsz,
                         "config": gd.get("name") or "fs", "status": "ok", "acc": fnum(gd["acc"]),
                         "loss": float(gd["loss"]) if gd.get("loss") else None,
                         "pruned": {"PRUNE": True, "KEEP": False}.get(gd.get("mark") or "")})
            printed_d[i] = fnum(gd["d"])
    _pair_staged(path, runs, out)
    for row in out.rows:
        # Hold the recomputed delta to the printed one (both rounded): a mismatch means a misread.
        d_print = printed_d.get(row["line"])
        if d_print is not None and abs(row["d_acc"] - d_print) > 1.5e-4:
            out.problems.append(f"{src}:{row['line']}: printed d_acc={d_print:+.4f} but acc - baseline "
                                f"= {row['d_acc']:+.4f}; row kept with the accuracies' difference")
    if runs:
        out.notes.append(f"{src}: single-seed search summary read as seed 0")


# --------------------------------------------------------------------------------------------------
# single-run sweeps

_RUN_LINE = re.compile(rf"^\s*(?P<mode>no_fs|prompt_fs)\s+best_loss=(?P<loss>{_NUM})@\d+\s+"
                       rf"best_acc=(?P<acc>{_NUM})@\d+")


def _parse_single_run_sweep(path: Path, text: str, out: LegacyFile) -> None:
    src = str(path)
    settings: dict | None = None
    head_line = 0
    runs: dict[str, tuple[int, dict]] = {}

    single: list[str] = []

    def flush() -> None:
        if settings is None or not runs:
            return
        if set(runs) != {"no_fs", "prompt_fs"}:
            single.append(f"{head_line} ({next(iter(runs))})")
            return
        seed = int(settings.pop("seed"))
        q_first = str(settings.pop("q_first", "False")) == "True"
        task = f"{_experiment_name(path).split('_')[0]}/{'qfirst' if q_first else 'qafter'}"
        line_fs, fs = runs["prompt_fs"]
        _, base = runs["no_fs"]
        out.rows.append(_row(src, line_fs, task, "", {"legacy_sweep": settings}, "import", seed,
                             base, fs, settings=dict(settings)))

    for i, ln in enumerate(text.splitlines(), 1):
        if re.match(r"^seed=\d+\s+\w+=", ln):
            flush()
            settings = dict(kv.split("=", 1) for kv in ln.split() if "=" in kv)
            head_line, runs = i, {}
            continue
        m = _RUN_LINE.match(ln)
        if m:
            if settings is None:
                out.problems.append(f"{src}:{i}: run line before any settings line; skipped")
                continue
            runs[m["mode"]] = (i, {"acc": float(m["acc"]), "loss": float(m["loss"])})
    flush()
    # Label each pair by the settings that vary across the file (the rest is common to all).
    varying = [k for k in dict.fromkeys(k for r in out.rows for k in r["settings"])
               if len({r["settings"].get(k) for r in out.rows}) > 1]
    for r in out.rows:
        s = r.pop("settings")
        r["config"] = " ".join(f"{k}={s.get(k)}" for k in varying) or "all settings equal"
    if single:
        out.notes.append(f"{src}: {len(single)} block(s) hold a single run, not a pair: lines "
                         + ", ".join(single))


# --------------------------------------------------------------------------------------------------
# aggregate


def _parse_aggregate(path: Path, text: str, out: LegacyFile) -> None:
    """``_aggregate_results.jsonl``: one row of figures per summary, no seeds: a cross-check only."""
    src = str(path)
    for i, rec in _json_lines(src, text, out.problems):
        if isinstance(rec, dict) and "summary_name" in rec:
            rec["_line"] = i
            out.aggregates.append(rec)
        else:
            out.problems.append(f"{src}:{i}: not an aggregate row (needs summary_name)")


def cross_check_aggregates(files: list[LegacyFile], tol: float = 1.5e-4) -> list[str]:
    """Hold every aggregate row to the block it summarises (same file name and L), where loaded."""
    blocks = {}
    for f in files:
        for b in f.blocks:
            blocks[(Path(f.path).name, b.label)] = b
    notes = []
    for f in files:
        for agg in f.aggregates:
            label = f"L={agg['L']}" if agg.get("L") is not None else "all"
            b = blocks.get((agg["summary_name"], label))
            if b is None:
                continue
            fig = recompute_block(b)
            for key in ("mean_d_acc", "std_d_acc", "mean_d_loss", "std_d_loss"):
                a, r = agg.get(key), fig.get(key)
                if a is not None and r is not None and abs(a - r) > tol:
                    notes.append(f"{f.path}:{agg['_line']}: {key}={a} disagrees with "
                                 f"{agg['summary_name']} {label} recomputed {r:.4f}")
    return notes
