"""flash-linear-attention's ``chunk_rwkv7`` behind our WKV7 conventions (optional extra ``fsray[fla]``).

Conventions mapped here:
- decay: we pass ``logw`` (log of the decay). fla's ``chunk_rwkv7`` takes the log decay as ``w`` in most
  releases; a few releases took a raw ``w`` (applying ``-exp(w)`` themselves) plus a separate ``log_w``
  keyword. The signature tells which, and ``log_w=`` is used where it exists.
- state layout: ours is [B, H, value, key]; fla's ``initial_state`` / final state are [B, H, key, value].
- token layout: ours is [B, T, H, N], fla's default (not head-first).
- no attention scale (``scale=1.0``): RWKV-7 has none.
fla's kernels are Triton GPU kernels: they need CUDA tensors.
"""

from __future__ import annotations

import inspect

from ..errors import UsageError


def _chunk_rwkv7():
    try:
        from fla.ops.rwkv7 import chunk_rwkv7
    except ImportError as exc:
        raise UsageError(
            "WKV backend 'fla' needs flash-linear-attention: pip install 'fsray[fla]' "
            f"(import failed: {exc})"
        ) from exc
    return chunk_rwkv7


def wkv7_fla(r, logw, k, v, a, b, s0=None):
    """(y [B, T, H, N] in r's dtype, sT [B, H, N, N] float32 indexed [value, key])."""
    chunk_rwkv7 = _chunk_rwkv7()
    if not r.is_cuda:
        raise UsageError("WKV backend 'fla' runs Triton GPU kernels: move the inputs to a CUDA device")
    h0 = None if s0 is None else s0.float().transpose(-1, -2).contiguous()
    params = inspect.signature(chunk_rwkv7).parameters
    decay = {"log_w": logw} if "log_w" in params else {"w": logw}
    y, hT = chunk_rwkv7(
        r=r, k=k, v=v, a=a, b=b, scale=1.0, initial_state=h0, output_final_state=True, **decay
    )
    return y, hT.float().transpose(-1, -2)
