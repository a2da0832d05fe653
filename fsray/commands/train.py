"""Run paired no_fs / prompt_fs seeds of one FS configuration and write their records.

Each seed trains the baseline (no_fs) and the FS run (prompt_fs) from the same initial weights on
the same data order, then appends one ``fsray.paired/1`` record to the results store.
"""

from __future__ import annotations

import argparse
import math
import sys
import types
import typing
from pathlib import Path

from fsray.errors import UsageError
from fsray.fsconfig import FSConfig
from fsray.yaml_io import load_yaml, load_yaml_file

EPILOG = """examples:
  fsray train                                                  # embedded default, seed 0, default FS
  fsray train --task kv_retrieval --order query_after --seeds 0,1,2 --fs-layer-start 1 --alpha-init -2
  fsray train --order query_first --steps 200 --seeds 0-4 --out runs/qf/results.jsonl
  fsray train --config my_run.yaml --ray-workers 2             # through Ray Train, 2 workers
  fsray train --task-option n_pairs=4-8 --task-option max_prompt_len=96
  fsray train --checkpoint none --n-layer 2 --d-model 32 --head-size 8   # tiny model, no pretraining

config file (YAML): the TrainSpec fields (task, model, budget, data, threads, wkv_backend, ...)
plus optional `fs:` (FS knobs) and `seeds:` (list); flags given on the command line override it.
"""

_SPEC_FLAGS = {   # flag dest -> (section, field)
    "steps": ("budget", "steps"), "batch_size": ("budget", "batch_size"), "lr": ("budget", "lr"),
    "eval_every": ("budget", "eval_every"), "max_seconds": ("budget", "max_seconds"),
    "warmup": ("budget", "warmup"), "n_train": ("data", "n_train"), "n_val": ("data", "n_val"),
    "n_layer": ("model", "n_layer"), "d_model": ("model", "d_model"),
    "head_size": ("model", "head_size"), "checkpoint": ("model", "checkpoint"),
    "tokenizer": ("model", "tokenizer"), "threads": (None, "threads"),
    "wkv_backend": (None, "wkv_backend"), "precision": (None, "precision"),
}

_SHAPE_FIELDS = ("n_layer", "d_model", "head_size")   # what a checkpoint fixes
_NO_CHECKPOINT = ("none", "")                           # --checkpoint none: a model from its init


MAX_SEEDS = 100_000   # seeds of one call (each is two training runs): a typo never a MemoryError


def finite_float(text: str) -> float:
    """argparse type: a finite number (``inf``/``nan`` are refused where they are typed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _flag_type(annotation):
    """(argparse type, choices) of an FSConfig field: ``float | None`` is a float flag; a Literal
    gives its choices."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _flag_type(inner[0])
    if annotation is int:
        return int, None
    if annotation is float:
        return finite_float, None
    if typing.get_origin(annotation) is typing.Literal:
        return str, list(args)
    return str, None


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument("--config", type=Path, help="YAML file with the spec, fs and seeds")
    g.add_argument("--task", help="task name (default kv_retrieval)")
    g.add_argument("--order", help="task ordering option, e.g. query_after / query_first")
    g.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra task option (repeatable), value parsed as YAML")
    g.add_argument("--seeds", default=None, help="seeds: 0,1,2 or 0-4 (default 0)")
    b = p.add_argument_group("model, budget, data")
    for flag, typ in (("--steps", int), ("--batch-size", int), ("--lr", finite_float), ("--eval-every", int),
                      ("--max-seconds", finite_float), ("--warmup", int), ("--n-train", int), ("--n-val", int),
                      ("--n-layer", int), ("--d-model", int), ("--head-size", int), ("--threads", int)):
        b.add_argument(flag, type=typ, default=None)
    b.add_argument("--checkpoint", default=None,
                   help="BlinkDL .pth, embedded:base (the default), or none: a tiny model from its "
                        "seed's init, shaped by --n-layer/--d-model/--head-size (a checkpoint fixes "
                        "the shape: a shape flag that disagrees with it is an error)")
    b.add_argument("--tokenizer", choices=["byte", "world"], default=None)
    b.add_argument("--wkv-backend", default=None)
    b.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                   help="auto (default): bf16 autocast on CUDA, fp32 on the CPU (fsray.precision)")
    f = p.add_argument_group("Future-Seed knobs (docs/DESIGN.md §3)")
    for name, field in FSConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            f.add_argument(flag, dest=f"fs__{name}", action=argparse.BooleanOptionalAction, default=None)
        else:
            typ, choices = _flag_type(field.annotation)
            f.add_argument(flag, dest=f"fs__{name}", type=typ, default=None, choices=choices,
                           metavar=None if choices else name.split("_")[-1].upper(),
                           help=f"default {field.default}")
    o = p.add_argument_group("output and execution")
    o.add_argument("--out", type=Path, default=Path("runs/train/results.jsonl"), help="results store (JSONL)")
    o.add_argument("--ray-workers", type=non_negative_int, default=0,
                   help="run through one Ray Train fit with N workers (default: in-process)")
    o.add_argument("--quiet", action="store_true", help="no progress lines")


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (or both): distinct non-negative seeds, at most MAX_SEEDS of them."""
    def number(x: str) -> int:
        try:
            return int(x)
        except ValueError:
            raise UsageError(f"--seeds must look like 0,1,2 or 0-4, got {text!r}") from None

    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if part.startswith("-"):
            raise UsageError(f"--seeds must be non-negative integers, got {part!r}")
        if "-" in part:
            lo, hi = (number(x) for x in part.split("-", 1))
            if hi < lo:
                raise UsageError(f"--seeds range {part!r} is empty (the end is below the start)")
            if hi - lo + 1 + len(seeds) > MAX_SEEDS:
                raise UsageError(f"--seeds {part!r}: more than {MAX_SEEDS} seeds")
            seeds.extend(range(lo, hi + 1))
        elif part:
            seeds.append(number(part))
    if not seeds:
        raise UsageError(f"--seeds gave no seed: {text!r}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds names a seed twice: {text!r}")
    return seeds


def build_inputs(args) -> tuple[object, FSConfig, list[int]]:
    from fsray.spec import TrainSpec, embedded_default_spec

    raw: dict = {}
    if args.config is not None:
        if not args.config.is_file():
            raise UsageError(f"--config {args.config}: no such file")
        raw = load_yaml_file(args.config, "--config file") or {}   # a key given twice is an error
        if not isinstance(raw, dict):
            raise UsageError(f"--config {args.config}: expected a mapping at the top level")
    fs_raw = dict(raw.pop("fs", None) or {})
    seeds = raw.pop("seeds", None)
    spec_dict = embedded_default_spec().model_dump() if not raw else {}
    spec_dict.update(raw)
    task = dict(spec_dict.get("task") or {})
    options = dict(task.get("options") or {})
    if args.task is not None and args.task != task.get("name"):
        task["name"], options = args.task, {}
    if args.order is not None:
        options["order"] = args.order
    for item in args.task_option:
        if "=" not in item:
            raise UsageError(f"--task-option expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        options[key.strip()] = load_yaml(value, f"--task-option {key.strip()}")
    task["options"] = options
    spec_dict["task"] = task
    # the model shape asked for, and by whom: the config file's model section, then flags
    asked = {f: (f"--config model.{f}", v) for f, v in (raw.get("model") or {}).items() if f in _SHAPE_FIELDS}
    for dest, (section, field) in _SPEC_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "checkpoint" and value.strip().lower() in _NO_CHECKPOINT:
            value = None
        if dest in _SHAPE_FIELDS:
            asked[dest] = ("--" + dest.replace("_", "-"), value)
        if section is None:
            spec_dict[field] = value
        else:
            spec_dict.setdefault(section, {})
            spec_dict[section] = dict(spec_dict[section]) | {field: value}
    spec = TrainSpec.model_validate(spec_dict)
    if spec.model.checkpoint is not None:
        _refuse_shape_overridden(spec.model.checkpoint, asked)
    for name in FSConfig.model_fields:
        value = getattr(args, f"fs__{name}", None)
        if value is not None:
            fs_raw[name] = value
    fs = FSConfig.model_validate(fs_raw)
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
    elif seeds is None:
        seeds = [0]
    elif (not isinstance(seeds, list) or not seeds or len(seeds) > MAX_SEEDS
          or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
          or len(set(seeds)) != len(seeds)):
        raise UsageError(f"--config: seeds must be a list of distinct non-negative integers, got {seeds!r}")
    return spec, fs, list(seeds)


def _refuse_foreign_store(path: Path) -> None:
    """Records are appended to ``--out``: an existing non-empty file must be an fsray results store."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    from analysis.schema import SCHEMA

    with open(path, "rb") as fh:
        head = fh.read(4096)
    if SCHEMA.encode() not in head:
        raise UsageError(f"--out {path} exists and is not an fsray results store: give a new file "
                         f"(or an existing results.jsonl)")


def checkpoint_shape(checkpoint: str):
    """The ``ModelConfig`` a checkpoint fixes (read without building the model)."""
    from fsray.checkpoint import read_config
    from fsray.spec import resolve_checkpoint

    return read_config(resolve_checkpoint(checkpoint))


def _refuse_shape_overridden(checkpoint: str, asked: dict[str, tuple[str, int]]) -> None:
    """A shape asked for (flag or config field) that the checkpoint overrides is bad input, named
    with both values, never a silent no-op."""
    if not asked:
        return
    shape = checkpoint_shape(checkpoint)
    wrong = [f"{who} {value}" for field, (who, value) in asked.items() if getattr(shape, field) != value]
    if wrong:
        has = ", ".join(f"{f} {getattr(shape, f)}" for f in _SHAPE_FIELDS)
        raise UsageError(f"{' and '.join(wrong)} would be ignored: checkpoint {checkpoint} fixes the "
                         f"model's shape ({has}); drop the flag, or pass --checkpoint none to train a "
                         f"model of that shape from its init")


def _progress_printer(quiet: bool):
    if quiet:
        return None

    def show(p: dict) -> None:
        acc = f" acc {p['token_acc']:.3f} exact {p['seq_acc']:.3f}" if p.get("token_acc") is not None else ""
        print(f"  seed {p['seed']} {p['mode']:9s} step {p['step']:5d}/{p['steps']} loss {p['loss']:.4f}"
              f"{acc} {p['tokens_per_s']:,.0f} tok/s", flush=True)
    return show


def _summary_line(rec: dict) -> str:
    b, f = rec.get("baseline") or {}, rec.get("fs") or {}
    if rec["status"] == "failed":
        return f"seed {rec['seed']}: FAILED ({rec['failure']})"
    d = f.get("token_acc", 0) - b.get("token_acc", 0)
    ds = f.get("seq_acc", 0) - b.get("seq_acc", 0)
    tag = " (no-op config)" if rec["status"] == "noop" else ""
    return (f"seed {rec['seed']}: no_fs acc {b['token_acc']:.4f} exact {b['seq_acc']:.3f} | "
            f"prompt_fs acc {f['token_acc']:.4f} exact {f['seq_acc']:.3f} | d_acc {d:+.4f} d_seq {ds:+.3f}{tag}")


def run(args) -> int:
    from analysis.schema import append_record
    from fsray.trainer import make_record, run_mode

    from fsray.paths import check_output_file

    spec, fs, seeds = build_inputs(args)
    # before any training: the store must be writable, a file, and fsray's (never --config itself)
    out = check_output_file(args.out, "--out", inputs=[args.config] if args.config else ())
    _refuse_foreign_store(out)
    n_layer = spec.model.n_layer if spec.model.checkpoint is None else checkpoint_shape(spec.model.checkpoint).n_layer
    noop = fs.noop_reason(n_layer)
    fs_jobs = noop is None
    print(f"fsray train: task {spec.task.name} {spec.task.options or ''}, seeds {seeds}, "
          f"FS {fs.label()}{' (no-op: ' + noop + ')' if noop else ''}, {spec.budget.steps} steps -> {args.out}",
          flush=True)
    failed = 0

    def emit(seed, base, fs_run) -> None:   # each record is durable the moment its seed is done
        nonlocal failed
        rec = make_record(spec, fs, seed, base, fs_run, stage="train", noop_reason=noop)
        append_record(args.out, rec)
        failed += rec["status"] == "failed"
        print(_summary_line(rec), flush=True)

    if args.ray_workers and args.ray_workers > 0:
        from fsray.harness import train_paired

        # each seed's record written the moment both of its runs are back
        train_paired(spec, seeds, fs if fs_jobs else None, emit, workers=args.ray_workers,
                     storage_path=str(Path(args.out).resolve().parent / "ray_train"))
    else:
        progress = _progress_printer(args.quiet)
        for seed in seeds:
            base = run_mode(spec, seed, None, progress=progress)
            emit(seed, base, run_mode(spec, seed, fs, progress=progress) if fs_jobs else None)
    print(f"wrote {len(seeds)} record(s) to {args.out}; report: fsray report {Path(args.out).parent}")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    from fsray.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
