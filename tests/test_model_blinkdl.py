"""fsray's RWKV7 against BlinkDL's own implementation (PyPI ``rwkv``, ``RWKV_x070``, CPU fp32).

BlinkDL's module switches on RWKV-7 through environment variables read at import time and sets
global torch flags, so it runs in a subprocess: it loads the checkpoint we wrote and saves its logits
and its state list (per layer i: [3i] att_x_prev [C], [3i+1] wkv [H,N,N] indexed [value,key],
[3i+2] ffn_x_prev [C]).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fsray.checkpoint import load_blinkdl, save_blinkdl
from fsray.model import ModelConfig, RWKV7

pytest.importorskip("rwkv")

BLINKDL_RUNNER = textwrap.dedent(
    """
    import os, sys, torch
    os.environ["RWKV_V7_ON"] = "1"; os.environ["RWKV_JIT_ON"] = "0"; os.environ["RWKV_CUDA_ON"] = "0"
    from rwkv.model import RWKV
    ckpt, tokens_file, out_file = sys.argv[1:]
    model = RWKV(ckpt[:-len(".pth")], strategy="cpu fp32")   # it appends .pth itself
    tokens = torch.load(tokens_file).tolist()
    logits, state = model.forward(tokens, None, full_output=True)
    torch.save({"logits": logits, "state": [s.clone() for s in state]}, out_file)
    """
)


def test_logits_and_states_match_blinkdl_rwkv_x070(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=4, d_model=128, head_size=32, vocab_size=300)
    model = RWKV7(cfg)
    with torch.no_grad():  # perturb every weight: zero-initialised projections must count too
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp_path / "tiny.pth"
    save_blinkdl(model, ckpt)
    tokens = torch.randint(0, cfg.vocab_size, (24,))
    torch.save(tokens, tmp_path / "tokens.pt")

    env = dict(os.environ, PYTORCH_JIT="0")  # skip TorchScript compilation of their per-token loop
    run = subprocess.run(
        [sys.executable, "-c", BLINKDL_RUNNER, str(ckpt), str(tmp_path / "tokens.pt"), str(tmp_path / "ref.pt")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    ref = torch.load(tmp_path / "ref.pt")

    ours = load_blinkdl(ckpt)(tokens.unsqueeze(0))
    logits = ours.logits[0].detach()
    rel = (logits - ref["logits"]).norm() / ref["logits"].norm()
    assert rel <= 1e-4, rel
    for i, layer in enumerate(ours.state):
        att_x_prev, wkv, ffn_x_prev = (t[0].detach() for t in layer)
        torch.testing.assert_close(att_x_prev, ref["state"][3 * i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(wkv, ref["state"][3 * i + 1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ffn_x_prev, ref["state"][3 * i + 2], atol=1e-5, rtol=1e-4)
