"""The training precision policy: ``precision: auto | bf16 | fp32`` in the training spec and the search file.

``bf16``: the forward runs under ``torch.autocast(dtype=bfloat16)``: matmuls and the WKV kernel's inputs
in bfloat16, while the weights (the master copy the optimizer updates), the optimizer state, the WKV
state (every backend keeps it in float32) and the loss (cross-entropy on float32 logits) stay float32;
the decay's log is computed in float32 too (``fsray.model``), since w^T over a long prompt amplifies its
rounding. bfloat16 has float32's exponent range, so no loss scaling is needed. ``fp32``: no autocast.
``auto``: bf16 on CUDA devices (what the researchers train in, ~5x the matmul throughput of fp32 on an
H100), fp32 on the CPU (where bf16 matmuls are emulated and slower).

TF32 is not offered: it would be a process-wide switch (``torch.backends.cuda.matmul``), which two seed
runs packed into one process could not set differently, and bf16 is faster still.

A run records the precision it resolved to; baselines are keyed by the policy and never paired with an
FS run that resolved to another precision (``fsray.records.build_record``).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS = ("auto", "bf16", "fp32")


def resolve(precision: str, device) -> str:
    """``bf16`` or ``fp32`` for a run of ``precision`` on ``device``."""
    if precision not in PRECISIONS:
        from .errors import UsageError

        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def autocast(resolved: str, device):
    """The context the forward passes of a run of ``resolved`` precision run under."""
    if resolved == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
