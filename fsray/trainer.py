"""The paired FS trainer: one seed, one mode (no_fs or prompt_fs), the same code path for both.

``run_mode(spec, seed, fs)`` builds the model from the seed (identical initial weights for both modes),
trains it on the seed's shuffled stream of the task's training split with answer-only loss, evaluates
on fixed validation batches every ``eval_every`` steps, and returns a RunResult (``analysis.schema``).
``fs=None`` is no_fs; with an FSConfig the prompt pass applies FS and the answer tokens continue
causally from the prompt state (teacher forcing), exactly as in no_fs.

Run inside a Ray Train worker (``fsray.harness``), the same function trains data-parallel: each
worker takes its slice of every global batch, the loss is normalised by the *global* answer-token
count, and DDP averages gradients, so the update equals the single-process one up to float rounding.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

import fsray
from . import fused
from .data import Batch, TrainStream, collate, eval_batches, indices_digest, worker_slice
from .errors import UsageError, first_line
from .fsconfig import FSConfig

ASSETS = Path(__file__).resolve().parent / "assets"
EMBEDDED_BASE = "embedded:base"  # model.checkpoint value naming the shipped base checkpoint
EMBEDDED_BASE_FILE = ASSETS / "base_l2_d64.pth"


# ----------------------------------------------------------------------------------- the spec
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Strict):
    name: str = "kv_retrieval"
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_Strict):
    """Either a tiny model from a config (trained from its seed's init) or a BlinkDL checkpoint."""

    n_layer: int = Field(2, ge=1)
    d_model: int = Field(64, ge=8)
    head_size: int = Field(16, ge=2)
    checkpoint: str | None = None     # path to a BlinkDL .pth, or "embedded:base"
    tokenizer: Literal["byte", "world"] = "byte"

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if self.checkpoint is None and self.d_model % self.head_size:
            raise ValueError(f"d_model {self.d_model} is not a multiple of head_size {self.head_size}")
        return self


class BudgetSpec(_Strict):
    steps: int = Field(400, ge=1)
    max_seconds: float | None = Field(None, gt=0)   # wall-clock cap (makes the run non-reproducible)
    batch_size: int = Field(64, ge=1)
    eval_every: int = Field(50, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: int = Field(40, ge=0)
    grad_clip: float = Field(1.0, ge=0)              # 0 disables clipping
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)     # lr at the end of the decay, as a fraction
    betas: tuple[float, float] = (0.9, 0.99)


class DataSpec(_Strict):
    n_train: int = Field(8192, ge=1)
    n_val: int = Field(512, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    data_seed: int = 0   # fixes the generated/loaded examples; the run seed only shuffles them


class TrainSpec(_Strict):
    task: TaskSpec = Field(default_factory=TaskSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    wkv_backend: Literal["auto", "reference", "torch", "compiled", "triton", "fla"] = "auto"
    threads: int = Field(1, ge=1)
    # the fused training step (fsray.fused): "on" compiles the training forward+backward (an error
    # where it cannot), "auto" compiles where it can (else eager, said once), "off" is the eager step
    compile: Literal["auto", "on", "off"] = "off"
    learned_metric: Literal["token_acc", "seq_acc"] = "seq_acc"
    learned_margin: float = Field(0.1, ge=0)
    learned_above: float | None = None   # absolute threshold (real tasks without a known chance)


def embedded_default_spec(order: str = "query_after") -> TrainSpec:
    """The embedded default: a tiny RWKV-7 post-trained on locally generated key-value retrieval.

    Sized so that the no_fs model clearly learns the task, query after the document included, on a
    2-core CPU with a run taking ~35-40 s two at a time (bench/default_paired.py, bench/RESULTS.md).
    """
    return TrainSpec.model_validate(_EMBEDDED_DEFAULT | {"task": {"name": "kv_retrieval", "options": _EMBEDDED_TASK | {"order": order}}})


# 3-5 pairs with one-digit values (chance: 0.26 exact match, 0.63 token accuracy). What makes the
# query-after order learnable in minutes is the one-token value: with values of 1-2 digits the no_fs
# model stayed near chance on 2-3 pairs after 800 steps (0.42-0.67 exact vs 0.42), with one digit it
# reaches 0.97-0.99 on 2-3 pairs, and 0.73-0.87 on 3-5 pairs in 600 steps, which leaves FS room to
# show an effect either way (bench/default_paired.py measures it over 5 seeds).
_EMBEDDED_TASK: dict[str, Any] = {"n_pairs": "3-5", "value_len": "1-1"}
_EMBEDDED_DEFAULT: dict[str, Any] = {
    # 2 layers, width 64, 4 heads of 16, byte vocabulary, pretrained by `fsray pretrain` (the asset)
    "model": {"n_layer": 2, "d_model": 64, "head_size": 16, "checkpoint": EMBEDDED_BASE, "tokenizer": "byte"},
    "budget": {"steps": 600, "batch_size": 32, "eval_every": 100, "lr": 3e-3, "warmup": 20},
    "data": {"n_train": 8192, "n_val": 256, "eval_batch_size": 256},
}


# ----------------------------------------------------------------------------------- helpers
def _code_version() -> str:
    """Package version + hash of the sources that determine a run's numbers."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    files = [root / "trainer.py", root / "data.py", root / "model.py", root / "fs.py"]
    files += sorted((root / "wkv").glob("*.py")) + sorted((root / "tasks").glob("**/*.py"))
    for f in files:
        if f.exists():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return f"{fsray.__version__}+src.{h.hexdigest()[:10]}"


CODE_VERSION = _code_version()


def task_label(spec: TrainSpec) -> str:
    """Grouping key of the task in records (``fsray.records.task_label``)."""
    from .records import task_label as label

    return label(spec.task.name, spec.task.options)


def baseline_key(spec: TrainSpec, seed: int) -> str:
    """Content hash of everything that determines the no_fs run of ``seed``."""
    what = {
        "task": spec.task.model_dump(), "model": spec.model.model_dump(),
        "budget": spec.budget.model_dump(), "data": spec.data.model_dump(),
        "wkv_backend": spec.wkv_backend, "seed": int(seed), "code": CODE_VERSION,
    }
    if spec.compile != "off":   # the fused step rounds differently (~1e-7 a step): its own baselines
        what["compile"] = spec.compile
    if spec.model.checkpoint:
        what["checkpoint_digest"] = _file_digest(str(resolve_checkpoint(spec.model.checkpoint)))
    blob = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def resolve_checkpoint(checkpoint: str) -> Path:
    if checkpoint == EMBEDDED_BASE:
        path = EMBEDDED_BASE_FILE
    else:
        path = Path(checkpoint).expanduser()
    if not path.exists():
        raise UsageError(f"model checkpoint {checkpoint!r} not found ({path})")
    return path


def make_tokenizer(kind: str):
    from . import tokenizer as tk

    return tk.ByteTokenizer() if kind == "byte" else tk.WorldTokenizer()


def _lr_multiplier(step: int, b: BudgetSpec) -> float:
    if b.warmup and step < b.warmup:
        return (step + 1) / b.warmup
    if b.schedule == "constant":
        return 1.0
    u = (step - b.warmup) / max(1, b.steps - b.warmup)
    u = min(1.0, max(0.0, u))
    decay = 0.5 * (1.0 + math.cos(math.pi * u)) if b.schedule == "cosine" else 1.0 - u
    return b.min_lr_ratio + (1.0 - b.min_lr_ratio) * decay


# ----------------------------------------------------------------------------------- data
class TaskData:
    """The task's examples for a spec, built once per process and shared by both modes."""

    def __init__(self, spec: TrainSpec):
        from .tasks import get_task

        self.tokenizer = make_tokenizer(spec.model.tokenizer)
        self.task = get_task(spec.task.name, **spec.task.options)
        d = spec.data
        self.train = self.task.build(self.tokenizer, "train", d.n_train, d.data_seed)
        self.val = self.task.build(self.tokenizer, "val", d.n_val, d.data_seed)
        if len(self.train) < spec.budget.batch_size:
            raise UsageError(
                f"task {spec.task.name!r} gave {len(self.train)} training examples, fewer than "
                f"batch_size {spec.budget.batch_size} (data.n_train={d.n_train})"
            )
        if not self.val:
            raise UsageError(f"task {spec.task.name!r} gave no validation examples (data.n_val={d.n_val})")
        self.chance = self.task.chance(self.tokenizer)
        self.pad_id = int(getattr(self.tokenizer, "pad_id", 0) or 0)

    def batch(self, split: str, indices: list[int]) -> Batch:
        examples = self.train if split == "train" else self.val
        return collate([examples[i] for i in indices], pad_id=self.pad_id)


_DATA_CACHE: dict[str, TaskData] = {}


def task_data(spec: TrainSpec) -> TaskData:
    key = json.dumps([spec.task.model_dump(), spec.data.model_dump(), spec.model.tokenizer,
                      spec.budget.batch_size], sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= 4:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[key] = TaskData(spec)
    return _DATA_CACHE[key]


# ----------------------------------------------------------------------------------- model
_INIT_CACHE: dict[str, tuple[Any, dict]] = {}


def initial_model(spec: TrainSpec, seed: int, vocab_size: int):
    """A fresh model with the seed's initial weights: built once per (model, seed), then copied."""
    from .model import RWKV7, ModelConfig

    key = json.dumps([spec.model.model_dump(), seed, vocab_size, spec.wkv_backend], default=str)
    if key not in _INIT_CACHE:
        if len(_INIT_CACHE) >= 4:
            _INIT_CACHE.pop(next(iter(_INIT_CACHE)))
        torch.manual_seed(seed)
        if spec.model.checkpoint:
            from .checkpoint import load_blinkdl

            model = load_blinkdl(str(resolve_checkpoint(spec.model.checkpoint)))
            if model.config.vocab_size < vocab_size:
                raise UsageError(
                    f"checkpoint vocabulary ({model.config.vocab_size}) is smaller than the "
                    f"{spec.model.tokenizer} tokenizer's ({vocab_size})"
                )
        else:
            m = spec.model
            model = RWKV7(ModelConfig(n_layer=m.n_layer, d_model=m.d_model, head_size=m.head_size,
                                      vocab_size=vocab_size))
        _set_backend(model, spec.wkv_backend)
        _INIT_CACHE[key] = (model, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model, state = _INIT_CACHE[key]
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(state)
    return fresh


def _set_backend(model, backend: str) -> None:
    model.wkv_backend = backend


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class AnswerScorer(nn.Module):
    """Prompt pass (FS when configured) then teacher-forced answer pass: logits for every answer token.

    One module with one forward, so DDP sees a single forward per backward.
    """

    def __init__(self, model: nn.Module, use_fs: bool):
        super().__init__()
        self.model, self.use_fs = model, use_fs

    def forward(self, prompt, prompt_mask, answer):
        # only the last prompt position predicts (answer token 0): the head runs on it alone
        out = self.model(prompt, mask=prompt_mask, use_fs=self.use_fs, logits="last")
        logits = [out.logits]
        if answer.shape[1] > 1:
            # right padding only follows real tokens, so it never reaches a scored position
            logits.append(self.model(answer[:, :-1], state=out.state).logits)
        return torch.cat(logits, dim=1)


def _trainable_groups(model: nn.Module, fs: FSConfig | None, b: BudgetSpec) -> list[dict]:
    groups = model.param_groups() if hasattr(model, "param_groups") else {"model": list(model.parameters())}
    decay = [p for p in groups.get("model", []) if p.ndim >= 2]
    no_decay = [p for p in groups.get("model", []) if p.ndim < 2]
    out = [
        {"name": "model", "params": decay, "weight_decay": b.weight_decay, "base_lr": b.lr},
        {"name": "model_no_decay", "params": no_decay, "weight_decay": 0.0, "base_lr": b.lr},
    ]
    alpha_lr = fs.alpha_lr if fs is not None else 0.0
    for name in ("alpha", "head_gate", "input_gate"):
        params = groups.get(name, [])
        for p in params:
            p.requires_grad_(alpha_lr > 0)   # alpha_lr 0 = a fixed gate
        if params and alpha_lr > 0:
            out.append({"name": name, "params": params, "weight_decay": 0.0, "base_lr": alpha_lr})
    return [g for g in out if g["params"]]


# ----------------------------------------------------------------------------------- loop
def _dist():
    import torch.distributed as dist

    # A world of one (TorchTrainer with 1 worker still makes a process group) needs no DDP.
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def _answer_stats(logits, batch: Batch):
    """Summed CE, correct tokens, answer tokens, exact-match sequences (all as floats)."""
    mask = batch.answer_mask
    ce = F.cross_entropy(logits.transpose(1, 2).float(), batch.answer, reduction="none")
    ce_sum = (ce * mask).sum()
    correct = (logits.argmax(-1) == batch.answer) & mask
    seq_ok = (correct | ~mask).all(dim=1)
    return ce_sum, correct.sum(), mask.sum(), seq_ok.sum()


@torch.no_grad()
def evaluate(scorer: nn.Module, data: TaskData, batch_size: int, device, rank=0, world=1, dist=None):
    """Validation answer-token accuracy, mean answer-token loss, exact-match accuracy."""
    was_training = scorer.training
    scorer.eval()
    totals = torch.zeros(4, dtype=torch.float64)
    for idx in eval_batches(len(data.val), batch_size):
        part = worker_slice(idx, rank, world)
        if not part:
            continue
        batch = data.batch("val", part).to(device)
        ce, corr, n, seq = _answer_stats(scorer(batch.prompt, batch.prompt_mask, batch.answer), batch)
        totals += torch.stack([ce, corr, n, seq]).double().cpu()
    if dist is not None:
        dist.all_reduce(totals)
    scorer.train(was_training)
    ce, corr, n, seq = totals.tolist()
    return {"token_acc": corr / n, "loss": ce / n, "seq_acc": seq / len(data.val)}


def _learned(spec: TrainSpec, chance, metrics) -> bool | None:
    from analysis.bimodal import run_learned

    return run_learned(metrics.get(spec.learned_metric), (chance or {}).get(spec.learned_metric),
                       spec.learned_margin, spec.learned_above)


class RunCheckpoint:
    """Where one seed run keeps its resumable state: a local path or any URI a pyarrow filesystem
    takes (``s3://``, ``gs://``, ...: the storage a search names), so a run lost with its node
    resumes on another node from its last evaluation instead of from step 0.

    The state is saved at an evaluation at most every ``every_s`` seconds (and at the first one), as
    one file written under a temporary name and then moved into place, and deleted when the run
    returns. Resuming restores the weights, the FS gates, the optimizer, the curve and the data
    stream's position, so a resumed run's result equals an uninterrupted one.
    """

    FILE = "state.pt"

    def __init__(self, uri: str, every_s: float = 300.0):
        import pyarrow.fs as pafs

        self.uri, self.every_s = uri, float(every_s)
        self.fs, self.path = pafs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))
        self.last_save: float | None = None

    def load(self) -> dict | None:
        import io

        import pyarrow.fs as pafs

        target = f"{self.path}/{self.FILE}"
        if self.fs.get_file_info(target).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(target) as fh:
            return torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=False)

    def due(self) -> bool:
        return self.last_save is None or time.monotonic() - self.last_save >= self.every_s

    def save(self, state: dict) -> None:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        self.fs.create_dir(self.path, recursive=True)
        tmp = f"{self.path}/{self.FILE}.tmp"
        with self.fs.open_output_stream(tmp) as fh:
            fh.write(buf.getvalue())
        self.fs.move(tmp, f"{self.path}/{self.FILE}")
        self.last_save = time.monotonic()

    def clear(self) -> None:
        try:
            self.fs.delete_dir(self.path)
        except (FileNotFoundError, OSError):
            pass


def run_mode(spec: TrainSpec, seed: int, fs: FSConfig | None, *, device=None,
             progress: Callable[[dict], None] | None = None, log_every: int = 50,
             checkpoint: RunCheckpoint | None = None) -> dict:
    """Train one mode of one seed and return its RunResult (never raises on divergence). With
    ``checkpoint``, resume from its saved state if there is one, and save state as it goes."""
    if isinstance(spec, dict):
        spec = TrainSpec.model_validate(spec)
    b = spec.budget
    dist, rank, world = _dist()
    if b.batch_size < world:
        raise UsageError(f"batch_size {b.batch_size} is smaller than the number of workers {world}")
    device = torch.device(device or "cpu")
    torch.set_num_threads(spec.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)

    data = task_data(spec)
    stream = TrainStream(len(data.train), b.batch_size, seed)
    model = initial_model(spec, seed, data.tokenizer.vocab_size)
    init_hash = state_digest(model)
    if fs is not None:
        torch.manual_seed(seed + 7919)   # FS gates with random init (input gate) depend on the seed
        model.attach_fs(fs)
    model.to(device).train()
    groups = _trainable_groups(model, fs, b)
    if spec.compile == "off":
        opt = torch.optim.AdamW(groups, lr=b.lr, betas=b.betas, eps=1e-8)
    else:
        opt = fused.adamw(groups, lr=b.lr, betas=b.betas, eps=1e-8)
    scorer: nn.Module = AnswerScorer(model, use_fs=fs is not None)
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        scorer = DDP(scorer, device_ids=[device.index] if device.type == "cuda" else None,
                     # a provably no-op FS config leaves its trainable gates out of the graph
                     find_unused_parameters=fs is not None and model.future_seed.noop_reason is not None)
    trainable = [p for g in groups for p in g["params"] if p.requires_grad]
    # training calls only: evaluation stays eager (other shapes, no backward)
    train_scorer = fused.compile_scorer(scorer, spec.compile)
    clip_grad_norm_ = torch.nn.utils.clip_grad_norm_ if spec.compile == "off" else fused.clip_grad_norm_

    result = {
        "mode": "prompt_fs" if fs is not None else "no_fs", "status": "ok", "failure": None,
        "token_acc": None, "loss": None, "seq_acc": None, "best_step": None, "steps": 0,
        "tokens": 0, "seconds": 0.0, "curve": [], "learned": None, "cached": False,
        "seed": int(seed), "init_hash": init_hash, "data_hash": None,
    }
    best = None
    used_batches: list[list[int]] = []
    step, elapsed = 0, 0.0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        step, best, used_batches, elapsed = saved["step"], saved["best"], saved["used_batches"], saved["seconds"]
        result.update(tokens=saved["tokens"], curve=saved["curve"], resumed_from_step=step)
    t0, cpu0 = time.perf_counter() - elapsed, time.process_time()
    window_tokens, window_t0, loss_sum, loss_n = 0, time.perf_counter(), 0.0, 0
    while step < b.steps:
        idx = stream.batch_indices(step)
        used_batches.append(idx)
        batch = data.batch("train", worker_slice(idx, rank, world)).to(device)
        mult = _lr_multiplier(step, b)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * mult
        try:
            logits = train_scorer(batch.prompt, batch.prompt_mask, batch.answer)
        except (UsageError, RuntimeError) as exc:
            # Diverged weights make non-finite activations that an operator refuses (its NaN checks):
            # a failed run. Anything else is a real error.
            msg = str(exc).lower()
            if all(torch.isfinite(p).all() for p in trainable) and "nan" not in msg and "inf" not in msg:
                raise
            result.update(status="failed", failure=f"non-finite values at step {step} (diverged): "
                                                   f"{first_line(exc, with_type=False)}")
            break
        ce_sum, _, n_local, _ = _answer_stats(logits, batch)
        # Global normaliser: sum over workers of answer tokens of this global batch.
        sync = torch.tensor([float(n_local), float(batch.n_tokens), 0.0, 0.0], dtype=torch.float64)
        sync[2] = ce_sum.detach().double()
        over_time = b.max_seconds is not None and time.perf_counter() - t0 > b.max_seconds
        sync[3] = float(over_time)
        if dist is not None:
            dist.all_reduce(sync)
        n_global, tok_global, ce_global, stop_flag = sync.tolist()
        loss = ce_sum / n_global * world   # DDP averages over workers: undo it
        opt.zero_grad(set_to_none=True)
        step_loss = ce_global / n_global
        if not math.isfinite(step_loss):
            result.update(status="failed", failure=f"loss is {step_loss} at step {step} (diverged)")
            break
        loss.backward()
        if b.grad_clip > 0:
            norm = clip_grad_norm_(trainable, b.grad_clip)
            if not torch.isfinite(norm):
                result.update(status="failed", failure=f"gradient norm is {float(norm)} at step {step} (diverged)")
                break
        opt.step()
        step += 1
        result["tokens"] += int(tok_global)
        window_tokens += int(tok_global)
        loss_sum, loss_n = loss_sum + step_loss, loss_n + 1
        last = step == b.steps or stop_flag > 0
        if step % b.eval_every == 0 or last:
            m = evaluate(scorer, data, spec.data.eval_batch_size, device, rank, world, dist)
            if not all(math.isfinite(v) for v in m.values()):
                result.update(status="failed", failure=f"validation loss is {m['loss']} at step {step} (diverged)")
                break
            result["curve"].append([step, m["token_acc"], m["loss"], m["seq_acc"]])
            if best is None or m["token_acc"] > best[1]["token_acc"]:
                best = (step, m)
            if checkpoint is not None and rank == 0 and not last and checkpoint.due():
                checkpoint.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                 "best": best, "used_batches": used_batches, "tokens": result["tokens"],
                                 "curve": result["curve"], "seconds": time.perf_counter() - t0})
        if progress is not None and rank == 0 and (step % log_every == 0 or last):
            now = time.perf_counter()
            cur = result["curve"][-1] if result["curve"] and result["curve"][-1][0] == step else None
            progress({"mode": result["mode"], "seed": seed, "step": step, "steps": b.steps,
                      "loss": loss_sum / loss_n, "token_acc": cur[1] if cur else None,
                      "seq_acc": cur[3] if cur else None,
                      "tokens_per_s": window_tokens / max(now - window_t0, 1e-9)})
            window_tokens, window_t0, loss_sum, loss_n = 0, now, 0.0, 0
        if stop_flag > 0:
            break
    result["steps"] = step
    result["seconds"] = time.perf_counter() - t0
    if checkpoint is not None and rank == 0:
        checkpoint.clear()   # the run is over: its record (or failure) is what counts now
    # CPU time of this process: what the run costs on an idle machine (wall time is noisy when shared)
    result["cpu_seconds"] = time.process_time() - cpu0
    result["data_hash"] = indices_digest(used_batches)
    if best is not None:
        result.update(best_step=best[0], token_acc=best[1]["token_acc"], loss=best[1]["loss"],
                      seq_acc=best[1]["seq_acc"])
        result["learned"] = _learned(spec, data.chance, best[1])
    elif result["status"] == "ok":   # cannot happen (the last step always evaluates); be explicit
        result.update(status="failed", failure="no evaluation was made")
    return result


def task_chance(spec: TrainSpec) -> dict | None:
    return task_data(spec).chance


def make_record(spec: TrainSpec, fs: FSConfig | None, seed: int, baseline: dict | None,
                fs_run: dict | None, stage: str, trial_id: str | None = None,
                noop_reason: str | None = None, failure: str | None = None) -> dict:
    """The record of one paired seed of ``spec`` (``fsray.records.build_record`` with this spec's
    context: chance level, learned rule, baseline key, model, budget, code version)."""
    from .records import build_record

    context = {"chance": _safe_chance(spec), "learned_margin": spec.learned_margin,
               "learned_metric": spec.learned_metric, "baseline_key": baseline_key(spec, seed),
               "model": spec.model.model_dump(), "budget": spec.budget.model_dump(),
               "task_options": spec.task.options, "code_version": CODE_VERSION}
    return build_record(task_label(spec), fs, seed, baseline, fs_run, stage, trial_id, noop_reason,
                        failure, context)


def _safe_chance(spec: TrainSpec):
    try:
        return task_chance(spec)
    except UsageError:
        return None
