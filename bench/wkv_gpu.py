"""WKV7 on a GPU: Triton kernel vs flash-linear-attention vs the chunked torch path, with pass/fail.

    python bench/wkv_gpu.py                              # B=8 T=4096 H=12 N=64, bf16 and fp32
    python bench/wkv_gpu.py --T 1024 --reps 5 --json out.json
    TRITON_INTERPRET=1 python bench/wkv_gpu.py --device cpu --B 1 --T 9 --H 1 --N 16 --reps 1   # dry run

For each input dtype and backend: forward and forward+backward ms (median over repeats, after a
warm-up that includes compilation), the peak memory of a forward+backward above what was allocated
before it, and the errors: y and sT against the per-token reference run in float64 on the same rounded
inputs; gradients against the chunked path in float64 (the per-token loop's autograd graph would need
tens of GB here; the chunked path equals it to rounding, tests/test_wkv_torch.py). A result passes when
every error is within ``fsray.wkv.selfcheck.TOLERANCES`` (relative to the reference's largest magnitude).

Exit 0 when every backend that ran passed; 1 when one gave a wrong result or raised (each backend's
exception is caught and printed in one line; the others still run); a backend that is not installed is
"skipped" and does not fail the run. Without a CUDA device (and no ``--device cpu``) it says so and
exits 0, so ``make bench`` runs on a CPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsray.errors import UsageError, first_line  # noqa: E402
from fsray.wkv import wkv7  # noqa: E402
from fsray.wkv.chunked import wkv7_chunked  # noqa: E402
from fsray.wkv.reference import wkv7_reference  # noqa: E402
from fsray.wkv.selfcheck import TOLERANCES, make_inputs  # noqa: E402
from fsray.wkv.triton_kernel import saved_bytes  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def timed(fn, reps, device):
    """Median milliseconds of fn() over reps (CUDA events on a GPU, wall clock on the CPU)."""
    import time

    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def rel_err(x, ref):
    err = ((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    return err if err == err else float("inf")


def references(xs, gy, gs):
    x64 = [x.double() for x in xs]
    with torch.no_grad():
        y_ref, s_ref = wkv7_reference(*x64)
    leaves = [x.clone().requires_grad_() for x in x64]
    y64, s64 = wkv7_chunked(*leaves)
    grads = torch.autograd.grad((y64 * gy).sum() + (s64 * gs).sum(), leaves)
    return y_ref, s_ref, grads


def bench_backend(backend, xs, gy, gs, refs, reps, device, tol):
    y_ref, s_ref, grads_ref = refs
    leaves = [x.clone().requires_grad_() for x in xs]

    def forward():
        with torch.no_grad():
            return wkv7(*xs, backend=backend)

    def forward_backward():
        y, sT = wkv7(*leaves, backend=backend)
        return torch.autograd.grad((y.float() * gy.float()).sum() + (sT * gs.float()).sum(), leaves)

    y, sT = forward()
    grads = forward_backward()
    errs = {"y": rel_err(y, y_ref), "sT": rel_err(sT, s_ref)}
    errs.update({f"d{n}": rel_err(g, r) for n, g, r in zip(("r", "logw", "k", "v", "a", "b", "s0"), grads, grads_ref)})
    del y, sT, grads
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward_backward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    worst = max(errs, key=errs.get)
    return {
        "fwd_ms": timed(forward, reps, device), "fwd_bwd_ms": timed(forward_backward, reps, device),
        "peak_bytes": peak, "errors": errs, "worst": worst, "pass": errs[worst] <= tol,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--T", type=int, default=4096)
    parser.add_argument("--H", type=int, default=12)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--backends", default="triton,fla,torch")
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/wkv_gpu.py: no CUDA device here (use --device cpu with TRITON_INTERPRET=1 for a dry run)")
        return 0
    shape = (args.B, args.T, args.H, args.N)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    mem = saved_bytes(*shape)
    print(f"{name}  B={args.B} T={args.T} H={args.H} N={args.N}, fp32 state")
    print(f"triton memory per layer call: {mem['saved'] / 2**20:.0f} MiB of state checkpoints saved for the "
          f"backward, {mem['backward_transient'] / 2**20:.0f} MiB transient in the backward")
    results, failed = {"device": name, "shape": shape, "triton_saved_bytes": mem, "runs": {}}, False
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        tol = TOLERANCES[dtype]
        xs = make_inputs(*shape, dtype, device)
        g = torch.Generator().manual_seed(1)
        gy = torch.randn(xs[0].shape, generator=g, dtype=torch.float64).to(device)
        gs = torch.randn(xs[6].shape, generator=g, dtype=torch.float64).to(device)
        refs = references(xs, gy, gs)
        print(f"\n{dname} inputs (pass: every error <= {tol:.0e})")
        print(f"{'backend':8s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'peak MiB':>9s} {'err y':>8s} {'err sT':>8s} "
              f"{'worst grad':>16s}  result")
        for backend in args.backends.split(","):
            try:
                res = bench_backend(backend, xs, gy, gs, refs, args.reps, device, tol)
            except UsageError as exc:  # not installed / not on this device: not a wrong result
                res = {"skipped": first_line(exc, with_type=False)}
                print(f"{backend:8s} skipped: {res['skipped']}")
            except Exception as exc:  # noqa: BLE001 - one backend's crash must not hide the others
                res = {"error": first_line(exc)}
                failed = True
                print(f"{backend:8s} FAILED: {res['error']}")
            else:
                failed |= not res["pass"]
                e = res["errors"]
                grads = {k: v for k, v in e.items() if k.startswith("d")}
                wg = max(grads, key=grads.get)
                peak = f"{res['peak_bytes'] / 2**20:9.0f}" if res["peak_bytes"] is not None else f"{'-':>9s}"
                print(f"{backend:8s} {res['fwd_ms']:9.2f} {res['fwd_bwd_ms']:11.2f} {peak} {e['y']:8.1e} "
                      f"{e['sT']:8.1e} {wg + ' ' + format(grads[wg], '.1e'):>16s}  "
                      f"{'pass' if res['pass'] else 'WRONG (' + res['worst'] + ')'}")
            results["runs"].setdefault(dname, {})[backend] = res
            if device.type == "cuda":
                torch.cuda.empty_cache()
        runs = results["runs"][dname]
        if "fwd_bwd_ms" in runs.get("triton", {}) and "fwd_bwd_ms" in runs.get("fla", {}):
            ratio = runs["triton"]["fwd_bwd_ms"] / runs["fla"]["fwd_bwd_ms"]
            results["runs"][dname]["triton_over_fla"] = ratio
            print(f"triton / fla fwd+bwd time: {ratio:.2f}x (goal <= 1.0)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print("\nRESULT:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
