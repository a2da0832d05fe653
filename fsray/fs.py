"""Future-Seed: the one place where a layer's initial WKV state is seeded from the layer below.

``FutureSeed.seed`` applies docs/DESIGN.md §3 to the terminal state of layer i-1 on the same prompt::

    base = prev.detach() if fs_detach else prev
    if fs_norm: base = base / rms(base over N x N, per head).clamp_min(1e-6)
    logit = alpha[i]
    if fs_input_gate: logit = logit + <x_last, fs_in_w[i]> / sqrt(C) + fs_in_b[i]     (per sample)
    g = seed_scale * schedule(i) * sigmoid(logit)
    if fs_variant == "head": g = g * sigmoid(alpha_head[i, h])
    fs = base * g;  if fs_clip > 0: fs = fs.clamp(-fs_clip, fs_clip)

This is the researchers' definition (their ``rwkv7_g1d.py``): the input gate shifts the one scalar
logit rather than multiplying a second sigmoid in, and the per-head logits start at ``alpha_init``
(``FSConfig.head_logit_init``), so a per-head gate starts at sigmoid(alpha_init)^2.

``x_last`` is the *input* of layer i, the residual stream as layer i-1 left it (before layer i's
ln1), at the last real prompt position. With ``fs_detach`` it is detached too: then no gradient at all
flows from a seed into the layers below (only into the gate parameters).

The gate parameters are trainable ``nn.Parameter``s when ``alpha_lr > 0`` and fixed buffers otherwise.
``fs_in_w`` starts at zero and ``fs_in_b`` at ``input_gate_bias_init`` (0), so at the start the input
gate adds nothing and the gate is the scalar one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import UsageError
from .fsconfig import FSConfig


class FutureSeed(nn.Module):
    def __init__(self, cfg: FSConfig, n_layer: int, n_head: int, d_model: int):
        super().__init__()
        if not isinstance(cfg, FSConfig):
            raise UsageError(f"FutureSeed needs an FSConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.n_layer, self.n_head, self.d_model = n_layer, n_head, d_model
        # Decided once, here, from the model's own depth: why this config is identical to no_fs.
        self.noop_reason: str | None = cfg.noop_reason(n_layer)
        trainable = cfg.alpha_lr > 0
        self._add("alpha", torch.full((n_layer,), float(cfg.alpha_init)), trainable)
        if cfg.fs_variant == "head":
            self._add("alpha_head", torch.full((n_layer, n_head), float(cfg.head_logit_init())), trainable)
        else:
            self.alpha_head = None
        if cfg.fs_input_gate:
            self._add("fs_in_w", torch.zeros(n_layer, d_model), trainable)
            self._add("fs_in_b", torch.full((n_layer,), float(cfg.input_gate_bias_init)), trainable)
        else:
            self.fs_in_w = self.fs_in_b = None

    def _add(self, name: str, value: torch.Tensor, trainable: bool) -> None:
        if trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def scalar_gate(self, layer: int) -> float:
        """seed_scale * schedule(layer): the config's constant part of the gate (0 = layer unseeded)."""
        if layer < self.cfg.first_layer() or layer >= self.n_layer:
            return 0.0
        return self.cfg.seed_scale * self.cfg.schedule(layer, self.n_layer)

    def is_seeded(self, layer: int) -> bool:
        return self.scalar_gate(layer) != 0.0

    def gate(self, layer: int, x_last: torch.Tensor | None = None) -> torch.Tensor:
        """The full gate g for ``layer``, shaped to broadcast over [B, H, N, N]."""
        logit = self.alpha[layer].float().reshape(1)
        if self.fs_in_w is not None:
            if x_last is None:
                raise UsageError("fs_input_gate needs x_last (the layer's input at the last prompt token)")
            if self.cfg.fs_detach:
                x_last = x_last.detach()
            logit = logit + (x_last.float() @ self.fs_in_w[layer].float()) / math.sqrt(self.d_model) \
                + self.fs_in_b[layer].float()
        g = self.scalar_gate(layer) * torch.sigmoid(logit).reshape(-1, 1, 1, 1)
        if self.alpha_head is not None:
            g = g * torch.sigmoid(self.alpha_head[layer]).reshape(1, -1, 1, 1)
        return g

    def seed(self, layer: int, prev_state: torch.Tensor, x_last: torch.Tensor | None = None) -> torch.Tensor:
        """Initial WKV state [B, H, N, N] (float32) for ``layer`` from layer-1's terminal state."""
        cfg = self.cfg
        base = prev_state.detach() if cfg.fs_detach else prev_state
        base = base.float()
        if cfg.fs_norm:
            rms = base.square().mean(dim=(-2, -1), keepdim=True).sqrt()
            base = base / rms.clamp_min(1e-6)
        fs = base * self.gate(layer, x_last)
        if cfg.fs_clip > 0:
            fs = fs.clamp(-cfg.fs_clip, cfg.fs_clip)
        return fs

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        def params(*tensors):
            return [t for t in tensors if isinstance(t, nn.Parameter)]

        return {
            "alpha": params(self.alpha),
            "head_gate": params(self.alpha_head),
            "input_gate": params(self.fs_in_w, self.fs_in_b),
        }

    def extra_repr(self) -> str:
        return self.cfg.label()
