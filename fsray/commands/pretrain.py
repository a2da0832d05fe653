"""``fsray pretrain``: rebuild the tiny base checkpoint of the embedded default.

The corpus and the training loop live in ``fsray.pretrain``; this module only parses the flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  fsray pretrain                                   # rebuild fsray/assets/base_l2_d64.pth
  fsray pretrain --steps 300 --out /tmp/base.pth   # a quick one
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fsray.spec import EMBEDDED_BASE_FILE

    p.add_argument("--out", type=Path, default=EMBEDDED_BASE_FILE, help="where to write the .pth")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--head-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)


def run(args) -> int:
    from fsray.errors import UsageError
    from fsray.pretrain import pretrain

    for name in ("n_layer", "d_model", "head_size", "steps", "batch_size", "seq_len", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    print(f"fsray pretrain: {args.n_layer} layers, width {args.d_model}, {args.steps} steps -> {args.out}")
    _, loss = pretrain(args.n_layer, args.d_model, args.head_size, args.steps, args.batch_size,
                       args.seq_len, args.lr, args.seed, args.threads, args.out)
    print(f"saved {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB), final loss {loss:.4f}")
    return 0
