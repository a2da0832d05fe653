"""WKV7 on a GPU: Triton kernel vs flash-linear-attention vs the chunked torch path, bf16 inputs.

    python bench/wkv_gpu.py                     # B=8, T=4096, H=12, N=64 (issue 4)
    python bench/wkv_gpu.py --T 1024 --reps 5

Forward and forward+backward times (median over repeats, after warm-up and compilation), and errors
against float64: y and sT against the per-token reference run in float64 on the same (bf16-rounded)
inputs; gradients against the chunked path in float64 (the per-token loop's autograd graph at this
size would need tens of GB; the chunked path equals it to rounding, tests/test_wkv_torch.py).
Exits 0 with a message where no CUDA device is present. Keep results in bench/RESULTS.md with the card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsray.errors import UsageError  # noqa: E402
from fsray.wkv import wkv7  # noqa: E402
from fsray.wkv.chunked import wkv7_chunked  # noqa: E402
from fsray.wkv.reference import wkv7_reference  # noqa: E402


def make_inputs(B, T, H, N, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    kk = F.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    xs = [
        torch.randn(B, T, H, N, generator=g),
        -0.6065306597126334 * torch.sigmoid(2 * torch.randn(B, T, H, N, generator=g)),
        torch.randn(B, T, H, N, generator=g) * 0.5,
        torch.randn(B, T, H, N, generator=g),
        -kk,
        kk * torch.rand(B, T, H, N, generator=g),
    ]
    s0 = torch.randn(B, H, N, N, generator=g) * 0.1
    return [x.to(device=device, dtype=dtype) for x in xs] + [s0.to(device)]


def timed(fn, reps):
    """Median milliseconds of fn() over reps, timed with CUDA events."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def rel_err(x, ref):
    return ((x.double() - ref).abs().max() / ref.abs().max()).item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--T", type=int, default=4096)
    parser.add_argument("--H", type=int, default=12)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--backends", default="triton,fla,torch")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/wkv_gpu.py: no CUDA device here; nothing to measure (run it on a GPU machine).")
        return 0

    device = torch.device("cuda")
    shape = (args.B, args.T, args.H, args.N)
    xs = make_inputs(*shape, torch.bfloat16, device)
    g = torch.Generator(device="cpu").manual_seed(1)
    gy = torch.randn(shape, generator=g).to(device)
    gs = torch.randn(args.B, args.H, args.N, args.N, generator=g).to(device)

    x64 = [x.double() for x in xs]
    with torch.no_grad():
        y_ref, s_ref = wkv7_reference(*x64)
    leaves64 = [x.clone().requires_grad_() for x in x64]
    y64, s64 = wkv7_chunked(*leaves64)
    ((y64 * gy).sum() + (s64 * gs).sum()).backward()
    grads_ref = [x.grad for x in leaves64]
    del y64, s64, leaves64

    print(f"{torch.cuda.get_device_name()}  B={args.B} T={args.T} H={args.H} N={args.N} bf16 inputs, fp32 state")
    print(f"{'backend':8s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'err y':>9s} {'err sT':>9s} {'err grads':>10s}")
    for backend in args.backends.split(","):
        leaves = [x.clone().requires_grad_() for x in xs]

        def forward():
            with torch.no_grad():
                return wkv7(*xs, backend=backend)

        def forward_backward():
            for x in leaves:
                x.grad = None
            y, sT = wkv7(*leaves, backend=backend)
            ((y.float() * gy).sum() + (sT * gs).sum()).backward()

        try:
            y, sT = forward()
            forward_backward()
        except UsageError as exc:
            print(f"{backend:8s} skipped: {exc}")
            continue
        torch.cuda.synchronize()
        grad_err = max(rel_err(x.grad, ref) for x, ref in zip(leaves, grads_ref))
        t_fwd = timed(forward, args.reps)
        t_fb = timed(forward_backward, args.reps)
        errs = f"{rel_err(y, y_ref):9.1e} {rel_err(sT, s_ref):9.1e} {grad_err:10.1e}"
        print(f"{backend:8s} {t_fwd:9.2f} {t_fb:11.2f} {errs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
