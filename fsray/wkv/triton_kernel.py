"""WKV7 as a Triton kernel: forward and backward, fp32 state, bf16/fp16/fp32 inputs.

Same conventions as ``fsray.wkv.reference``: r, logw, k, v, a, b are [B, T, H, N]; s0 and sT are
[B, H, N, N] indexed [value, key]; logw is the log of the decay.

    S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T,    y_t = S_t r_t

Each row of S (one value index) evolves on its own, so a program owns one (batch, head, block of BV
value rows), keeps those rows in fp32 registers and scans time. Per-token vectors are loaded along
the key dimension, which is contiguous in memory (coalesced).

Backward. With G_t = dS_t + dy_t r_t^T (the gradient reaching S_t from later steps and from y_t):

    dS_{t-1} = G_t diag(w_t) + (G_t b_t) a_t^T
    dv_t = G_t k_t           dk_t = G_t^T v_t          dr_t = S_t^T dy_t
    dw_t = sum_rows G_t * S_{t-1}  (dlogw_t = dw_t * w_t)
    da_t = S_{t-1}^T (G_t b_t)     db_t = G_t^T (S_{t-1} a_t)

so it needs S_{t-1} at every step. The forward stores the state every ``chunk`` steps; the backward
walks the chunks in reverse, recomputes the chunk's states from its checkpoint into a small
per-program scratch buffer, then runs the chunk backwards. dv is complete inside a program; dr, dk,
dlogw, da and db sum over value rows, so each program writes its partial sums and torch adds the
blocks (deterministic, no atomics).

Kernels are wrapped with ``triton.jit`` at launch, not at import, and call no jit-decorated
triton helper, so ``TRITON_INTERPRET=1`` (the CPU interpreter the tests use) takes effect whenever
it is set before a call, even if triton or this module was imported earlier without it.

Device. Every launch runs under ``torch.cuda.device(r.device)``: Triton launches on the *current* CUDA
device, which need not be the inputs' one (a worker pinned to cuda:1, a model moved after start).

Memory, per layer call (fp32; ``saved_bytes`` computes it): saved for the backward, the inputs
themselves plus the state checkpoints, ``B*H*ceil(T/chunk)*N*N*4`` bytes (B8 T4096 H12 N64 at the
default chunk 16: 403 MB a layer); transient in the backward only, the per-value-block partial sums
of dr, dlogw, dk, da, db, ``5*ceil(N/BV)*B*T*H*N*4`` (2.0 GB at that shape), dv ``B*T*H*N*4`` and the
recompute scratch ``B*H*ceil(N/BV)*chunk*BV*BK*4`` (25 MB). A larger ``chunk`` divides the saved
checkpoints but multiplies the scratch; at 16 the scratch of all programs fits an H100's L2 cache.
The checkpoint output of the custom op is marked non-differentiable, so autograd never builds a
zero gradient of its size.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from triton import knobs
# The kernels use only triton builtins, never triton's own @jit library helpers (tl.sum, tl.zeros,
# tl.cdiv): those are built for the compiler or the interpreter once, when triton is imported, and
# would pin the mode. tl.sum(x, axis) is tl.reduce(x, axis, _sum_combine) for float32: the same
# compiled code, and 10x faster under the interpreter, which recognises _sum_combine.
from triton.language.standard import _sum_combine

from fsray.errors import UsageError

_INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _wkv7_fwd_kernel(
    r_ptr, logw_ptr, k_ptr, v_ptr, a_ptr, b_ptr, s0_ptr,
    y_ptr, sT_ptr, ckpt_ptr,
    T, H,
    N: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CHUNK: tl.constexpr,
    HAS_S0: tl.constexpr, SAVE_CKPT: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H

    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mask_k = offs_k < N
    mask_v = offs_v < N
    # Rows of this program's block of the [N, N] state of head (b, h).
    state_offs = offs_v[:, None] * N + offs_k[None, :]
    state_mask = mask_v[:, None] & mask_k[None, :]

    if HAS_S0:
        S = tl.load(s0_ptr + i_bh * N * N + state_offs, mask=state_mask, other=0.0).to(tl.float32)
    else:
        S = tl.full([BV, BK], 0.0, tl.float32)

    n_chunks = (T + CHUNK - 1) // CHUNK
    tok_stride = H * N  # elements between consecutive tokens of one (batch, head)
    head = i_b * T * tok_stride + i_h * N  # token 0 of this (batch, head); T >= 1 here
    # Each step's vectors are loaded one step ahead so their latency overlaps the previous step's
    # arithmetic (the last step reloads itself rather than read past the end). Padding lanes load
    # k=v=a=b=r=0 and logw=0 (w=1): padded state entries stay exactly 0.
    logw_n = tl.load(logw_ptr + head + offs_k, mask=mask_k, other=0.0)
    k_n = tl.load(k_ptr + head + offs_k, mask=mask_k, other=0.0)
    a_n = tl.load(a_ptr + head + offs_k, mask=mask_k, other=0.0)
    b_n = tl.load(b_ptr + head + offs_k, mask=mask_k, other=0.0)
    r_n = tl.load(r_ptr + head + offs_k, mask=mask_k, other=0.0)
    v_n = tl.load(v_ptr + head + offs_v, mask=mask_v, other=0.0)
    for t in range(0, T):
        if SAVE_CKPT:
            if t % CHUNK == 0:
                c = t // CHUNK
                tl.store(ckpt_ptr + (i_bh * n_chunks + c) * N * N + state_offs, S, mask=state_mask)
        w_t = tl.exp(logw_n.to(tl.float32))
        k_t = k_n.to(tl.float32)
        a_t = a_n.to(tl.float32)
        b_t = b_n.to(tl.float32)
        r_t = r_n.to(tl.float32)
        v_t = v_n.to(tl.float32)

        nxt = head + tl.minimum(t + 1, T - 1) * tok_stride
        logw_n = tl.load(logw_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        k_n = tl.load(k_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        a_n = tl.load(a_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        b_n = tl.load(b_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        r_n = tl.load(r_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        v_n = tl.load(v_ptr + nxt + offs_v, mask=mask_v, other=0.0)

        sa = tl.reduce(S * a_t[None, :], 1, _sum_combine)
        S = S * w_t[None, :] + sa[:, None] * b_t[None, :] + v_t[:, None] * k_t[None, :]
        y_t = tl.reduce(S * r_t[None, :], 1, _sum_combine)
        y_t = y_t.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + head + t * tok_stride + offs_v, y_t, mask=mask_v)

    tl.store(sT_ptr + i_bh * N * N + state_offs, S, mask=state_mask)


def _wkv7_bwd_kernel(
    r_ptr, logw_ptr, k_ptr, v_ptr, a_ptr, b_ptr,
    dy_ptr, dsT_ptr, ckpt_ptr, scratch_ptr,
    ds0_ptr, dv_ptr, dr_ptr, dlogw_ptr, dk_ptr, da_ptr, db_ptr,
    T, H, BTHN,
    N: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, CHUNK: tl.constexpr,
    HAS_DST: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    n_vblocks = tl.num_programs(0)

    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mask_k = offs_k < N
    mask_v = offs_v < N
    state_offs = offs_v[:, None] * N + offs_k[None, :]
    state_mask = mask_v[:, None] & mask_k[None, :]
    # This program's scratch: CHUNK states of [BV, BK], unmasked (it is padded already).
    scratch = scratch_ptr + (i_bh * n_vblocks + i_v) * CHUNK * BV * BK
    scratch_offs = tl.arange(0, BV)[:, None] * BK + offs_k[None, :]
    # Partial sums over value rows go to block i_v of [n_vblocks, B, T, H, N] buffers.
    part = i_v.to(tl.int64) * BTHN

    if HAS_DST:
        dS = tl.load(dsT_ptr + i_bh * N * N + state_offs, mask=state_mask, other=0.0).to(tl.float32)
    else:
        dS = tl.full([BV, BK], 0.0, tl.float32)

    n_chunks = (T + CHUNK - 1) // CHUNK
    tok_stride = H * N
    head = i_b * T * tok_stride + i_h * N
    for i_c in range(0, n_chunks):
        c = n_chunks - 1 - i_c
        t0 = c * CHUNK
        length = tl.minimum(T - t0, CHUNK)

        # Recompute S_{t-1} for every step of the chunk from its checkpoint (loads one step ahead,
        # as in the forward).
        ckpt = ckpt_ptr + (i_bh * n_chunks + c) * N * N
        S = tl.load(ckpt + state_offs, mask=state_mask, other=0.0)
        nxt = head + t0 * tok_stride
        logw_n = tl.load(logw_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        k_n = tl.load(k_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        a_n = tl.load(a_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        b_n = tl.load(b_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        v_n = tl.load(v_ptr + nxt + offs_v, mask=mask_v, other=0.0)
        for j in range(0, length):
            tl.store(scratch + j * BV * BK + scratch_offs, S)
            w_t = tl.exp(logw_n.to(tl.float32))
            k_t = k_n.to(tl.float32)
            a_t = a_n.to(tl.float32)
            b_t = b_n.to(tl.float32)
            v_t = v_n.to(tl.float32)
            nxt = head + (t0 + tl.minimum(j + 1, length - 1)) * tok_stride
            logw_n = tl.load(logw_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            k_n = tl.load(k_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            a_n = tl.load(a_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            b_n = tl.load(b_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            v_n = tl.load(v_ptr + nxt + offs_v, mask=mask_v, other=0.0)

            sa = tl.reduce(S * a_t[None, :], 1, _sum_combine)
            S = S * w_t[None, :] + sa[:, None] * b_t[None, :] + v_t[:, None] * k_t[None, :]
        # Scratch is written and read by different threads of the program.
        tl.debug_barrier()

        # Backwards through the chunk, loading step t-1's vectors while step t computes.
        nxt = head + (t0 + length - 1) * tok_stride
        logw_n = tl.load(logw_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        k_n = tl.load(k_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        a_n = tl.load(a_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        b_n = tl.load(b_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        r_n = tl.load(r_ptr + nxt + offs_k, mask=mask_k, other=0.0)
        v_n = tl.load(v_ptr + nxt + offs_v, mask=mask_v, other=0.0)
        dy_n = tl.load(dy_ptr + nxt + offs_v, mask=mask_v, other=0.0)
        for i_j in range(0, length):
            j = length - 1 - i_j
            tok = head + (t0 + j) * tok_stride
            S_prev = tl.load(scratch + j * BV * BK + scratch_offs)
            w_t = tl.exp(logw_n.to(tl.float32))
            k_t = k_n.to(tl.float32)
            a_t = a_n.to(tl.float32)
            b_t = b_n.to(tl.float32)
            r_t = r_n.to(tl.float32)
            v_t = v_n.to(tl.float32)
            dy_t = dy_n.to(tl.float32)
            nxt = head + (t0 + tl.maximum(j - 1, 0)) * tok_stride
            logw_n = tl.load(logw_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            k_n = tl.load(k_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            a_n = tl.load(a_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            b_n = tl.load(b_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            r_n = tl.load(r_ptr + nxt + offs_k, mask=mask_k, other=0.0)
            v_n = tl.load(v_ptr + nxt + offs_v, mask=mask_v, other=0.0)
            dy_n = tl.load(dy_ptr + nxt + offs_v, mask=mask_v, other=0.0)

            sa = tl.reduce(S_prev * a_t[None, :], 1, _sum_combine)
            S_t = S_prev * w_t[None, :] + sa[:, None] * b_t[None, :] + v_t[:, None] * k_t[None, :]
            G = dS + dy_t[:, None] * r_t[None, :]
            gb = tl.reduce(G * b_t[None, :], 1, _sum_combine)

            dv_t = tl.reduce(G * k_t[None, :], 1, _sum_combine)
            dr_t = tl.reduce(dy_t[:, None] * S_t, 0, _sum_combine)
            dk_t = tl.reduce(v_t[:, None] * G, 0, _sum_combine)
            dlogw_t = tl.reduce(G * S_prev, 0, _sum_combine) * w_t
            da_t = tl.reduce(gb[:, None] * S_prev, 0, _sum_combine)
            db_t = tl.reduce(sa[:, None] * G, 0, _sum_combine)
            tl.store(dv_ptr + tok + offs_v, dv_t, mask=mask_v)
            tl.store(dr_ptr + part + tok + offs_k, dr_t, mask=mask_k)
            tl.store(dk_ptr + part + tok + offs_k, dk_t, mask=mask_k)
            tl.store(dlogw_ptr + part + tok + offs_k, dlogw_t, mask=mask_k)
            tl.store(da_ptr + part + tok + offs_k, da_t, mask=mask_k)
            tl.store(db_ptr + part + tok + offs_k, db_t, mask=mask_k)

            dS = G * w_t[None, :] + gb[:, None] * a_t[None, :]
        # The next chunk overwrites the scratch this one has just read.
        tl.debug_barrier()

    tl.store(ds0_ptr + i_bh * N * N + state_offs, dS, mask=state_mask)


_jitted: dict[tuple[str, bool], object] = {}


def _kernel(fn):
    """``triton.jit(fn)``, built for the interpreter or the compiler as the flag says right now."""
    key = (fn.__name__, bool(knobs.runtime.interpret))
    if key not in _jitted:
        _jitted[key] = triton.jit(fn)
    return _jitted[key]


def _launch_config(N: int, block_v: int | None) -> tuple[int, int, int]:
    """(BK, BV, num_warps): BK covers the key dimension; BV value rows per program."""
    BK = triton.next_power_of_2(N)
    if block_v is None:
        # B*H*N/16 programs: a few hundred at training sizes, one wave on a GPU.
        BV = min(BK, 16)
    else:
        is_int = isinstance(block_v, int) and not isinstance(block_v, bool)
        if not is_int or block_v < 1 or block_v & (block_v - 1):
            raise UsageError(
                f"wkv7_triton: block_v must be a positive power of two, got {block_v!r}"
            )
        BV = min(block_v, BK)
    # The scan is latency bound: every step waits on two row reductions over keys. One warp per
    # 16x64 tile keeps them in warp shuffles; with more warps Triton splits the key dimension across
    # warps and each reduction adds a shared-memory round trip and a barrier. Compiled for sm_90
    # with bf16 inputs: 1 warp uses 128/168 registers fwd/bwd, no spills, 1 barrier a forward step
    # (storing y); 4 warps put 6/32 barriers in the loop bodies. Not yet timed on a GPU.
    num_warps = max(1, min(8, BV * BK // 1024))
    return BK, BV, num_warps


@torch.compiler.assume_constant_result
def _interpreting() -> bool:
    """TRITON_INTERPRET as triton reads it (a constant to torch.compile, which cannot trace triton's knob)."""
    return bool(knobs.runtime.interpret)


def _on_device(x: torch.Tensor):
    """Launch under the inputs' CUDA device (Triton uses the current one); nothing to do on the CPU."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def saved_bytes(B: int, T: int, H: int, N: int, chunk: int = 16, block_v: int | None = None) -> dict[str, int]:
    """Bytes one layer call needs beyond its inputs: ``saved`` (state checkpoints kept from the forward
    to the backward) and ``backward_transient`` (partial sums, dv and scratch, only during the backward)."""
    BK, BV, _ = _launch_config(N, block_v)
    n_vblocks = -(-N // BV)
    n_chunks = -(-T // chunk)
    saved = B * H * n_chunks * N * N * 4
    transient = (5 * n_vblocks + 1) * B * T * H * N * 4 + B * H * n_vblocks * chunk * BV * BK * 4
    return {"saved": saved, "backward_transient": transient}


def _check_inputs(r, logw, k, v, a, b, s0, chunk, block_v):
    names = ("r", "logw", "k", "v", "a", "b")
    tensors = (r, logw, k, v, a, b)
    for name, x in zip(names, tensors):
        if not isinstance(x, torch.Tensor):
            raise UsageError(f"wkv7_triton: {name} must be a tensor, got {type(x).__name__}")
        if x.dtype not in _INPUT_DTYPES:
            raise UsageError(
                f"wkv7_triton: {name} has dtype {x.dtype}; the Triton kernel takes float32, "
                "bfloat16 or float16 (use the torch backend for float64)"
            )
    if r.dim() != 4:
        raise UsageError(f"wkv7_triton: r must be [B, T, H, N], got shape {tuple(r.shape)}")
    for name, x in zip(names[1:], tensors[1:]):
        if x.shape != r.shape:
            raise UsageError(
                f"wkv7_triton: {name} has shape {tuple(x.shape)}, r has {tuple(r.shape)}"
            )
        if x.device != r.device:
            raise UsageError(f"wkv7_triton: {name} is on {x.device}, r is on {r.device}")
    B, _, H, N = r.shape
    if s0 is not None:
        if not isinstance(s0, torch.Tensor) or s0.shape != (B, H, N, N):
            shape = tuple(s0.shape) if isinstance(s0, torch.Tensor) else type(s0).__name__
            raise UsageError(f"wkv7_triton: s0 must be [B, H, N, N] = {(B, H, N, N)}, got {shape}")
        if s0.device != r.device:
            raise UsageError(f"wkv7_triton: s0 is on {s0.device}, r is on {r.device}")
        if not s0.is_floating_point():
            raise UsageError(f"wkv7_triton: s0 must be floating point, got {s0.dtype}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UsageError(f"wkv7_triton: chunk must be a positive integer, got {chunk!r}")
    _launch_config(N, block_v)
    if r.device.type != "cuda" and not _interpreting():
        raise UsageError(
            f"wkv7_triton: tensors are on {r.device}; the Triton kernel needs a CUDA device "
            "(or TRITON_INTERPRET=1 to run it in the CPU interpreter)"
        )


def _forward(r, logw, k, v, a, b, s0, chunk, block_v, save_ckpt: bool):
    """(y, sT float32, ckpt): the forward kernel's launch; ckpt holds the states every ``chunk`` steps."""
    B, T, H, N = r.shape
    r, logw, k, v, a, b = (x.contiguous() for x in (r, logw, k, v, a, b))
    s0_f32 = s0.detach().to(torch.float32).contiguous() if s0 is not None else None
    BK, BV, num_warps = _launch_config(N, block_v)
    n_vblocks = triton.cdiv(N, BV)
    n_chunks = triton.cdiv(T, chunk)

    y = torch.empty_like(r)
    sT = torch.empty(B, H, N, N, dtype=torch.float32, device=r.device)
    # One slot even when unused: the interpreter cannot take a pointer to an empty tensor.
    ckpt = torch.empty(max(B * H * n_chunks * N * N, 1) if save_ckpt else 1,
                       dtype=torch.float32, device=r.device)
    if T == 0:  # nothing to scan (the kernel prefetches token 0, which must exist)
        if s0_f32 is not None:
            sT.copy_(s0_f32)
        else:
            sT.zero_()
    else:
        with _on_device(r):
            _kernel(_wkv7_fwd_kernel)[(n_vblocks, B * H)](
                r, logw, k, v, a, b, s0_f32 if s0_f32 is not None else sT,
                y, sT, ckpt,
                T, H,
                N=N, BK=BK, BV=BV, CHUNK=chunk,
                HAS_S0=s0_f32 is not None, SAVE_CKPT=save_ckpt,
                num_warps=num_warps,
            )
    return y, sT, ckpt


def _backward(r, logw, k, v, a, b, ckpt, dy, dsT, chunk, block_v):
    """(dr, dlogw, dk, dv, da, db in their inputs' dtypes, ds0 float32) from the backward kernel."""
    B, T, H, N = r.shape
    r, logw, k, v, a, b = (x.contiguous() for x in (r, logw, k, v, a, b))
    BK, BV, num_warps = _launch_config(N, block_v)
    n_vblocks = triton.cdiv(N, BV)
    dev = r.device

    dy = torch.zeros_like(r) if dy is None else dy.contiguous()
    dsT_f32 = dsT.to(torch.float32).contiguous() if dsT is not None else None
    ds0 = torch.empty(B, H, N, N, dtype=torch.float32, device=dev)
    dv = torch.empty(B, T, H, N, dtype=torch.float32, device=dev)
    # Per-value-block partial sums of dr, dlogw, dk, da, db.
    parts = torch.empty(5, n_vblocks, B, T, H, N, dtype=torch.float32, device=dev)
    scratch = torch.empty(B * H * n_vblocks * chunk * BV * BK, dtype=torch.float32, device=dev)
    if T > 0:
        with _on_device(r):
            _kernel(_wkv7_bwd_kernel)[(n_vblocks, B * H)](
                r, logw, k, v, a, b,
                dy, dsT_f32 if dsT_f32 is not None else ds0, ckpt, scratch,
                ds0, dv, parts[0], parts[1], parts[2], parts[3], parts[4],
                T, H, B * T * H * N,
                N=N, BK=BK, BV=BV, CHUNK=chunk,
                HAS_DST=dsT_f32 is not None,
                num_warps=num_warps,
            )
        dr, dlogw, dk, da, db = parts.sum(dim=1).unbind(0)
    else:
        dv.zero_()
        dr = dlogw = dk = da = db = torch.zeros_like(dv)
        if dsT_f32 is not None:
            ds0.copy_(dsT_f32)
        else:
            ds0.zero_()
    return (dr.to(r.dtype), dlogw.to(logw.dtype), dk.to(k.dtype), dv.to(v.dtype),
            da.to(a.dtype), db.to(b.dtype), ds0)


class _WKV7Triton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, logw, k, v, a, b, s0, chunk, block_v):
        save_ckpt = any(ctx.needs_input_grad[:7])
        y, sT, ckpt = _forward(r, logw, k, v, a, b, s0, chunk, block_v, save_ckpt)
        ctx.save_for_backward(r, logw, k, v, a, b, ckpt)
        ctx.shape_config = (chunk, block_v)
        ctx.s0_dtype = s0.dtype if s0 is not None else None
        ctx.set_materialize_grads(False)
        return y, sT

    @staticmethod
    def backward(ctx, dy, dsT):
        r, logw, k, v, a, b, ckpt = ctx.saved_tensors
        chunk, block_v = ctx.shape_config
        *grads, ds0 = _backward(r, logw, k, v, a, b, ckpt, dy, dsT, chunk, block_v)
        ds0 = ds0.to(ctx.s0_dtype) if ctx.s0_dtype is not None else None
        return (*grads, ds0, None, None)


# ----------------------------------------------------------------------------------- custom ops
# The same kernels as torch custom ops, so torch.compile keeps a model that calls them in one graph
# (the autograd.Function above is opaque to it): a fake (shape-only) version of each for tracing, and
# the forward's autograd formula calling the backward op. Used while compiling, or with use_op=True.

@torch.library.custom_op("fsray::wkv7_triton_fwd", mutates_args=())
def _op_fwd(r: torch.Tensor, logw: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
            b: torch.Tensor, s0: torch.Tensor | None, chunk: int, block_v: int | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward(r, logw, k, v, a, b, s0, chunk, block_v, True)


@_op_fwd.register_fake
def _op_fwd_fake(r, logw, k, v, a, b, s0, chunk, block_v):
    B, T, H, N = r.shape
    n_ckpt = torch.sym_max(B * H * ((T + chunk - 1) // chunk) * N * N, 1)
    return (torch.empty_like(r, memory_format=torch.contiguous_format),
            r.new_empty(B, H, N, N, dtype=torch.float32), r.new_empty(n_ckpt, dtype=torch.float32))


@torch.library.custom_op("fsray::wkv7_triton_bwd", mutates_args=())
def _op_bwd(r: torch.Tensor, logw: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
            b: torch.Tensor, ckpt: torch.Tensor, dy: torch.Tensor | None, dsT: torch.Tensor | None, chunk: int,
            block_v: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _backward(r, logw, k, v, a, b, ckpt, dy, dsT, chunk, block_v)
    # a custom op's outputs may not alias each other (dr..db are views of one sum when not cast)
    seen: set[int] = set()
    out = []
    for g in grads:
        base = id(g._base if g._base is not None else g)
        out.append(g.clone() if base in seen or g._base is not None else g)
        seen.add(base)
    return tuple(out)


@_op_bwd.register_fake
def _op_bwd_fake(r, logw, k, v, a, b, ckpt, dy, dsT, chunk, block_v):
    B, T, H, N = r.shape
    return (*(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (r, logw, k, v, a, b)),
            r.new_empty(B, H, N, N, dtype=torch.float32))


def _op_setup_context(ctx, inputs, output):
    r, logw, k, v, a, b, s0, chunk, block_v = inputs
    ctx.save_for_backward(r, logw, k, v, a, b, output[2])
    ctx.mark_non_differentiable(output[2])  # the checkpoints: no zero gradient of their size
    ctx.set_materialize_grads(False)
    ctx.shape_config = (chunk, block_v)
    ctx.s0_dtype = s0.dtype if s0 is not None else None


def _op_backward(ctx, dy, dsT, _dckpt):
    r, logw, k, v, a, b, ckpt = ctx.saved_tensors
    chunk, block_v = ctx.shape_config
    *grads, ds0 = _op_bwd(r, logw, k, v, a, b, ckpt, dy, dsT, chunk, block_v)
    ds0 = ds0.to(ctx.s0_dtype) if ctx.s0_dtype is not None else None
    return (*grads, ds0, None, None)


torch.library.register_autograd("fsray::wkv7_triton_fwd", _op_backward, setup_context=_op_setup_context)


def wkv7_triton(r, logw, k, v, a, b, s0=None, chunk: int = 16, block_v: int | None = None,
                use_op: bool | None = None):
    """WKV7 through the Triton kernels. Returns (y in r's dtype, sT float32).

    ``chunk``: steps between state checkpoints kept for the backward (memory B*H*ceil(T/chunk)*N*N
    floats; the backward recomputes inside a chunk). ``block_v``: value rows per program (a power
    of two; default 16), a tuning knob that does not change results beyond rounding.
    """
    _check_inputs(r, logw, k, v, a, b, s0, chunk, block_v)
    if use_op is None:
        use_op = torch.compiler.is_compiling()
    if use_op:
        y, sT, _ckpt = _op_fwd(r, logw, k, v, a, b, s0, chunk, block_v)
        return y, sT
    return _WKV7Triton.apply(r, logw, k, v, a, b, s0, chunk, block_v)
