"""Check this machine's WKV7 backends: the device, each backend's self-check result and time, and the
backend ``wkv_backend: auto`` uses (``fsray.wkv.selfcheck``; the result is cached on disk).

Exit 0 when every backend checked is correct, 1 when one is refused (it is never used; auto takes the
next correct one), 2 on bad input.
"""

from __future__ import annotations

import argparse
import warnings

EPILOG = """examples:
  fsray doctor                              # the first CUDA device (the CPU where there is none)
  fsray doctor --shape 8,4096,12,64 --dtype bf16   # time the backends at a run's WKV shape
  fsray doctor --device cuda:1 --recheck    # check again, ignoring the cached result
  TRITON_INTERPRET=1 fsray doctor --device cpu     # the Triton kernel in the CPU interpreter too
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--shape", default=None, metavar="B,T,H,N",
                        help="the WKV shape to time the correct backends at (default: the check's shape)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="input dtype for the timing")
    parser.add_argument("--check-shape", default=None, metavar="B,T,H,N",
                        help="the correctness check's shape (default: fsray.wkv.selfcheck.CHECK_SHAPE, what "
                             "auto uses; a different one is cached apart)")
    parser.add_argument("--recheck", action="store_true", help="run the check again instead of reading the cache")


def _shape(text: str | None, default):
    from fsray.errors import UsageError

    if text is None:
        return tuple(default)
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise UsageError(f"--shape must be four positive integers B,T,H,N, got {text!r}")
    return shape


def run(args) -> int:
    import torch

    from fsray.errors import UsageError
    from fsray.wkv import selfcheck

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise UsageError(f"--device: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device on this machine")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"--device {device}: only cuda and cpu devices are checked")
    check_shape = _shape(args.check_shape, selfcheck.CHECK_SHAPE)
    shape = _shape(args.shape, check_shape)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    with warnings.catch_warnings():  # the table below names every refused backend and its error
        warnings.simplefilter("ignore", RuntimeWarning)
        report = selfcheck.run(device, shape, dtype, recheck=args.recheck, check_shape=check_shape)
    key = report["key"]
    versions = ", ".join(f"{k} {key[k]}" for k in ("torch", "triton", "fla", "fsray", "wkv_sources"))
    print(f"device: {key['device']} ({device})")
    print(f"versions: {versions}")
    B, T, H, N = check_shape
    print(f"self-check at B{B} T{T} H{H} N{N} with s0, against the float64 chunked path; "
          f"tolerances (relative to max |ref|): fp32 {selfcheck.TOLERANCES[torch.float32]:.0e}, "
          f"bf16 {selfcheck.TOLERANCES[torch.bfloat16]:.0e}")
    choice = report["choices"][f"{','.join(map(str, shape))},{str(dtype).removeprefix('torch.')}"]
    tag = f"ms at B{shape[0]} T{shape[1]} H{shape[2]} N{shape[3]} {args.dtype} fwd+bwd"
    print(f"{'backend':9s} {'result':8s} {'worst err fp32':>15s} {'worst err bf16':>15s} {'check ms':>9s}  {tag}")
    any_failed = False
    for name, res in report["backends"].items():
        errs = [max(res["max_rel_err"].get(d, {}).values(), default=float("nan")) for d in ("float32", "bfloat16")]
        ms = choice["ms"].get(name)
        status = "ok" if res["ok"] else "REFUSED"
        any_failed |= not res["ok"]
        timing = f"{ms:.3f}" if ms is not None else ("-" if not res["ok"] else "failed")
        print(f"{name:9s} {status:8s} {errs[0]:15.1e} {errs[1]:15.1e} {res['ms']:9.1f}  {timing}")
        if not res["ok"]:
            print(f"          error: {res['error']}")
    if device.type == "cuda":
        print(f"auto uses: {report['choice']}")
    else:
        print(f"fastest correct here: {report['choice']} (auto on CPU tensors uses the compiled C loop; "
              "the self-check decides on CUDA devices)")
    print(f"cache: {report['path']}")
    return 1 if any_failed else 0
