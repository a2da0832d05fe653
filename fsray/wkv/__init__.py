"""The WKV7 operator ``(r, logw, k, v, a, b, s0) -> (y, sT)`` behind one dispatch.

Backends: ``reference`` (per-token autograd loop), ``torch`` (exact chunked formulation in plain torch
ops, ``fsray.wkv.chunked``), ``compiled`` (the per-token loop in C, built at first use, with a hand-written
backward, ``fsray.wkv.compiled``: the fastest CPU path at every shape measured in bench/wkv_cpu.py),
``triton`` (GPU kernel, ``fsray.wkv.triton_kernel``), ``fla`` (flash-linear-attention's chunk_rwkv7, an
optional extra). ``auto`` on CUDA tensors takes the fastest backend that passed the self-check on that
device (``fsray.wkv.selfcheck``: once per device and versions, cached on disk; ``fsray doctor`` shows it),
on CPU tensors compiled (torch, with a warning, where no C compiler can build it). See ``fsray.wkv.reference`` for the math and the shape conventions.

The compiled C loop and the Triton kernel are also torch custom ops (``torch.ops.fsray.wkv7_cpu_fwd``/
``_bwd``, ``wkv7_triton_fwd``/``_bwd``): under ``torch.compile`` (``fsray.fused``) the backends call
those, so the graph does not break at the operator; eagerly they call their autograd.Functions.
"""

from __future__ import annotations

import functools
import warnings

import torch

from ..errors import UsageError
from . import compiled
from .chunked import wkv7_chunked
from .reference import wkv7_reference

BACKENDS = ("auto", "reference", "torch", "compiled", "triton", "fla")


def _check(r, logw, k, v, a, b, s0) -> None:
    if r.dim() != 4:
        raise UsageError(f"WKV7 inputs must be [B, T, H, N]; r has shape {tuple(r.shape)}")
    for name, x in (("logw", logw), ("k", k), ("v", v), ("a", a), ("b", b)):
        if x.shape != r.shape:
            raise UsageError(f"WKV7 input {name} has shape {tuple(x.shape)}, expected r's {tuple(r.shape)}")
    B, _, H, N = r.shape
    if s0 is not None and s0.shape != (B, H, N, N):
        raise UsageError(f"WKV7 initial state s0 has shape {tuple(s0.shape)}, expected {(B, H, N, N)}")


def _triton(r, logw, k, v, a, b, s0):
    try:
        from .triton_kernel import wkv7_triton
    except ImportError as exc:  # triton missing, or the kernel module not importable here
        raise UsageError(f"WKV backend 'triton' is unavailable: {exc}") from exc
    return wkv7_triton(r, logw, k, v, a, b, s0)


def _fla(r, logw, k, v, a, b, s0):
    from .fla_backend import wkv7_fla

    return wkv7_fla(r, logw, k, v, a, b, s0)


@functools.cache
def _fallback() -> str:
    """The CPU path when the C kernel cannot be built: said once (cached), since it is ~3x slower."""
    warnings.warn(f"fsray: the compiled WKV7 CPU kernel is unavailable ({compiled.unavailable_reason()}); "
                  "using the slower pure-torch path", RuntimeWarning, stacklevel=3)
    return "torch"


_IMPLS = {
    "reference": wkv7_reference,
    "torch": wkv7_chunked,
    "compiled": compiled.wkv7_compiled,
    "triton": _triton,
    "fla": _fla,
}


def wkv7(r, logw, k, v, a, b, s0=None, backend: str = "auto"):
    """Run the WKV7 recurrence. y has r's dtype; sT is float32 (float64 for float64 inputs).

    Shapes: r, logw, k, v, a, b [B, T, H, N]; s0, sT [B, H, N, N] indexed [value, key]; ``logw`` is the
    log of the decay (<= 0). Every backend is differentiable in every input, s0 included.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown WKV backend {backend!r}; choose from {', '.join(BACKENDS)}")
    _check(r, logw, k, v, a, b, s0)
    if backend == "auto":
        if r.is_cuda:
            from . import selfcheck

            backend = selfcheck.backend_for(r)
        else:
            backend = "compiled" if compiled.available() else _fallback()
    # Under bf16 autocast (fsray.precision) the inputs arrive in bf16 and every backend computes in
    # float32 with a float32 state: autocast must not turn their own products back into bf16.
    with torch.autocast(r.device.type, enabled=False):
        y, sT = _IMPLS[backend](r, logw, k, v, a, b, s0)
    state_dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    return y.to(r.dtype), sT.to(state_dtype)
