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
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fused
from .data import Batch, TrainStream, collate, eval_batches, indices_digest, worker_slice
from .errors import UsageError, first_line
from .fsconfig import FSConfig
from .spec import (  # noqa: F401 - the spec's names, also importable from here
    CODE_VERSION, EMBEDDED_BASE, EMBEDDED_BASE_FILE, BudgetSpec, DataSpec, ModelSpec, TaskSpec, TrainSpec,
    baseline_key, embedded_default_spec, resolve_checkpoint, task_label,
)
from .storage import RunCheckpoint  # noqa: F401 - also importable from here


# ----------------------------------------------------------------------------------- helpers
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


def run_mode(spec: TrainSpec, seed: int, fs: FSConfig | None, *, device=None,
             progress: Callable[[dict], None] | None = None, log_every: int = 50,
             checkpoint: RunCheckpoint | None = None) -> dict:
    """Train one mode of one seed and return its RunResult (never raises on divergence). With
    ``checkpoint``, resume from its saved state if there is one, and save state as it goes."""
    run = _ModeRun(spec, seed, fs, device=device, checkpoint=checkpoint)
    steps = run.budget.steps
    while run.step < steps:
        if not run.train_step():   # diverged: the result says where
            break
        last = run.step == steps or run.out_of_time
        if (run.step % run.budget.eval_every == 0 or last) and not run.eval_and_save(last):
            break
        if progress is not None and run.rank == 0 and (run.step % log_every == 0 or last):
            run.report(progress)
        if run.out_of_time:
            break
    return run.finish()


class _ModeRun:
    """One mode of one seed in training: set up (``__init__``), then ``train_step`` after
    ``train_step`` with ``eval_and_save`` every ``eval_every`` steps, then ``finish``."""

    def __init__(self, spec: TrainSpec | dict, seed: int, fs: FSConfig | None, *, device=None,
                 checkpoint: RunCheckpoint | None = None):
        if isinstance(spec, dict):
            spec = TrainSpec.model_validate(spec)
        self.spec, self.seed, self.fs, self.checkpoint = spec, seed, fs, checkpoint
        self.budget = b = spec.budget
        self.dist, self.rank, self.world = _dist()
        if b.batch_size < self.world:
            raise UsageError(f"batch_size {b.batch_size} is smaller than the number of workers {self.world}")
        self.device = device = torch.device(device or "cpu")
        torch.set_num_threads(spec.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)

        self.data = task_data(spec)
        self.stream = TrainStream(len(self.data.train), b.batch_size, seed)
        self.model = model = initial_model(spec, seed, self.data.tokenizer.vocab_size)
        init_hash = state_digest(model)
        if fs is not None:
            torch.manual_seed(seed + 7919)   # FS gates with random init (input gate) depend on the seed
            model.attach_fs(fs)
        model.to(device).train()
        groups = _trainable_groups(model, fs, b)
        if spec.compile == "off":
            self.opt = torch.optim.AdamW(groups, lr=b.lr, betas=b.betas, eps=1e-8)
        else:
            self.opt = fused.adamw(groups, lr=b.lr, betas=b.betas, eps=1e-8)
        scorer: nn.Module = AnswerScorer(model, use_fs=fs is not None)
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel as DDP

            scorer = DDP(scorer, device_ids=[device.index] if device.type == "cuda" else None,
                         # a provably no-op FS config leaves its trainable gates out of the graph
                         find_unused_parameters=fs is not None and model.future_seed.noop_reason is not None)
        self.scorer = scorer
        self.trainable = [p for g in groups for p in g["params"] if p.requires_grad]
        # training calls only: evaluation stays eager (other shapes, no backward)
        self.train_scorer = fused.compile_scorer(scorer, spec.compile)
        self.clip_grad_norm_ = torch.nn.utils.clip_grad_norm_ if spec.compile == "off" else fused.clip_grad_norm_

        self.result = {
            "mode": "prompt_fs" if fs is not None else "no_fs", "status": "ok", "failure": None,
            "token_acc": None, "loss": None, "seq_acc": None, "best_step": None, "steps": 0,
            "tokens": 0, "seconds": 0.0, "curve": [], "learned": None, "cached": False,
            "seed": int(seed), "init_hash": init_hash, "data_hash": None,
        }
        self.best = None
        self.used_batches: list[list[int]] = []
        self.step, elapsed = 0, 0.0
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None:
            model.load_state_dict(saved["model"])
            self.opt.load_state_dict(saved["optimizer"])
            self.step, self.best, self.used_batches, elapsed = (saved["step"], saved["best"], saved["used_batches"],
                                                                saved["seconds"])
            self.result.update(tokens=saved["tokens"], curve=saved["curve"], resumed_from_step=self.step)
        self.out_of_time = False
        self.t0, self.cpu0 = time.perf_counter() - elapsed, time.process_time()
        self.window_tokens, self.window_t0, self.loss_sum, self.loss_n = 0, time.perf_counter(), 0.0, 0

    def _fail(self, failure: str) -> bool:
        self.result.update(status="failed", failure=failure)
        return False

    def train_step(self) -> bool:
        """One optimizer step on the next global batch (this worker's slice of it); False when the
        run diverged. Sets ``out_of_time`` when any worker passed ``budget.max_seconds``."""
        b, step, world = self.budget, self.step, self.world
        idx = self.stream.batch_indices(step)
        self.used_batches.append(idx)
        batch = self.data.batch("train", worker_slice(idx, self.rank, world)).to(self.device)
        mult = _lr_multiplier(step, b)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * mult
        try:
            logits = self.train_scorer(batch.prompt, batch.prompt_mask, batch.answer)
        except (UsageError, RuntimeError) as exc:
            # Diverged weights make non-finite activations that an operator refuses (its NaN checks):
            # a failed run. Anything else is a real error.
            msg = str(exc).lower()
            if all(torch.isfinite(p).all() for p in self.trainable) and "nan" not in msg and "inf" not in msg:
                raise
            return self._fail(f"non-finite values at step {step} (diverged): {first_line(exc, with_type=False)}")
        ce_sum, _, n_local, _ = _answer_stats(logits, batch)
        # Global normaliser: sum over workers of answer tokens of this global batch.
        sync = torch.tensor([float(n_local), float(batch.n_tokens), 0.0, 0.0], dtype=torch.float64)
        sync[2] = ce_sum.detach().double()
        over_time = b.max_seconds is not None and time.perf_counter() - self.t0 > b.max_seconds
        sync[3] = float(over_time)
        if self.dist is not None:
            self.dist.all_reduce(sync)
        n_global, tok_global, ce_global, stop_flag = sync.tolist()
        loss = ce_sum / n_global * world   # DDP averages over workers: undo it
        self.opt.zero_grad(set_to_none=True)
        step_loss = ce_global / n_global
        if not math.isfinite(step_loss):
            return self._fail(f"loss is {step_loss} at step {step} (diverged)")
        loss.backward()
        if b.grad_clip > 0:
            norm = self.clip_grad_norm_(self.trainable, b.grad_clip)
            if not torch.isfinite(norm):
                return self._fail(f"gradient norm is {float(norm)} at step {step} (diverged)")
        self.opt.step()
        self.step += 1
        self.result["tokens"] += int(tok_global)
        self.window_tokens += int(tok_global)
        self.loss_sum, self.loss_n = self.loss_sum + step_loss, self.loss_n + 1
        self.out_of_time = stop_flag > 0
        return True

    def eval_and_save(self, last: bool) -> bool:
        """Evaluate on the validation batches, keep the best evaluation, save the resumable state
        when it is due (not after the last step: the run is about to return); False when the
        validation loss diverged."""
        m = evaluate(self.scorer, self.data, self.spec.data.eval_batch_size, self.device, self.rank, self.world,
                     self.dist)
        if not all(math.isfinite(v) for v in m.values()):
            return self._fail(f"validation loss is {m['loss']} at step {self.step} (diverged)")
        self.result["curve"].append([self.step, m["token_acc"], m["loss"], m["seq_acc"]])
        if self.best is None or m["token_acc"] > self.best[1]["token_acc"]:
            self.best = (self.step, m)
        ckpt = self.checkpoint
        if ckpt is not None and self.rank == 0 and not last and ckpt.due():
            ckpt.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
                       "best": self.best, "used_batches": self.used_batches, "tokens": self.result["tokens"],
                       "curve": self.result["curve"], "seconds": time.perf_counter() - self.t0})
        return True

    def report(self, progress: Callable[[dict], None]) -> None:
        """A progress event: mean training loss and throughput since the last one, and the
        evaluation of this step if it had one."""
        now, result, step = time.perf_counter(), self.result, self.step
        cur = result["curve"][-1] if result["curve"] and result["curve"][-1][0] == step else None
        progress({"mode": result["mode"], "seed": self.seed, "step": step, "steps": self.budget.steps,
                  "loss": self.loss_sum / self.loss_n, "token_acc": cur[1] if cur else None,
                  "seq_acc": cur[3] if cur else None,
                  "tokens_per_s": self.window_tokens / max(now - self.window_t0, 1e-9)})
        self.window_tokens, self.window_t0, self.loss_sum, self.loss_n = 0, now, 0.0, 0

    def finish(self) -> dict:
        """The RunResult: the best evaluation's metrics, timings, the data order's digest."""
        result = self.result
        result["steps"] = self.step
        result["seconds"] = time.perf_counter() - self.t0
        if self.checkpoint is not None and self.rank == 0:
            self.checkpoint.clear()   # the run is over: its record (or failure) is what counts now
        # CPU time of this process: what the run costs on an idle machine (wall time is noisy when shared)
        result["cpu_seconds"] = time.process_time() - self.cpu0
        result["data_hash"] = indices_digest(self.used_batches)
        if self.best is not None:
            step, m = self.best
            result.update(best_step=step, token_acc=m["token_acc"], loss=m["loss"], seq_acc=m["seq_acc"])
            result["learned"] = _learned(self.spec, self.data.chance, m)
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
