"""The Future-Seed configuration: every knob of docs/DESIGN.md §3 in one validated object.

The injection itself lives in ``fsray.fs`` (one place); this module is torch-free so the tuner, the
CLI and the YAML loader can validate configurations without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class FSConfig(BaseModel):
    """Knobs of the FS transform (names as researchers use them).

    For layer i >= max(1, fs_layer_start), prev = terminal state of layer i-1::

        base = prev.detach() if fs_detach else prev
        if fs_norm: base = base / rms(base).clamp_min(1e-6)        # per head, over N x N
        logit = alpha[i]  (+ <x_last, fs_in_w[i]>/sqrt(C) + fs_in_b[i] if fs_input_gate, per sample)
        g = seed_scale * schedule(i) * sigmoid(logit)
            (* sigmoid(alpha_head[i, h]) if fs_variant == "head")
        fs = base * g; if fs_clip > 0: fs = fs.clamp(-fs_clip, fs_clip)

    These are the researchers' semantics (their ``rwkv7_g1d.py``; docs/DESIGN.md §3): records made with them
    carry ``fs_semantics`` = ``analysis.schema.FS_SEMANTICS``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    alpha_init: float = -2.0          # initial gate logit, one per layer (sigmoid(-2) = 0.12)
    alpha_lr: float = 0.0             # learning rate of the gates; 0 = fixed gate
    fs_layer_start: int = 1           # first layer receiving a seed (layer 0 never does)
    fs_alpha_schedule: Literal["none", "linear", "cosine"] = "none"
    fs_alpha_min: float = 0.25        # schedule multiplier at fs_layer_start
    fs_alpha_max: float = 1.0         # schedule multiplier at the last layer
    fs_norm: bool = True
    fs_detach: bool = True
    fs_clip: float = 1.0              # 0 disables the clamp
    seed_scale: float = 1.0
    fs_variant: Literal["scalar", "head"] = "scalar"
    fs_input_gate: bool = False       # per-sample gate from the last prompt token
    # initial per-head gate logit (fs_variant = head); None = alpha_init, the researchers' default,
    # so the per-head gate starts at sigmoid(alpha_init)^2. An explicit value wins.
    head_alpha_init: float | None = None
    input_gate_bias_init: float = 0.0  # initial fs_in_b (the researchers start it at 0)

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, v, info):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{info.field_name} must be a finite number, got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "FSConfig":
        if self.fs_layer_start < 0:
            raise ValueError(f"fs_layer_start must be >= 0, got {self.fs_layer_start}")
        if self.alpha_lr < 0:
            raise ValueError(f"alpha_lr must be >= 0, got {self.alpha_lr}")
        if self.fs_clip < 0:
            raise ValueError(f"fs_clip must be >= 0 (0 disables it), got {self.fs_clip}")
        if self.seed_scale < 0:
            raise ValueError(f"seed_scale must be >= 0, got {self.seed_scale}")
        if self.fs_alpha_min < 0 or self.fs_alpha_max < 0:
            raise ValueError("fs_alpha_min and fs_alpha_max must be >= 0")
        if self.fs_alpha_min > self.fs_alpha_max:
            raise ValueError(
                f"fs_alpha_min ({self.fs_alpha_min}) must be <= fs_alpha_max ({self.fs_alpha_max})"
            )
        return self

    def head_logit_init(self) -> float:
        """The per-head gate's initial logit: ``head_alpha_init``, or ``alpha_init`` when unset."""
        return self.alpha_init if self.head_alpha_init is None else self.head_alpha_init

    def first_layer(self) -> int:
        return max(1, self.fs_layer_start)

    def schedule(self, layer: int, n_layer: int) -> float:
        """Depth multiplier of layer ``layer``: ramps fs_alpha_min -> fs_alpha_max from
        ``first_layer()`` to the last layer (linear or half-cosine); 1 for ``none``."""
        if self.fs_alpha_schedule == "none":
            return 1.0
        start, last = self.first_layer(), n_layer - 1
        u = 1.0 if last <= start else (layer - start) / (last - start)
        u = min(1.0, max(0.0, u))
        if self.fs_alpha_schedule == "cosine":
            u = 0.5 * (1.0 - math.cos(math.pi * u))
        return self.fs_alpha_min + (self.fs_alpha_max - self.fs_alpha_min) * u

    def noop_reason(self, n_layer: int) -> str | None:
        """Why this config is provably identical to no_fs (None if it is not)."""
        if self.first_layer() >= n_layer:
            return f"fs_layer_start={self.fs_layer_start} >= n_layer={n_layer}: no layer is seeded"
        if self.seed_scale == 0.0:
            return "seed_scale=0: the gate is exactly 0"
        if self.fs_alpha_schedule != "none" and self.fs_alpha_max == 0.0:
            return "fs_alpha_max=0: the schedule multiplier is 0 on every layer"
        # sigmoid(alpha) is never exactly 0 for finite alpha in exact arithmetic; in float32 it
        # underflows to 0 below about -104, and a fixed gate (alpha_lr=0) then stays 0.
        if self.alpha_lr == 0.0 and self.alpha_init < -104.0:
            return f"alpha_init={self.alpha_init} with alpha_lr=0: sigmoid underflows to exactly 0"
        return None

    def is_noop(self, n_layer: int) -> bool:
        return self.noop_reason(n_layer) is not None

    def label(self) -> str:
        """Short human label listing the knobs that differ from the defaults."""
        d = self.model_dump()
        default = FSConfig().model_dump()
        parts = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in d.items() if v != default[k]]
        return " ".join(parts) if parts else "default"


def config_hash(config: dict | FSConfig) -> str:
    """12-hex content hash of a configuration (canonical JSON of its fields)."""
    if isinstance(config, FSConfig):
        config = config.model_dump()
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
