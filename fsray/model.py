"""RWKV-7 ("Goose") in torch, with Future-Seed on the prompt pass (docs/DESIGN.md §1, §3).

Module and parameter names follow BlinkDL's checkpoints exactly (``blocks.3.att.x_r``, ...), so
``state_dict()`` minus ``future_seed.*`` is a BlinkDL ``.pth`` (see ``fsray.checkpoint``).

Padding: ``mask`` [B, T] (False = padding). Padded positions are made invisible to the recurrent
state: their WKV inputs are k = v = a = b = 0 and log-decay 0 (S passes through unchanged), and the
token shift of every real token reads the previous *real* token (or the incoming state's x_prev).
A left-padded prompt therefore leaves exactly the state of the unpadded prompt, and the real
positions get the same logits. (Right or interior padding is handled the same way.)

Continuation: ``forward(answer, state=prompt_out.state)`` continues causally: token shift from
``att_x_prev`` / ``ffn_x_prev`` and the recurrence from ``wkv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError
from .fs import FutureSeed
from .fsconfig import FSConfig
from .wkv import BACKENDS, wkv7

# Decay: w = exp(-exp(w_log)), w_log = -softplus(-z) - 0.5  =>  log w = -exp(-0.5) * sigmoid(z).
_EXP_MINUS_HALF = math.exp(-0.5)


class LayerState(NamedTuple):
    att_x_prev: torch.Tensor  # [B, C] last ln1 output (time-mix token shift)
    wkv: torch.Tensor  # [B, H, N, N] float32, indexed [value, key]
    ffn_x_prev: torch.Tensor  # [B, C] last ln2 output (channel-mix token shift)


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # [B, T, V]
    state: list[LayerState]
    hidden: torch.Tensor | None  # [B, T, C] ln_out output (the head's input) if return_hidden


def _lora_dim(d_model: int, factor: float) -> int:
    """BlinkDL's LoRA width max(32, round(factor*sqrt(C)/32)*32), capped at C/4 for tiny widths."""
    blink = max(32, int(round(factor * math.sqrt(d_model) / 32)) * 32)
    return max(4, min(blink, d_model // 4))


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int
    d_model: int
    head_size: int
    vocab_size: int
    d_decay_lora: int | None = None  # w1/w2
    d_aaa_lora: int | None = None  # a1/a2
    d_mv_lora: int | None = None  # v1/v2 (value residual)
    d_gate_lora: int | None = None  # g1/g2
    # BlinkDL's GroupNorm eps for ln_x is the constant 64e-5 (= head_size*1e-5 at head size 64, the size
    # of every released model); their inference code uses it for every head size, so we do too.
    ln_x_eps: float = 64e-5
    ffn_mult: int = 4

    def __post_init__(self):
        for name in ("n_layer", "d_model", "head_size", "vocab_size", "ffn_mult"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.head_size:
            raise UsageError(
                f"ModelConfig.d_model ({self.d_model}) must be a multiple of head_size ({self.head_size})"
            )
        defaults = {"d_decay_lora": 2.5, "d_aaa_lora": 2.5, "d_mv_lora": 1.7, "d_gate_lora": 5.0}
        for name, factor in defaults.items():
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, _lora_dim(self.d_model, factor))
            elif not isinstance(value, int) or value < 1:
                raise UsageError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if not (self.ln_x_eps > 0 and math.isfinite(self.ln_x_eps)):
            raise UsageError(f"ModelConfig.ln_x_eps must be a positive number, got {self.ln_x_eps!r}")

    @property
    def n_head(self) -> int:
        return self.d_model // self.head_size


class _TokenShift:
    """x_prev for every position, skipping padded positions (set up once per forward from the mask).

    Left padding (the protocol's) needs only a ``where``; any other mask pattern uses a gather of the
    last real position before each token (whose backward is a scatter: slower, not deterministic on GPUs).
    """

    def __init__(self, mask: torch.Tensor | None, B: int, T: int):
        self.B, self.T = B, T
        self.mask = mask
        if torch.compiler.is_compiling():
            # No data-dependent branch in a compiled graph (fsray.fused): the left-padding path, checked
            # on the device; fsray.fused sends batches with other masks to the eager step.
            self.left_padded = True
            if mask is not None:
                torch._assert_async((mask[:, 1:] >= mask[:, :-1]).all(), "compiled forward: mask must be left-padded")
        else:
            self.left_padded = mask is None or bool((mask[:, 1:] >= mask[:, :-1]).all())
        if mask is not None and self.left_padded:
            self.prev_real = torch.cat([mask.new_zeros(B, 1), mask[:, :-1]], dim=1).unsqueeze(-1)
            self.last_real = mask[:, -1:]
        elif mask is not None:
            pos = torch.arange(T, device=mask.device).expand(B, T)
            # Index (shifted by +1; 0 = "the incoming state") of the last real token at or before t.
            last_real = torch.where(mask, pos + 1, 0).cummax(dim=1).values
            self.prev_idx = torch.cat([last_real.new_zeros(B, 1), last_real[:, :-1]], dim=1)
            self.last_idx = last_real[:, -1]

    @staticmethod
    def _initial(x: torch.Tensor, x_state: torch.Tensor | None) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 1, x.shape[2]) if x_state is None else x_state.unsqueeze(1).to(x.dtype)

    def prev(self, x: torch.Tensor, x_state: torch.Tensor | None) -> torch.Tensor:
        first = self._initial(x, x_state)
        if self.mask is None:
            return torch.cat([first, x[:, :-1]], dim=1)
        if self.left_padded:
            return torch.where(self.prev_real, torch.cat([first, x[:, :-1]], dim=1), first)
        xs = torch.cat([first, x], dim=1)
        return xs.gather(1, self.prev_idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))

    def last(self, x: torch.Tensor, x_state: torch.Tensor | None) -> torch.Tensor:
        """The x_prev to carry forward: the last real token's x (the incoming one if none was real)."""
        if self.mask is None:
            return x[:, -1]
        first = self._initial(x, x_state)
        if self.left_padded:
            return torch.where(self.last_real, x[:, -1], first[:, 0])
        xs = torch.cat([first, x], dim=1)
        return xs[torch.arange(self.B, device=x.device), self.last_idx]


def _ortho(shape, gain: float) -> torch.Tensor:
    w = torch.empty(shape)
    nn.init.orthogonal_(w, gain=gain)
    return w


class TimeMix(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        C, H, N = cfg.d_model, cfg.n_head, cfg.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        z = lambda *s: nn.Parameter(torch.zeros(*s))  # noqa: E731  (real values set by init_weights)
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a"):
            setattr(self, name, z(1, 1, C))
        self.w1, self.w2 = z(C, cfg.d_decay_lora), z(cfg.d_decay_lora, C)
        self.a1, self.a2 = z(C, cfg.d_aaa_lora), z(cfg.d_aaa_lora, C)
        if layer_id > 0:  # value residual toward layer 0's v
            self.v0, self.v1, self.v2 = z(1, 1, C), z(C, cfg.d_mv_lora), z(cfg.d_mv_lora, C)
        self.g1, self.g2 = z(C, cfg.d_gate_lora), z(cfg.d_gate_lora, C)
        self.r_k = z(H, N)
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=cfg.ln_x_eps)

    def forward(self, x, x_prev, v_first, s0, keep, backend):
        """x, x_prev: [B,T,C] (ln1 output and its token shift); keep: [B,T,1,1] float or None."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        maa = torch.cat([self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g]).unsqueeze(1)
        xr, xw, xk, xv, xa, xg = torch.addcmul(x, x_prev - x, maa).unbind(0)  # six mixes, one op

        r = self.receptance(xr)
        # float32 under bf16 autocast too: the decay compounds over the prompt (w^T)
        logw = -_EXP_MINUS_HALF * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        k = self.key(xk)
        v = self.value(xv)
        if self.layer_id == 0:
            v_first = v
        else:
            # lerp takes one dtype: under autocast the gate (fp32 v0 + a bf16 product) is cast to v's
            v = torch.lerp(v, v_first, torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2).to(v.dtype))
        a_gate = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)
        k = k * (1 + (a_gate - 1) * self.k_a)
        r4, k4, v4, logw4 = (t.view(B, T, H, N) for t in (r, k, v, logw))
        k_in, v_in = k4, v4
        if keep is not None:  # padded positions: no write, no decay, no removal (a = b = 0)
            k_in, v_in, logw4, kk = k4 * keep, v4 * keep, logw4 * keep, kk * keep
        y, sT = wkv7(r4, logw4, k_in, v_in, -kk, kk * a_gate.view(B, T, H, N), s0, backend=backend)

        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        y = y + ((r4 * k4 * self.r_k).sum(dim=-1, keepdim=True) * v4).view(B, T, C)
        return self.output(y * g), sT, v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.d_model
        self.x_k = nn.Parameter(torch.zeros(1, 1, C))
        self.key = nn.Linear(C, cfg.ffn_mult * C, bias=False)
        self.value = nn.Linear(cfg.ffn_mult * C, C, bias=False)

    def forward(self, x, x_prev):
        k = torch.relu(self.key(torch.addcmul(x, x_prev - x, self.x_k))) ** 2
        return self.value(k)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        C = cfg.d_model
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = TimeMix(cfg, layer_id)
        self.ffn = ChannelMix(cfg)


class RWKV7(nn.Module):
    def __init__(self, config: ModelConfig, wkv_backend: str = "auto", init: bool = True):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise UsageError(f"RWKV7 needs a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.wkv_backend = wkv_backend
        C = config.d_model
        self.emb = nn.Embedding(config.vocab_size, C)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, config.vocab_size, bias=False)
        self.future_seed: FutureSeed | None = None
        if init:
            self.init_weights()

    @property
    def wkv_backend(self) -> str:
        return self._wkv_backend

    @wkv_backend.setter
    def wkv_backend(self, name: str) -> None:
        if name not in BACKENDS:
            raise UsageError(f"unknown wkv_backend {name!r}; choose from {', '.join(BACKENDS)}")
        self._wkv_backend = name

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self) -> None:
        """RWKV-7's own init (BlinkDL RWKV-LM v7): depth-dependent token-shift mixes and decay,
        zero-init output projections and LoRA down-projections, tiny embeddings."""
        cfg = self.config
        L, C, N, V = cfg.n_layer, cfg.d_model, cfg.head_size, cfg.vocab_size
        n = torch.arange(C, dtype=torch.float32)
        ddd = (n / C).view(1, 1, C)
        linear = n / max(C - 1, 1) - 0.5
        zigzag = ((n % N) - (N - 1) / 2) / max((N - 1) / 2, 1e-9)
        zigzag = zigzag * zigzag.abs()
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        self.head.weight.copy_(_ortho((V, C), 0.5 * (math.sqrt(V / C) if V > C else 1.0)))
        for i, block in enumerate(self.blocks):
            ratio_0_to_1 = i / (L - 1) if L > 1 else 0.0
            ratio_1_to_0 = 1.0 - i / L
            att, ffn = block.att, block.ffn
            for name, p in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
                getattr(att, name).copy_(1.0 - ddd.pow(p * ratio_1_to_0))
            decay = -6 + 6 * (n / max(C - 1, 1)) ** (1 + ratio_0_to_1**0.3)
            att.w0.copy_((decay + 0.5 + 2.5 * zigzag).view(1, 1, C))
            att.a0.copy_((-0.19 + 0.3 * zigzag + 0.4 * linear).view(1, 1, C))
            att.k_k.copy_((0.71 - 0.1 * linear).view(1, 1, C))
            att.k_a.fill_(1.02)
            att.r_k.fill_(-0.04)
            lora = [(att.w1, att.w2), (att.a1, att.a2), (att.g1, att.g2)]
            if i > 0:
                att.v0.copy_((0.73 - 0.4 * linear).view(1, 1, C))
                lora.append((att.v1, att.v2))
            for down, up in lora:
                down.zero_()
                up.copy_(_ortho(up.shape, 0.1 * (math.sqrt(up.shape[0] / up.shape[1]) if up.shape[0] > up.shape[1] else 1.0)))
            bound = 0.5 / math.sqrt(C)
            nn.init.uniform_(att.receptance.weight, -bound, bound)
            nn.init.uniform_(att.key.weight, -0.1 * bound, 0.1 * bound)
            nn.init.uniform_(att.value.weight, -bound, bound)
            att.output.weight.zero_()
            att.ln_x.weight.fill_(((1 + i) / L) ** 0.7)
            att.ln_x.bias.zero_()
            ffn.x_k.copy_(1.0 - ddd.pow(ratio_1_to_0**4))
            nn.init.uniform_(ffn.key.weight, -bound, bound)
            ffn.value.weight.zero_()

    # ------------------------------------------------------------------ Future-Seed
    def attach_fs(self, cfg: FSConfig) -> FutureSeed:
        """Create the FS gates for ``cfg`` (once, before building the optimizer); prompt passes
        then apply it with ``forward(..., use_fs=True)``."""
        c = self.config
        ref = next(self.parameters())
        self.future_seed = FutureSeed(cfg, c.n_layer, c.n_head, c.d_model).to(ref.device)
        return self.future_seed

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer group: model weights and the three FS gate kinds."""
        fs_ids: set[int] = set()
        groups = {"alpha": [], "head_gate": [], "input_gate": []}
        if self.future_seed is not None:
            groups.update(self.future_seed.param_groups())
            fs_ids = {id(p) for p in self.future_seed.parameters()}
        model = [p for p in self.parameters() if p.requires_grad and id(p) not in fs_ids]
        return {"model": model, **groups}

    # ------------------------------------------------------------------ forward
    def zero_state(self, batch_size: int) -> list[LayerState]:
        c, ref = self.config, self.emb.weight
        H, N = c.n_head, c.head_size
        return [
            LayerState(
                ref.new_zeros(batch_size, c.d_model),
                torch.zeros(batch_size, H, N, N, device=ref.device, dtype=torch.float32),
                ref.new_zeros(batch_size, c.d_model),
            )
            for _ in range(c.n_layer)
        ]

    def _check_inputs(self, idx, mask, state, use_fs):
        c = self.config
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long:
            raise UsageError(f"idx must be a [B, T] long tensor, got {getattr(idx, 'shape', type(idx))}")
        B, T = idx.shape
        if T == 0:
            raise UsageError("idx has no tokens (T = 0)")
        if mask is not None and (mask.shape != idx.shape or mask.dtype != torch.bool):
            raise UsageError(f"mask must be a bool tensor shaped like idx {tuple(idx.shape)}, got {mask.dtype} {tuple(mask.shape)}")
        if state is not None:
            if len(state) != c.n_layer:
                raise UsageError(f"state has {len(state)} layers, the model has {c.n_layer}")
            want = (B, c.n_head, c.head_size, c.head_size)
            for i, s in enumerate(state):
                if tuple(s.wkv.shape) != want or tuple(s.att_x_prev.shape) != (B, c.d_model):
                    raise UsageError(f"state[{i}] has wkv {tuple(s.wkv.shape)}, expected {want}")
        if use_fs and self.future_seed is None:
            raise UsageError("forward(use_fs=True) needs an FS configuration: call model.attach_fs(cfg) first")

    def forward(
        self,
        idx: torch.Tensor,
        mask: torch.Tensor | None = None,
        state: list[LayerState] | None = None,
        use_fs: bool = False,
        return_hidden: bool = False,
        logits: str = "all",
    ) -> ModelOutput:
        """Run the model over ``idx``. ``use_fs``: this is a prompt pass, seeded by the FS
        configuration attached with ``attach_fs`` (the answer pass and no_fs leave it False).
        ``logits``: "all" positions, only the "last" one ([B, 1, V]: a prompt pass needs no more, and
        a 65536-word head over a long prompt is the largest tensor by far), or "none" (logits is
        None; use ``return_hidden``)."""
        self._check_inputs(idx, mask, state, use_fs)
        if logits not in ("all", "last", "none"):
            raise UsageError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        B, T = idx.shape
        if mask is not None and not torch.compiler.is_compiling() and bool(mask.all()):
            mask = None   # (compiled: the masked path, same numbers, no data-dependent branch)
        shift = _TokenShift(mask, B, T)
        keep = None if mask is None else mask.view(B, T, 1, 1).to(self.emb.weight.dtype)

        # a provable no-op (decided once, at attach_fs) never enters the graph
        seeder = self.future_seed if use_fs and self.future_seed.noop_reason is None else None

        x = self.blocks[0].ln0(self.emb(idx))
        v_first = None
        new_state: list[LayerState] = []
        for i, block in enumerate(self.blocks):
            given = state[i] if state is not None else None
            xa = block.ln1(x)
            s0 = given.wkv if given is not None else None
            if seeder is not None and seeder.is_seeded(i):
                # the input gate reads layer i's input (before ln1) at the last real prompt token
                seed = seeder.seed(i, new_state[i - 1].wkv, shift.last(x, None))
                s0 = seed if s0 is None else s0 + seed
            att_x_prev = given.att_x_prev if given is not None else None
            dx, wkv_T, v_first = block.att(xa, shift.prev(xa, att_x_prev), v_first, s0, keep, self.wkv_backend)
            x = x + dx
            xf = block.ln2(x)
            ffn_x_prev = given.ffn_x_prev if given is not None else None
            x = x + block.ffn(xf, shift.prev(xf, ffn_x_prev))
            new_state.append(LayerState(shift.last(xa, att_x_prev), wkv_T, shift.last(xf, ffn_x_prev)))

        if logits == "last" and not return_hidden:
            x = x[:, -1:]
        hidden = self.ln_out(x)
        out_logits = None
        if logits == "all":
            out_logits = self.head(hidden)
        elif logits == "last":
            out_logits = self.head(hidden[:, -1:])
        return ModelOutput(out_logits, new_state, hidden if return_hidden else None)
