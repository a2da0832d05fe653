"""Exact chunked WKV7: the diagonal-plus-low-rank recurrence as a few batched matrix products per chunk.

Per head, with the state S indexed [value, key] and one row vector per token,

    S_t = S_{t-1} (diag(w_t) + a_t b_t^T) + v_t k_t^T,        y_t = S_t r_t.

Inside a chunk of C tokens starting from S0, let u_t = S_{t-1} a_t (what the low-rank part reads) and
G_t = sum_{j<=t} log w_j (chunk-relative cumulative log-decay; Gx_t = G_t - log w_t). Unrolling,

    S_t = S0 diag(e^{G_t}) + sum_{i<=t} (u_i b_i^T + v_i k_i^T) diag(e^{G_t - G_i})
    u_t = S0 (a_t e^{Gx_t}) + sum_{i<t} [u_i (b_i . a_t e^{Gx_t - G_i}) + v_i (k_i . a_t e^{Gx_t - G_i})]

With a row per token this is the unit lower-triangular system U = A~ S0^T + A_ab U + A_ak V (the WY / UT
representation), so U = P S0^T + Q with [P | Q] = (I - A_ab)^{-1} [A~ | A_ak V]. Nothing of that touches
S0, so it is computed for every chunk at once, and each chunk then acts on the state affinely:

    S_next = S0 M + D,       M = diag(e^{G_C}) + P^T B^,    D = Q^T B^ + V^T K^
    Y = (R~ + M_rb P) S0^T + (M_rb Q + M_rk V)

with A~_t = a_t e^{Gx_t}, R~_t = r_t e^{G_t}, B^_i = b_i e^{G_C - G_i} (K^ likewise) and the causal score
matrices A_ab, A_ak (strict) and M_rb, M_rk (diagonal included). The only sequential work left is one
N x N matrix product per chunk, forward and backward. The backward is written by hand
(``_ChunkedWKV7``): it reuses the forward's products (the inverse of I - A_ab, the chunk transitions)
and runs about forty batched tensor operations; at the tiny models' shapes the operation count, not
the arithmetic, is what costs.

Numerical range: an intra-chunk score factors e^{Gx_t - G_i} = e^{Gx_t} * e^{-G_i}; the first factor is
<= 1, the second grows with the chunk's total decay, so the chunk length is capped per call to keep
C * max|log w| <= MAX_LOG_RANGE (RWKV-7's |log w| <= e^{-1/2} ~ 0.61 allows 64 tokens; strong decays get
shorter chunks, down to one token). log w is floored at LOGW_FLOOR: a decay below e^{-60} ~ 1e-26 is zero
to float32 resolution, and the floor keeps e^{-G} finite for one-token chunks.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..errors import UsageError

DEFAULT_CHUNK = 32
# e^{40} ~ 2e17 leaves ~1e21 of float32 headroom for the products and gradients around the factors.
MAX_LOG_RANGE = 40.0
LOGW_FLOOR = -60.0


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (so gradcheck works); everything else computes in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def pick_chunk(T: int, logw: torch.Tensor, chunk: int | None = None) -> int:
    """Chunk length for a call: at most `chunk` (default by head size, `default_chunk`), short enough
    that C * max|log w| <= MAX_LOG_RANGE, and balanced so the last chunk is not mostly padding."""
    N = logw.shape[-1]
    cap = default_chunk(N) if chunk is None else int(chunk)
    if cap < 1:
        raise UsageError(f"WKV chunk length must be >= 1, got {chunk}")
    if logw.numel():
        lo, hi = torch.aminmax(logw.detach())
        strongest = max(float(-lo), float(hi))  # log w > 0 (growth) is bounded the same way
        if strongest != strongest:
            raise UsageError("WKV input logw contains NaN")
        strongest = min(strongest, -LOGW_FLOOR)
        if strongest > 0:
            cap = max(1, min(cap, int(MAX_LOG_RANGE / strongest)))
    n_chunks = max(1, -(-T // cap))
    return -(-T // n_chunks) if T else cap


def default_chunk(N: int) -> int:
    """Chunk cap by head size, measured with bench/wkv_cpu.py --sweep on a 2-core CPU: per token the
    intra-chunk products cost ~C N and the state pass ~N^2 + N^3 / C, while each chunk adds a few
    fixed-cost operations. N=16 is fastest near 16, N=32 anywhere in 16..32, N=64 near 32."""
    return 16 if N <= 16 else DEFAULT_CHUNK


@functools.lru_cache(maxsize=64)
def _masks(C: int, dtype, device):
    """Score mask for [[A_ab, A_ak], [M_rb, M_rk]]: strict causal for the a rows, inclusive for r rows."""
    ones = torch.ones(C, C, dtype=dtype, device=device)
    strict, incl = ones.tril(-1), ones.tril(0)
    mask = torch.cat([torch.cat([strict, strict], 1), torch.cat([incl, incl], 1)], 0)
    return mask, torch.eye(C, dtype=dtype, device=device)


def _rev_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.sum(dim, keepdim=True) - x.cumsum(dim) + x


class _ChunkedWKV7(torch.autograd.Function):
    """Inputs already in the compute dtype, logw already floored; s0 may be None."""

    @staticmethod
    def forward(ctx, r, logw, k, v, a, b, s0, C: int):
        B, T, H, N = r.shape
        n_chunks = -(-T // C)
        pad = n_chunks * C - T
        # One copy lays out every input as [B, H, chunk, which, C, N]; zero padding leaves the state alone.
        x = torch.stack([a, r, b, k, v, logw], dim=-2)
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, pad))
        x = x.view(B, n_chunks, C, H, 6, N).permute(0, 3, 1, 4, 2, 5).contiguous()
        ar, bk, v_, lw = x[:, :, :, 0:2], x[:, :, :, 2:4], x[:, :, :, 4], x[:, :, :, 5]

        G = lw.cumsum(-2)
        e_ar = torch.exp(torch.stack((G - lw, G), -3))  # [e^{Gx}; e^{G}], both <= 1
        e_grow = e_ar[:, :, :, 1].reciprocal()  # e^{-G} <= e^{MAX_LOG_RANGE}
        g_end = e_ar[:, :, :, 1, -1]  # e^{G_C}
        e_out = e_grow * g_end.unsqueeze(-2)  # e^{G_C - G} <= 1
        ar_d = (ar * e_ar).flatten(3, 4)  # [A~; R~]  [.., 2C, N]
        bk_g = (bk * e_grow.unsqueeze(3)).flatten(3, 4)  # [b e^{-G}; k e^{-G}]
        bk_h = (bk * e_out.unsqueeze(3)).flatten(3, 4)  # [B^; K^]

        mask, eye = _masks(C, r.dtype, r.device)
        scores = (ar_d @ bk_g.mT).mul_(mask)  # [[A_ab, A_ak], [M_rb, M_rk]]
        A_ak, M_r = scores[..., :C, C:], scores[..., C:, :]
        # The explicit inverse serves the forward and the backward with plain products (one LAPACK
        # call per matrix instead of two).
        T_inv = torch.linalg.solve_triangular(eye - scores[..., :C, :C], eye, upper=False, unitriangular=True)
        Z = T_inv @ torch.cat([ar_d[..., :C, :], A_ak @ v_], -1)  # [P | Q]

        ZB = Z.mT @ bk_h[..., :C, :]  # [P^T B^; Q^T B^]  [.., 2N, N]
        M = ZB[..., :N, :]
        M.diagonal(dim1=-2, dim2=-1).add_(g_end)
        D = ZB[..., N:, :].add_(v_.mT @ bk_h[..., C:, :])
        MZ = M_r[..., :C] @ Z  # [M_rb P | M_rb Q]
        R_s = MZ[..., :N].add_(ar_d[..., C:, :])
        Y_i = MZ[..., N:].add_(M_r[..., C:] @ v_)

        S = r.new_zeros(B, H, N, N) if s0 is None else s0
        starts = []
        for M_c, D_c in zip(M.unbind(2), D.unbind(2)):
            starts.append(S)
            S = torch.baddbmm(D_c.reshape(B * H, N, N), S.reshape(B * H, N, N), M_c.reshape(B * H, N, N))
            S = S.view(B, H, N, N)
        S_starts = torch.stack(starts, 2)
        Y = torch.matmul(R_s, S_starts.mT).add_(Y_i)
        y = Y.permute(0, 2, 3, 1, 4).reshape(B, n_chunks * C, H, N)[:, :T]

        ctx.save_for_backward(x, e_ar, e_grow, e_out, ar_d, bk_g, bk_h, scores, T_inv, Z, ZB, R_s, S_starts)
        ctx.dims = (B, T, H, N, C, n_chunks, pad, s0 is None)
        return y, S

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dsT):
        # the saved products are float32 (float64): a backward run under autocast stays in their dtype
        with torch.autocast(dy.device.type, enabled=False):
            return _ChunkedWKV7._backward(ctx, dy.to(ctx.saved_tensors[0].dtype), dsT)

    @staticmethod
    def _backward(ctx, dy, dsT):
        x, e_ar, e_grow, e_out, ar_d, bk_g, bk_h, scores, T_inv, Z, ZB, R_s, S_starts = ctx.saved_tensors
        B, T, H, N, C, n_chunks, pad, no_s0 = ctx.dims
        v_ = x[:, :, :, 4]
        M = ZB[..., :N, :]
        A_ak, M_r = scores[..., :C, C:], scores[..., C:, :]
        mask, _ = _masks(C, x.dtype, x.device)

        if pad:
            dy = F.pad(dy, (0, 0, 0, 0, 0, pad))
        dY = dy.reshape(B, n_chunks, C, H, N).permute(0, 3, 1, 2, 4).contiguous()

        # The state pass, in reverse: dS_c = dS_{c+1} M_c^T + dY_c^T R_s,c.
        dS_from_y = dY.mT @ R_s
        dS = dsT.contiguous()
        nexts = [None] * n_chunks
        for c in range(n_chunks - 1, -1, -1):
            nexts[c] = dS
            dS = torch.baddbmm(
                dS_from_y[:, :, c].reshape(B * H, N, N), dS.reshape(B * H, N, N), M[:, :, c].mT.reshape(B * H, N, N)
            ).view(B, H, N, N)
        dD = torch.stack(nexts, 2)
        dM = S_starts.mT @ dD
        dR_s = dY @ S_starts

        # Y_i = M_rb Q + M_rk V, R_s = R~ + M_rb P
        dMZ = torch.cat([dR_s, dY], -1)
        dM_rb = dMZ @ Z.mT
        dZ = M_r[..., :C].mT @ dMZ
        dM_rk = dY @ v_.mT
        dv = M_r[..., C:].mT @ dY
        # [M; D] = Z^T B^ (+ diag e^{G_C}, + V^T K^)
        dZB = torch.cat([dM, dD], -2)
        dZ += bk_h[..., :C, :] @ dZB.mT
        db_h = Z @ dZB
        dk_h = v_ @ dD
        dv += bk_h[..., C:, :] @ dD.mT
        dg_end = dM.diagonal(dim1=-2, dim2=-1)
        # [P | Q] = (I - A_ab)^{-1} [A~ | A_ak V]
        drhs = T_inv.mT @ dZ
        dA_ab = drhs @ Z.mT
        dA_ak = drhs[..., N:] @ v_.mT
        dv += A_ak.mT @ drhs[..., N:]
        dscores = torch.cat([torch.cat([dA_ab, dA_ak], -1), torch.cat([dM_rb, dM_rk], -1)], -2).mul_(mask)
        dar_d = dscores @ bk_g
        dar_d[..., :C, :] += drhs[..., :N]
        dar_d[..., C:, :] += dR_s
        dbk_g = dscores.mT @ ar_d
        dbk_h = torch.cat([db_h, dk_h], -2)

        # Elementwise factors back to the inputs and to the cumulative log-decays.
        shape2 = (B, H, n_chunks, 2, C, N)
        dar_d, ar_d = dar_d.view(shape2), ar_d.view(shape2)
        dbk_g, bk_g = dbk_g.view(shape2), bk_g.view(shape2)
        dbk_h, bk_h = dbk_h.view(shape2), bk_h.view(shape2)
        dar = dar_d * e_ar
        dbk = dbk_g * e_grow.unsqueeze(3) + dbk_h * e_out.unsqueeze(3)
        dE = dar_d * ar_d  # d/d(exponent) of x * e^{exponent} is the product itself
        dGx = dE[:, :, :, 0]
        out_term = (dbk_h * bk_h).sum(3)
        dG = dE[:, :, :, 1] - (dbk_g * bk_g).sum(3) - out_term
        dG_end = out_term.sum(-2) + dg_end * e_ar[:, :, :, 1, -1]
        dG = dG + dGx
        dG[..., -1, :] += dG_end
        dlw = _rev_cumsum(dG, -2) - dGx

        dx = torch.cat([dar, dbk, dv.unsqueeze(3), dlw.unsqueeze(3)], 3)  # [B, H, chunk, 6, C, N]
        dx = dx.permute(0, 2, 4, 1, 3, 5).reshape(B, n_chunks * C, H, 6, N)[:, :T]
        da, dr, db, dk, dv_in, dlogw = dx.unbind(-2)
        return dr, dlogw, dk, dv_in, da, db, (None if no_s0 else dS), None


def wkv7_chunked(r, logw, k, v, a, b, s0=None, chunk: int | None = None):
    """Chunked exact WKV7. Inputs [B, T, H, N]; s0, sT [B, H, N, N] ([value, key]).

    Returns (y [B, T, H, N], sT), both in the compute dtype (float32, float64 for float64 r).
    Differentiable in every input, s0 included.
    """
    B, T, H, N = r.shape
    dtype = compute_dtype(r)
    r, logw, k, v, a, b = (t.to(dtype) for t in (r, logw, k, v, a, b))
    s0 = None if s0 is None else s0.to(dtype)
    if T == 0:
        sT = r.new_zeros(B, H, N, N) if s0 is None else s0
        return r.new_zeros(B, 0, H, N), sT
    C = pick_chunk(T, logw, chunk)
    logw = logw.clamp(min=LOGW_FLOOR)
    return _ChunkedWKV7.apply(r, logw, k, v, a, b, s0, C)
