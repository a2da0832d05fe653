"""What a paired seed run trains: ``TrainSpec`` and its sections, the embedded default, and the
content key of a no_fs run (``baseline_key``, with ``CODE_VERSION``).

Torch-free (pydantic only), so the search, the CLI and the analysis build and key specs without
importing the training loop (``fsray.trainer``).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import fsray
from .errors import UsageError

ASSETS = Path(__file__).resolve().parent / "assets"
EMBEDDED_BASE = "embedded:base"  # model.checkpoint value naming the shipped base checkpoint
EMBEDDED_BASE_FILE = ASSETS / "base_l2_d64.pth"


# ----------------------------------------------------------------------------------- the spec
class StrictModel(BaseModel):
    """A section of a spec or a search file: unknown keys are errors, not silently dropped; inf
    and nan are never a setting."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)



class TaskSpec(StrictModel):
    name: str = "kv_retrieval"
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(StrictModel):
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


class BudgetSpec(StrictModel):
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


class DataSpec(StrictModel):
    n_train: int = Field(8192, ge=1)
    n_val: int = Field(512, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    data_seed: int = 0   # fixes the generated/loaded examples; the run seed only shuffles them


class TrainSpec(StrictModel):
    task: TaskSpec = Field(default_factory=TaskSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    wkv_backend: Literal["auto", "reference", "torch", "compiled", "triton", "fla"] = "auto"
    # fsray.precision: auto = bf16 autocast on CUDA (fp32 weights, optimizer, WKV state, loss), fp32 on CPU
    precision: Literal["auto", "bf16", "fp32"] = "auto"
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


# ----------------------------------------------------------------------------------- keys
# The sources that determine a run's numbers (a change to any of them keys new baselines).
_RUN_SOURCES = ("spec.py", "trainer.py", "data.py", "model.py", "fs.py")


def _code_version() -> str:
    """Package version + hash of the sources that determine a run's numbers."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    files = [root / name for name in _RUN_SOURCES]
    files += sorted((root / "wkv").glob("*.py")) + sorted((root / "tasks").glob("**/*.py"))
    for f in files:
        if f.exists():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return f"{fsray.__version__}+src.{h.hexdigest()[:10]}"


CODE_VERSION = _code_version()


def baseline_key(spec: TrainSpec, seed: int, precision: str | None = None) -> str:
    """Content hash of everything that determines the no_fs run of ``seed``."""
    what = {
        "task": spec.task.model_dump(), "model": spec.model.model_dump(),
        "budget": spec.budget.model_dump(), "data": spec.data.model_dump(),
        "wkv_backend": spec.wkv_backend, "seed": int(seed), "code": CODE_VERSION,
    }
    if spec.compile != "off":   # the fused step rounds differently (~1e-7 a step): its own baselines
        what["compile"] = spec.compile
    # The precision the run resolves to (fsray.precision): fp32 keys as every run before the policy did
    # (same numbers), bf16 apart. ``precision``: what it resolved to where known (a recorded run, the
    # search's resources), else what ``spec.precision`` gives on the CPU.
    if precision is None:
        precision = "bf16" if spec.precision == "bf16" else "fp32"
    if precision != "fp32":
        what["precision"] = precision
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
