"""Per-token WKV7 recurrence: the readable reference every fast backend is tested against.

Shapes: r, logw, k, v, a, b are [B, T, H, N]; s0 and sT are [B, H, N, N] indexed [value, key].
``logw`` is the log of the decay (w = exp(logw), 0 < w < 1), which is what the model computes
exactly (logw = -exp(w_log)) and what chunked algorithms need (cumulative sums, not products).

    S_t = S_{t-1} * w_t[None, :] + (S_{t-1} @ a_t)[:, None] * b_t[None, :] + v_t[:, None] * k_t[None, :]
    y_t = S_t @ r_t
"""

from __future__ import annotations

import torch


def wkv7_reference(r, logw, k, v, a, b, s0=None):
    """Plain autograd per-token loop, computed in float32 (float64 if inputs are float64)."""
    B, T, H, N = r.shape
    dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    r, w, k, v, a, b = (x.to(dtype) for x in (r, torch.exp(logw.to(dtype)), k, v, a, b))
    S = torch.zeros(B, H, N, N, dtype=dtype, device=r.device) if s0 is None else s0.to(dtype)
    ys = []
    for t in range(T):
        sa = torch.einsum("bhvk,bhk->bhv", S, a[:, t])
        S = (
            S * w[:, t, :, None, :]
            + sa[..., :, None] * b[:, t, :, None, :]
            + v[:, t, :, :, None] * k[:, t, :, None, :]
        )
        ys.append(torch.einsum("bhvk,bhk->bhv", S, r[:, t]))
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y, S
