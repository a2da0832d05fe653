"""WKV7 as one compiled per-token loop in C: the fast CPU path.

At the tiny models' shapes (head size 16-32, prompts of tens of tokens) the chunked torch path
(``fsray.wkv.chunked``) spends its time on the fixed cost of ~100 tensor operations per call, not on
arithmetic (a call is ~10 Mflop). ``cpu_kernel.c`` runs the recurrence of ``fsray.wkv.reference`` as
plain loops, one (batch, head) pair at a time, with the backward written by hand (the formulas are at
the top of ``cpu_kernel.h``). Head sizes 8/16/32/64 compile to constant-length loops that the compiler
unrolls and vectorises; any head size up to 64 works.

The forward keeps every state when they fit in ``FULL_STATES_BYTES`` (the backward then recomputes
nothing), else one state every ``CHECKPOINT`` tokens, recomputed stretch by stretch in the backward.

Build: at first use the C file is compiled with the system C compiler (``$CC``, else ``cc``) into
``$FSRAY_CACHE_DIR`` (default ``~/.cache/fsray``)/kernels, named by a hash of the source, the flags and
this CPU's feature flags (``-march=native`` code must not run on another CPU model sharing the
directory). The library is written to a temporary name and renamed, so concurrent Ray workers never
load a half-written file. Without a compiler, ``available()`` is False with the reason, and the
``auto`` backend uses the chunked torch path instead.

Arithmetic is in the inputs' dtype (float32, or float64 for gradcheck) in the reference's order of
operations, except that sums may be reassociated to vectorise; NaN and inf still propagate (no
``-ffinite-math-only``), so a diverging run is still seen.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ..errors import UsageError

CHECKPOINT = 32
# Below this size the forward keeps every state and the backward recomputes nothing.
FULL_STATES_BYTES = 64 << 20
MAX_N = 64  # the C file's MAX_N: per-head state and scratch live on the stack

_SRC = Path(__file__).with_name("cpu_kernel.c")
_HDR = Path(__file__).with_name("cpu_kernel.h")
# Reassociation lets the dot products vectorise; no -ffinite-math-only, so NaN/inf propagate.
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-signed-zeros", "-fno-trapping-math",
          "-fassociative-math", "-ffp-contract=fast", "-shared", "-fPIC"]

_lock = threading.Lock()
_lib = None
_error: str | None = None
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (owner pid, threads, pool)


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("FSRAY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fsray")
    return Path(root) / "kernels"


def _build() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    key = hashlib.sha256()
    for part in (_SRC.read_bytes(), _HDR.read_bytes(), " ".join(_FLAGS).encode(), cc.encode(),
                 _cpu_signature().encode()):
        key.update(part)
    out = _cache_dir() / f"wkv7_cpu_{key.hexdigest()[:16]}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            proc = subprocess.run([cc, *_FLAGS, str(_SRC), "-o", tmp], capture_output=True, text=True)
            if proc.returncode:
                first = (proc.stderr.strip().splitlines() or ["(no output)"])[0]
                raise RuntimeError(f"compiling {_SRC.name} with {cc} failed: {first}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(out))
    L, I, P = ctypes.c_long, ctypes.c_int, ctypes.c_void_p
    for suf in ("f32", "f64"):
        fwd = getattr(lib, f"wkv7_forward_{suf}")
        fwd.argtypes = [L] * 6 + [P] * 11 + [L, L, I]
        fwd.restype = I
        bwd = getattr(lib, f"wkv7_backward_{suf}")
        bwd.argtypes = [L] * 6 + [P] * 8 + [L] + [P] * 2 + [L, I] + [P] * 7
        bwd.restype = I
    return lib


def _library() -> ctypes.CDLL | None:
    global _lib, _error
    if _lib is None and _error is None:
        with _lock:
            if _lib is None and _error is None:
                try:
                    _lib = _build()
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    _error = str(exc)
    return _lib


def available() -> bool:
    """True when the C kernel is built (or builds now) on this machine."""
    return _library() is not None


def unavailable_reason() -> str | None:
    _library()
    return _error


def _run(fn, n_heads: int) -> None:
    """Call fn(bh_begin, bh_end) over all heads, split across torch's thread budget (ctypes
    releases the GIL, so Python threads run the C code in parallel)."""
    global _pool
    n = min(torch.get_num_threads(), n_heads)
    if n <= 1:
        codes = [fn(0, n_heads)]
    else:
        # a forked child inherits the pool object but not its threads: make a new one there
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < n:
            _pool = (os.getpid(), n, ThreadPoolExecutor(max_workers=n, thread_name_prefix="fsray-wkv7"))
        edges = [n_heads * i // n for i in range(n + 1)]
        futures = [_pool[2].submit(fn, edges[i], edges[i + 1]) for i in range(n)]
        codes = [f.result() for f in futures]
    if any(codes):
        raise RuntimeError(f"WKV7 C kernel failed with code {max(codes, key=abs)}")


def _ptr(x: torch.Tensor) -> int:
    return x.data_ptr()


def _keeps_all_states(B: int, T: int, H: int, N: int, element_size: int) -> bool:
    """Whether every state of a call of this shape is kept for the backward (else one every
    ``CHECKPOINT`` steps)."""
    return B * H * (T + 1) * N * N * element_size <= FULL_STATES_BYTES


def _n_states(T, checkpoint: int, full: bool):
    return T + 1 if full else (T + checkpoint - 1) // checkpoint


def _c_forward(r, w, k, v, a, b, s0, checkpoint: int, full: bool):
    """(y, sT, u, states) of the C forward; float32 or float64, T >= 1; w is the decay itself."""
    B, T, H, N = r.shape
    lib = _library()
    suf = "f64" if r.dtype == torch.float64 else "f32"
    args = [x.contiguous() for x in (r, w, k, v, a, b, s0)]
    y, u = torch.empty_like(args[0]), torch.empty_like(args[0])
    sT = r.new_empty(B, H, N, N)
    n_states = _n_states(T, checkpoint, full)
    states = r.new_empty(B, H, n_states, N, N)
    fn = getattr(lib, f"wkv7_forward_{suf}")
    ptrs = [_ptr(x) for x in (*args, y, sT, u, states)]

    def call(lo, hi):
        return fn(B, T, H, N, lo, hi, *ptrs, n_states, checkpoint, int(full))

    _run(call, B * H)
    return y, sT, u, states


def _c_backward(r, w, k, v, a, b, u, states, dy, dsT, checkpoint: int, full: bool):
    """(dr, dw, dk, dv, da, db, ds0) of the C backward (dw: with respect to the decay w itself)."""
    B, T, H, N = r.shape
    lib = _library()
    suf = "f64" if r.dtype == torch.float64 else "f32"
    ins = [x.contiguous() for x in (r, w, k, v, a, b, u, states)]
    dy = dy.to(r.dtype).contiguous()
    dsT = dsT.to(r.dtype).contiguous()
    grads = [torch.empty_like(ins[0]) for _ in range(6)]
    ds0 = r.new_empty(B, H, N, N)
    fn = getattr(lib, f"wkv7_backward_{suf}")
    in_ptrs = [_ptr(x) for x in ins]
    outs = [_ptr(g) for g in grads] + [_ptr(ds0)]
    n_states = states.shape[2]

    def call(lo, hi):
        return fn(B, T, H, N, lo, hi, *in_ptrs, n_states, _ptr(dy), _ptr(dsT), checkpoint, int(full), *outs)

    _run(call, B * H)
    return (*grads, ds0)


class _CompiledWKV7(torch.autograd.Function):
    """Inputs contiguous, in the compute dtype; s0 may be None."""

    @staticmethod
    def forward(ctx, r, logw, k, v, a, b, s0):
        B, T, H, N = r.shape
        w = torch.exp(logw)
        full = _keeps_all_states(B, T, H, N, r.element_size())
        s0_ = r.new_zeros(B, H, N, N) if s0 is None else s0
        y, sT, u, states = _c_forward(r, w, k, v, a, b, s0_, CHECKPOINT, full)
        ctx.save_for_backward(r, w, k, v, a, b, u, states)
        ctx.meta = (full, s0 is None)
        return y, sT

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dsT):
        r, w, k, v, a, b, u, states = ctx.saved_tensors
        full, no_s0 = ctx.meta
        dr, dw, dk, dv, da, db, ds0 = _c_backward(r, w, k, v, a, b, u, states, dy, dsT, CHECKPOINT, full)
        dlogw = dw.mul_(w)  # d/dlogw of exp(logw)
        return dr, dlogw, dk, dv, da, db, (None if no_s0 else ds0)


# ----------------------------------------------------------------------------------- custom ops
# The same C forward and backward as torch custom ops (``torch.ops.fsray.wkv7_cpu_fwd`` / ``_bwd``), so
# ``torch.compile`` keeps the model in one graph around them: each op has a fake (shape-only) version for
# tracing, and the forward's autograd formula calls the backward op, so AOTAutograd traces the backward
# graph through it too. The eager training step keeps ``_CompiledWKV7`` (the reference path); the op is
# used while compiling (``torch.compiler.is_compiling()``) or when asked (``use_op=True``). The decay's
# exp and its chain rule stay outside the op, where the compiler fuses them with the rest.


@torch.library.custom_op("fsray::wkv7_cpu_fwd", mutates_args=(), device_types="cpu")
def _op_fwd(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
            b: torch.Tensor, s0: torch.Tensor, checkpoint: int, full: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, sT, u, states) of the C forward; inputs contiguous, float32 or float64, T >= 1."""
    return _c_forward(r, w, k, v, a, b, s0, checkpoint, full)


@_op_fwd.register_fake
def _op_fwd_fake(r, w, k, v, a, b, s0, checkpoint, full):
    B, T, H, N = r.shape
    n_states = _n_states(T, checkpoint, full)
    like = dict(memory_format=torch.contiguous_format)   # the real op returns contiguous tensors
    return (torch.empty_like(r, **like), r.new_empty(B, H, N, N), torch.empty_like(r, **like),
            r.new_empty(B, H, n_states, N, N))


@torch.library.custom_op("fsray::wkv7_cpu_bwd", mutates_args=(), device_types="cpu")
def _op_bwd(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
            b: torch.Tensor, u: torch.Tensor, states: torch.Tensor, dy: torch.Tensor, dsT: torch.Tensor,
            checkpoint: int, full: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                  torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dr, dw, dk, dv, da, db, ds0) of the C backward (dw: with respect to the decay w itself)."""
    return _c_backward(r, w, k, v, a, b, u, states, dy, dsT, checkpoint, full)


@_op_bwd.register_fake
def _op_bwd_fake(r, w, k, v, a, b, u, states, dy, dsT, checkpoint, full):
    B, T, H, N = r.shape
    return (*(torch.empty_like(r, memory_format=torch.contiguous_format) for _ in range(6)),
            r.new_empty(B, H, N, N))


def _op_setup_context(ctx, inputs, output):
    r, w, k, v, a, b, _s0, checkpoint, full = inputs
    _y, _sT, u, states = output
    ctx.save_for_backward(r, w, k, v, a, b, u, states)
    # u and the states are kept for the backward, not results: no zero gradients of their size.
    ctx.mark_non_differentiable(u, states)
    ctx.set_materialize_grads(False)
    ctx.layout = (checkpoint, full)


def _op_backward(ctx, dy, dsT, _du, _dstates):
    r, w, k, v, a, b, u, states = ctx.saved_tensors
    checkpoint, full = ctx.layout
    B, T, H, N = r.shape
    dy = torch.zeros_like(r) if dy is None else dy
    dsT = r.new_zeros(B, H, N, N) if dsT is None else dsT
    dr, dw, dk, dv, da, db, ds0 = _op_bwd(r, w, k, v, a, b, u, states, dy, dsT, checkpoint, full)
    return dr, dw, dk, dv, da, db, ds0, None, None


torch.library.register_autograd("fsray::wkv7_cpu_fwd", _op_backward, setup_context=_op_setup_context)


def _wkv7_op(r, logw, k, v, a, b, s0):
    """WKV7 through the custom ops: the path ``torch.compile`` sees (same numbers as ``_CompiledWKV7``)."""
    B, T, H, N = r.shape
    full = _keeps_all_states(B, T, H, N, r.element_size())
    w = torch.exp(logw)
    if s0 is None:
        s0 = r.new_zeros(B, H, N, N)
    y, sT, _u, _states = _op_fwd(r, w, k, v, a, b, s0, CHECKPOINT, full)
    return y, sT


def wkv7_compiled(r, logw, k, v, a, b, s0=None, use_op: bool | None = None):
    """Compiled per-token WKV7 on CPU tensors. Inputs [B, T, H, N]; s0, sT [B, H, N, N] ([value, key]).

    Computes in float32 (float64 for float64 r); differentiable in every input, s0 included (once:
    the backward is a compiled kernel, not autograd ops). ``use_op``: run through the torch custom ops
    (default: only while ``torch.compile`` traces, where the autograd.Function would break the graph).
    """
    if not available():
        raise UsageError(f"WKV backend 'compiled' is unavailable: {_error}")
    B, T, H, N = r.shape
    if N > MAX_N:
        raise UsageError(f"WKV backend 'compiled' supports head size up to {MAX_N}, got {N}")
    if r.device.type != "cpu":
        raise UsageError(f"WKV backend 'compiled' runs on CPU tensors only, got {r.device}")
    dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    r, logw, k, v, a, b = (t.to(dtype).contiguous() for t in (r, logw, k, v, a, b))
    s0 = None if s0 is None else s0.to(dtype).contiguous()
    if T == 0 or B * H == 0:
        sT = r.new_zeros(B, H, N, N) if s0 is None else s0
        return r.new_zeros(B, T, H, N), sT
    if use_op is None:
        use_op = torch.compiler.is_compiling()
    if use_op:
        return _wkv7_op(r, logw, k, v, a, b, s0)
    return _CompiledWKV7.apply(r, logw, k, v, a, b, s0)
