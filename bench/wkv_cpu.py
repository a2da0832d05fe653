"""WKV7 on the CPU: the chunked torch path and the compiled C loop against the per-token reference,
forward + backward.

    .venv/bin/python bench/wkv_cpu.py            # the issue's shape and two tiny-model training shapes
    .venv/bin/python bench/wkv_cpu.py --sweep    # also time each chunk length (how the default was picked)
    .venv/bin/python bench/wkv_cpu.py --threads 2  # both cores (slow and erratic when the machine is shared)

One torch thread by default, as the tests and the trainer's workers run. Times are the minimum over
repeats (this machine is shared, so means are noise); the ratio is measured in this process, reference
and fast paths on the same inputs. The error columns are the largest of
max|fast - reference| / max|reference| over y, sT and the gradients of every input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsray.wkv import compiled  # noqa: E402
from fsray.wkv.chunked import default_chunk, pick_chunk, wkv7_chunked  # noqa: E402
from fsray.wkv.compiled import wkv7_compiled  # noqa: E402
from fsray.wkv.reference import wkv7_reference  # noqa: E402

SHAPES = {
    "issue (B8 T512 H4 N64)": (8, 512, 4, 64),
    "tiny model (B32 T133 H4 N32)": (32, 133, 4, 32),
    "embedded default prompt (B32 T26 H4 N16)": (32, 26, 4, 16),
    "embedded default answer (B32 T2 H4 N16)": (32, 2, 4, 16),
}


def make_inputs(B, T, H, N, seed=0):
    """Like the model: log w in (-0.61, 0), a = -kk, b = kk * gate with L2-normalised kk."""
    g = torch.Generator().manual_seed(seed)
    kk = F.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    xs = [
        torch.randn(B, T, H, N, generator=g),  # r
        -0.6065306597126334 * torch.sigmoid(2 * torch.randn(B, T, H, N, generator=g)),  # logw
        torch.randn(B, T, H, N, generator=g) * 0.5,  # k
        torch.randn(B, T, H, N, generator=g),  # v
        -kk,  # a
        kk * torch.rand(B, T, H, N, generator=g),  # b
        torch.randn(B, H, N, N, generator=g),  # s0
    ]
    return [x.requires_grad_() for x in xs]


def fwd_bwd(fn, xs, gy, gs):
    for x in xs:
        x.grad = None
    y, sT = fn(*xs)
    ((y * gy).sum() + (sT * gs).sum()).backward()
    return [y.detach(), sT.detach()] + [x.grad.clone() for x in xs]


def best_time(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_shape(label, shape, reps, ref_reps, sweep):
    xs = make_inputs(*shape)
    gy, gs = torch.randn(shape), torch.randn(shape[0], shape[2], shape[3], shape[3])
    fast = fwd_bwd(wkv7_chunked, xs, gy, gs)  # warm-up, and the values to compare
    t_ref = best_time(lambda: fwd_bwd(wkv7_reference, xs, gy, gs), ref_reps)
    ref = fwd_bwd(wkv7_reference, xs, gy, gs)

    def err(out):
        return max(((f - r).abs().max() / r.abs().max()).item() for f, r in zip(out, ref))

    t_fast = best_time(lambda: fwd_bwd(wkv7_chunked, xs, gy, gs), reps)
    C = pick_chunk(shape[1], xs[1])
    line = (f"{label:42s} reference {t_ref * 1e3:8.1f} ms | torch {t_fast * 1e3:7.1f} ms {t_ref / t_fast:5.1f}x "
            f"(chunk {C:2d}, err {err(fast):.1e})")
    errs = [err(fast)]
    if compiled.available():
        comp = fwd_bwd(wkv7_compiled, xs, gy, gs)
        t_comp = best_time(lambda: fwd_bwd(wkv7_compiled, xs, gy, gs), reps)
        errs.append(err(comp))
        line += (f" | compiled {t_comp * 1e3:7.1f} ms {t_ref / t_comp:6.1f}x, {t_fast / t_comp:4.1f}x torch "
                 f"(err {err(comp):.1e})")
    print(line, flush=True)
    if sweep:
        for chunk in (8, 16, 32, 64):
            t = best_time(lambda: fwd_bwd(lambda *a: wkv7_chunked(*a, chunk=chunk), xs, gy, gs), reps)
            print(f"{'':42s}   chunk <= {chunk:2d}: torch {t * 1e3:7.1f} ms  {t_ref / t:5.1f}x", flush=True)
    return max(errs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reps", type=int, default=5, help="repeats of the torch path (minimum is kept)")
    parser.add_argument("--sweep", action="store_true", help="also time chunk lengths 8..64")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"chunk cap by head size: N=16 -> {default_chunk(16)}, N>=32 -> {default_chunk(64)}; "
          f"compiled C kernel: {'built' if compiled.available() else compiled.unavailable_reason()}")
    worst = 0.0
    for label, shape in SHAPES.items():
        ref_reps = 1 if shape[1] >= 512 else 3
        worst = max(worst, bench_shape(label, shape, args.reps, ref_reps, args.sweep))
    print(f"largest relative error {worst:.1e} (goal <= 1e-5)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
