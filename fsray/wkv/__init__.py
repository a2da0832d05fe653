"""The WKV7 operator ``(r, logw, k, v, a, b, s0) -> (y, sT)`` behind one dispatch.

Backends: ``reference`` (per-token loop), ``torch`` (fast exact path for CPUs), ``triton`` (GPU kernel),
``fla`` (flash-linear-attention's chunk_rwkv7, optional). ``auto`` picks triton on CUDA, torch elsewhere.
See ``fsray.wkv.reference`` for the math and the shape conventions.
"""

from __future__ import annotations

from .reference import wkv7_reference

BACKENDS = ("auto", "reference", "torch", "triton", "fla")


def wkv7(r, logw, k, v, a, b, s0=None, backend: str = "auto"):
    """Run the WKV7 recurrence. y has r's dtype; sT is float32 (float64 for float64 inputs)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown WKV backend {backend!r}; choose from {BACKENDS}")
    # Placeholder until the fast backends land: every backend is the reference.
    y, sT = wkv7_reference(r, logw, k, v, a, b, s0)
    return y.to(r.dtype), sT
