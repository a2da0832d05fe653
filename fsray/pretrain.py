"""Pretraining of the tiny base checkpoint of the embedded default (``fsray pretrain``).

The researchers post-train a pretrained model; the embedded default does the same with a small
RWKV-7 pretrained here (next-byte prediction) on a locally generated corpus and saved in BlinkDL
format (``fsray.checkpoint.save_blinkdl``). The corpus (``generic_text``) is generic text-like
material, not the downstream task: pseudo-word prose, numbers, lists, repeated spans (copying /
induction), and definitions that are referred back to later in the line (associative recall in free
text). No task prompt format (``Q:`` / ``A:``) appears in it.

This is a plain language-model loop over random windows of one token stream, not the paired
trainer's answer-only loop (``fsray.trainer.run_mode``): no task, no evaluation, no FS.
"""

from __future__ import annotations

import math
import random
import string
import time
from pathlib import Path

_CONS, _VOW = "bcdfghjklmnprstvwz", "aeiou"


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_CONS) + rng.choice(_VOW) for _ in range(rng.randint(1, 3)))[: rng.randint(1, 6)]


def _number(rng: random.Random) -> str:
    return str(rng.randrange(10 ** rng.randint(1, 3)))


def _prose(rng):
    words = [_word(rng) for _ in range(rng.randint(4, 12))]
    return " ".join(words).capitalize() + rng.choice(".!?")


def _counting(rng):
    start, step = rng.randrange(90), rng.choice([1, 1, 2, 5, 10])
    return " ".join(str(start + i * step) for i in range(rng.randint(3, 8)))


def _listing(rng):
    sep = rng.choice([", ", "; ", " "])
    kv = rng.choice(["=", ":", " is "])
    return sep.join(f"{_word(rng)}{kv}{_number(rng)}" for _ in range(rng.randint(2, 6)))


def _copy(rng):
    span = " ".join(rng.choice([_word(rng), _number(rng), rng.choice(string.ascii_lowercase)])
                    for _ in range(rng.randint(2, 5)))
    return f"{span} {rng.choice(['|', '->', 'again:', '='])} {span}"


def _recall(rng):
    # "let zo be 41, ka be 7. then ka was 7." : a definition referred back to later in the line
    names = list(dict.fromkeys(rng.choice(string.ascii_lowercase) + rng.choice(_VOW) for _ in range(5)))
    vals = [_number(rng) for _ in names]
    defs = ", ".join(f"{n} be {v}" for n, v in zip(names, vals))
    i = rng.randrange(len(names))
    return f"let {defs}. then {names[i]} was {vals[i]}."


# Recall is the skill post-training needs most and the slowest to appear: it gets a larger share.
_KINDS = (_prose, _counting, _listing, _copy, _recall, _recall, _recall)


def generic_text(rng: random.Random, n_chars: int) -> str:
    """About ``n_chars`` of mixed generic lines (deterministic in ``rng``)."""
    lines, size = [], 0
    while size < n_chars:
        line = rng.choice(_KINDS)(rng)
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


def pretrain(n_layer=2, d_model=64, head_size=16, steps=2000, batch_size=32, seq_len=64, lr=4e-3,
             seed=1234, threads=1, out: Path | str | None = None, wkv_backend="auto", log=print):
    """Train a byte-level RWKV-7 on ``generic_text`` and save it; returns (model, final loss)."""
    import torch
    import torch.nn.functional as F

    from fsray.checkpoint import save_blinkdl
    from fsray.model import RWKV7, ModelConfig
    from fsray.tokenizer import ByteTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tok = ByteTokenizer()
    model = RWKV7(ModelConfig(n_layer=n_layer, d_model=d_model, head_size=head_size,
                              vocab_size=tok.vocab_size), wkv_backend=wkv_backend)
    rng = random.Random(seed)
    need = steps * batch_size * (seq_len + 1)
    data = torch.tensor(tok.encode(generic_text(rng, need // 2 + 1)), dtype=torch.long)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(seed)
    warmup, t0, ema = max(1, steps // 20), time.perf_counter(), None
    for step in range(steps):
        mult = (step + 1) / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * mult
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=g)
        chunk = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])
        logits = model(chunk[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if log and ((step + 1) % 50 == 0 or step + 1 == steps):
            log(f"  step {step + 1}/{steps} loss {ema:.4f} ({time.perf_counter() - t0:.0f} s)")
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_blinkdl(model, out)
    return model, ema
