"""Small RWKV-7 models for the model and FS tests."""

from __future__ import annotations

import torch

from fsray.model import ModelConfig, RWKV7

V = 40   # vocabulary of the test models


def random_model(n_layer=3, d_model=32, head_size=8, seed=0, vocab_size=V) -> RWKV7:
    """A model whose zero-initialised weights are perturbed, so every parameter matters."""
    torch.manual_seed(seed)
    model = RWKV7(ModelConfig(n_layer=n_layer, d_model=d_model, head_size=head_size, vocab_size=vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model
