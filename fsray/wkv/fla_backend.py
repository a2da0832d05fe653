"""flash-linear-attention's ``chunk_rwkv7`` behind our WKV7 conventions (optional extra ``fsray[fla]``).

Conventions mapped here:
- decay: we pass ``logw`` (log of the decay). fla's ``chunk_rwkv7`` takes the log decay as ``w`` in most
  releases; a few releases took a raw ``w`` (applying ``-exp(w)`` themselves) plus a separate ``log_w``
  keyword. The signature tells which, and ``log_w=`` is used where it exists.
- state layout: ours is [B, H, value, key]; fla's ``initial_state`` / final state are [B, H, key, value].
- token layout: ours is [B, T, H, N], fla's default (not head-first).
- no attention scale (``scale=1.0``): RWKV-7 has none.
- gate range: fla's own RWKV7 layer calls ``chunk_rwkv7(..., safe_gate=True, lower_bound=-e^{-1/2},
  chunk_size=64)``, which licenses its tensor-core path; that bound is exactly RWKV-7's decay range
  (log w = -e^{-1/2} sigmoid(.)). Every argument is passed only where the installed release has it, and
  only when the call's log decays are within the bound (one device-side min per call); other inputs
  get fla's general path (``safe_gate=False``), which is exact for any decay.

fla's kernels are Triton GPU kernels: they need CUDA tensors. Failures become one line: ImportError and
CPU inputs are a ``UsageError`` (setup), anything fla raises while running is a ``RunFailed`` naming
the backend and the first line of fla's message (a Triton compile error is pages long).

Eagerly the call goes straight to fla (its own autograd). Under ``torch.compile`` it goes through the
custom ops ``torch.ops.fsray.wkv7_fla_fwd``/``_bwd`` (fla's Python wrappers would break the graph); the
backward op reruns fla's forward with autograd on and takes its vector-Jacobian product, which costs
one extra forward but depends on nothing inside fla but ``chunk_rwkv7`` itself.
"""

from __future__ import annotations

import functools
import inspect
import math

import torch

from ..errors import RunFailed, UsageError, first_line

RWKV7_LOGW_BOUND = -math.exp(-0.5)  # log w = -e^{-1/2} sigmoid(.) >= this, in every RWKV-7 layer
FLA_CHUNK = 64  # fla's RWKV7 layer's chunk size with the bound above


def _chunk_rwkv7():
    try:
        from fla.ops.rwkv7 import chunk_rwkv7
    except Exception as exc:  # ImportError, or fla failing at import (no driver, a broken triton)
        raise UsageError(
            "WKV backend 'fla' needs flash-linear-attention: pip install 'fsray[fla]' "
            f"(import failed: {first_line(exc)})"
        ) from None
    return chunk_rwkv7


@functools.cache
def _params(fn) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def _check_device(r: torch.Tensor) -> None:
    if not r.is_cuda:
        raise UsageError("WKV backend 'fla' runs Triton GPU kernels: move the inputs to a CUDA device")


def fla_arguments(params: frozenset[str], logw: torch.Tensor) -> dict:
    """The keyword arguments beyond the tensors: the decay's name, and fla's RWKV7-layer gate settings
    where this release has them and the inputs respect the bound."""
    kw: dict = {"log_w": logw} if "log_w" in params else {"w": logw}
    in_range = logw.numel() == 0 or bool(logw.detach().amin() >= RWKV7_LOGW_BOUND)
    if in_range and "safe_gate" in params:
        kw["safe_gate"] = True
        if "lower_bound" in params:
            kw["lower_bound"] = RWKV7_LOGW_BOUND
        if "chunk_size" in params:
            kw["chunk_size"] = FLA_CHUNK
    return kw


def _call(r, logw, k, v, a, b, s0):
    """(y, sT [value, key] float32) from fla, every failure one line."""
    chunk_rwkv7 = _chunk_rwkv7()
    _check_device(r)
    h0 = None if s0 is None else s0.float().transpose(-1, -2).contiguous()
    try:
        kw = fla_arguments(_params(chunk_rwkv7), logw)
        y, hT = chunk_rwkv7(r=r, k=k, v=v, a=a, b=b, scale=1.0, initial_state=h0,
                            output_final_state=True, **kw)
    except torch.cuda.OutOfMemoryError:
        raise  # the trainer reports out-of-memory as such
    except Exception as exc:
        raise RunFailed(f"WKV backend 'fla' failed: {first_line(exc)}") from None
    return y, hT.float().transpose(-1, -2)


# ----------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("fsray::wkv7_fla_fwd", mutates_args=())
def _op_fwd(r: torch.Tensor, logw: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
            b: torch.Tensor, s0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    y, sT = _call(r, logw, k, v, a, b, s0)
    return y.contiguous(), sT.contiguous()


@_op_fwd.register_fake
def _op_fwd_fake(r, logw, k, v, a, b, s0):
    B, _, H, N = r.shape
    return torch.empty_like(r, memory_format=torch.contiguous_format), r.new_empty(B, H, N, N, dtype=torch.float32)


def _autograd_inside_an_op():
    """A custom op's body runs with the autograd dispatch keys excluded (so enable_grad alone records
    nothing); the backward op needs them back to differentiate fla's forward. Autocast stays off."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    autocast = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU) | torch._C.DispatchKeySet(
        torch._C.DispatchKey.AutocastCUDA)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude & autocast)


@torch.library.custom_op("fsray::wkv7_fla_bwd", mutates_args=())
def _op_bwd(r: torch.Tensor, logw: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
            b: torch.Tensor, s0: torch.Tensor | None, dy: torch.Tensor | None, dsT: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                       torch.Tensor]:
    B, _, H, N = r.shape
    s0 = r.new_zeros(B, H, N, N, dtype=torch.float32) if s0 is None else s0
    leaves = [x.detach().requires_grad_() for x in (r, logw, k, v, a, b, s0)]
    with _autograd_inside_an_op(), torch.enable_grad():
        y, sT = _call(*leaves)
        outs, grads_in = [], []
        for out, grad in ((y, dy), (sT, dsT)):
            if grad is not None:
                outs.append(out)
                grads_in.append(grad.to(out.dtype))
        if not outs:
            return tuple(torch.zeros_like(x) for x in leaves)
        grads = torch.autograd.grad(outs, leaves, grads_in, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g.to(x.dtype).contiguous() for g, x in zip(grads, leaves))


@_op_bwd.register_fake
def _op_bwd_fake(r, logw, k, v, a, b, s0, dy, dsT):
    B, _, H, N = r.shape
    grads = [torch.empty_like(x, memory_format=torch.contiguous_format) for x in (r, logw, k, v, a, b)]
    ds0 = r.new_empty(B, H, N, N, dtype=torch.float32) if s0 is None else torch.empty_like(s0)
    return (*grads, ds0)


def _op_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)
    ctx.has_s0 = inputs[6] is not None
    ctx.set_materialize_grads(False)


def _op_backward(ctx, dy, dsT):
    *grads, ds0 = _op_bwd(*ctx.saved_tensors, dy, dsT)
    return (*grads, ds0 if ctx.has_s0 else None)


torch.library.register_autograd("fsray::wkv7_fla_fwd", _op_backward, setup_context=_op_setup_context)


def wkv7_fla(r, logw, k, v, a, b, s0=None, use_op: bool | None = None):
    """(y [B, T, H, N] in r's dtype, sT [B, H, N, N] float32 indexed [value, key]).

    ``use_op``: through the custom ops (default: only while ``torch.compile`` traces)."""
    if use_op is None:
        use_op = torch.compiler.is_compiling()
    if use_op:
        return _op_fwd(r, logw, k, v, a, b, s0)
    return _call(r, logw, k, v, a, b, s0)
