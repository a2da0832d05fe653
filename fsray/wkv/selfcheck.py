"""Self-check of the GPU WKV7 backends: which one ``backend="auto"`` uses on a CUDA device.

A GPU kernel that compiles is not yet a correct one (a new card, a new Triton, a new fla release), so
before ``auto`` uses one on a CUDA device it is checked there, once per (device name, torch, triton,
fla and fsray's WKV sources), and the result is cached on disk:

1. correctness, at ``CHECK_SHAPE`` with an initial state and a final-state gradient, in float32 and in
   bfloat16 inputs: y, sT and every input gradient (s0's included) against the exact chunked torch path
   run in float64 on the same (rounded) inputs, each within ``TOLERANCES[dtype]`` of the reference's
   largest magnitude;
2. speed, at the run's own shape (the first call's B, T, H, N and dtype): forward + backward of each
   backend that passed, median of a few repeats; the fastest is used.

A backend that fails (wrong numbers, an exception, out of memory at the run's shape) is never used:
one warning per process names it and its error, and the next correct one is taken. The chunked torch
path is the reference and always a candidate, so ``auto`` always has a correct backend.

Cache: ``$FSRAY_CACHE_DIR`` (default ``~/.cache/fsray``)/selfcheck/<key digest>.json, written to a
temporary name and renamed (concurrent Ray workers never read half a file). ``fsray doctor`` prints it.
The same code runs on the CPU (tests run it there with Triton's interpreter and an injected wrong
backend); ``auto`` calls it only for CUDA tensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..errors import first_line

CHECK_SHAPE = (2, 37, 2, 64)  # B, T, H, N: the model's head size, T not a multiple of any chunk
# Relative to the reference's largest magnitude. float32: rounding of ~1e-6 grows along the sequence
# and fla's tensor-core dots round to tf32 (2^-11); bfloat16 inputs round y and the gradients to 2^-8.
TOLERANCES = {torch.float32: 5e-3, torch.bfloat16: 3e-2}
TIMING_REPS = 3
_lock = threading.Lock()
_chosen: dict[tuple, str] = {}  # (device, shape, dtype) -> backend, this process
_warned: set[str] = set()


def default_candidates(device: torch.device) -> dict[str, Callable]:
    """name -> fn(r, logw, k, v, a, b, s0) -> (y, sT), in order of preference on a tie."""
    from . import _IMPLS, compiled

    names = ["triton", "fla", "torch"] if device.type == "cuda" else ["compiled", "triton", "torch"]
    out = {}
    for name in names:
        if name == "fla" and importlib.util.find_spec("fla") is None:
            continue
        if name == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            continue
        if name == "compiled" and not compiled.available():
            continue
        out[name] = _IMPLS[name]
    return out


def _versions() -> dict[str, str]:
    import fsray

    vers = {"torch": torch.__version__, "fsray": fsray.__version__}
    for pkg in ("triton", "fla"):
        try:
            mod = __import__(pkg)
            vers[pkg] = getattr(mod, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - absent or broken: recorded as such
            vers[pkg] = "absent"
    h = hashlib.sha256()
    for f in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    vers["wkv_sources"] = h.hexdigest()[:12]
    return vers


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({'triton interpreter' if os.environ.get('TRITON_INTERPRET', '0') not in ('', '0') else 'no interpreter'})"


def cache_key(device: torch.device, candidates) -> dict:
    return {"device": device_name(device), **_versions(), "candidates": sorted(candidates)}


def cache_path(key: dict) -> Path:
    root = os.environ.get("FSRAY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fsray")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "selfcheck" / f"{digest}.json"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def make_inputs(B, T, H, N, dtype, device, seed=0):
    """Inputs shaped like the model's (decays in RWKV-7's range, a = -kk, b = kk * gate), s0 given."""
    g = torch.Generator().manual_seed(seed)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    xs = [
        torch.randn(B, T, H, N, generator=g),
        -0.6065306597126334 * torch.sigmoid(2 * torch.randn(B, T, H, N, generator=g)),
        torch.randn(B, T, H, N, generator=g) * 0.5,
        torch.randn(B, T, H, N, generator=g),
        -kk,
        kk * torch.rand(B, T, H, N, generator=g),
    ]
    s0 = torch.randn(B, H, N, N, generator=g) * 0.5
    return [x.to(device=device, dtype=dtype) for x in xs] + [s0.to(device)]


def _outputs_and_grads(fn, inputs, gy, gs):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    y, sT = fn(*leaves)
    loss = (y.double() * gy).sum() + (sT.double() * gs).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return {"y": y.detach(), "sT": sT.detach(),
            **{f"d{n}": (torch.zeros_like(x) if g is None else g) for n, x, g in
               zip(("r", "logw", "k", "v", "a", "b", "s0"), leaves, grads)}}


def check_correct(name: str, fn, device, shape=None) -> dict:
    """{"ok", "error", "max_rel_err": {dtype: {tensor: err}}, "ms"}: fn against the float64 chunked path."""
    from .chunked import wkv7_chunked

    shape = CHECK_SHAPE if shape is None else shape
    result = {"ok": True, "error": None, "max_rel_err": {}, "ms": None}
    t0 = time.perf_counter()
    try:
        for dtype, tol in TOLERANCES.items():
            inputs = make_inputs(*shape, dtype, device)
            g = torch.Generator().manual_seed(1)
            gy = torch.randn(inputs[0].shape, generator=g, dtype=torch.float64).to(device)
            gs = torch.randn(inputs[6].shape, generator=g, dtype=torch.float64).to(device)
            want = _outputs_and_grads(wkv7_chunked, [x.double() for x in inputs], gy, gs)
            got = _outputs_and_grads(fn, inputs, gy, gs)
            errs = {}
            for what, ref in want.items():
                scale = ref.abs().max().clamp_min(1e-30)
                err = ((got[what].double() - ref).abs().max() / scale).item()
                errs[what] = err if err == err else float("inf")  # NaN counts as wrong
            result["max_rel_err"][str(dtype).removeprefix("torch.")] = errs
            worst = max(errs, key=errs.get)
            if errs[worst] > tol:
                result.update(ok=False, error=f"{worst} in {str(dtype).removeprefix('torch.')}: relative error "
                                               f"{errs[worst]:.1e} > {tol:.0e}")
                break
    except Exception as exc:  # noqa: BLE001 - any failure of a backend refuses it, in one line
        result.update(ok=False, error=first_line(exc))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result["ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    return result


def time_at(fn, device, shape, dtype) -> float:
    """Median ms of forward + backward at shape (after one warm-up call)."""
    inputs = [x.requires_grad_() for x in make_inputs(*shape, dtype, device)]

    def step():
        y, sT = fn(*inputs)
        torch.autograd.grad(y.float().sum() + sT.sum(), inputs)

    step()
    times = []
    for _ in range(TIMING_REPS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _warn_refused(name: str, error: str, device_label: str) -> None:
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"fsray: WKV backend {name!r} failed its self-check on {device_label} ({error}); "
                      "not used", RuntimeWarning, stacklevel=4)


def run(device, shape, dtype=torch.float32, candidates: dict[str, Callable] | None = None,
        recheck: bool = False, check_shape=None) -> dict:
    """The cached report for device (checking the backends first where there is none or ``recheck``),
    with the choice at shape/dtype added: {"key", "path", "backends": {name: result}, "choices"}."""
    device = torch.device(device)
    candidates = default_candidates(device) if candidates is None else candidates
    check_shape = tuple(CHECK_SHAPE if check_shape is None else check_shape)
    key = {**cache_key(device, candidates), "check_shape": list(check_shape)}
    path = cache_path(key)
    report = None if recheck else _read(path)
    if report is None or report.get("key") != key:
        report = {"key": key, "choices": {},
                  "backends": {n: check_correct(n, fn, device, check_shape) for n, fn in candidates.items()}}
        _write(path, report)
    shape_key = f"{','.join(map(str, shape))},{str(dtype).removeprefix('torch.')}"
    if shape_key not in report["choices"]:
        times = {}
        for name, res in report["backends"].items():
            if not res["ok"]:
                continue
            try:
                times[name] = round(time_at(candidates[name], device, shape, dtype), 3)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory at the run's shape
                times[name] = None
                res.setdefault("timing_errors", {})[shape_key] = first_line(exc)
        usable = {n: t for n, t in times.items() if t is not None}
        best = min(usable, key=usable.get) if usable else "torch"
        report["choices"][shape_key] = {"backend": best, "ms": times}
        _write(path, report)
    for name, res in report["backends"].items():
        if not res["ok"]:
            _warn_refused(name, res["error"], key["device"])
        elif name in report["choices"][shape_key]["ms"] and report["choices"][shape_key]["ms"][name] is None:
            _warn_refused(name, res["timing_errors"][shape_key], key["device"])
    report["path"] = str(path)
    report["choice"] = report["choices"][shape_key]["backend"]
    return report


def backend_for(r: torch.Tensor, candidates: dict[str, Callable] | None = None) -> str:
    """The backend ``auto`` uses for these inputs: checked once per device in this process, at the shape
    of the first call (the run's), cached on disk across processes."""
    if torch.compiler.is_compiling():
        # no real tensors to check with while tracing: the choice made before compiling (the trainer
        # calls ``prepare`` first; the devices of one process are one card model in practice)
        return next(iter(_chosen.values()), "triton" if r.is_cuda else "torch")
    key = (str(r.device),)
    name = _chosen.get(key)
    if name is not None:
        return name
    with _lock:
        if key not in _chosen:
            dtype = r.dtype if r.dtype in TOLERANCES else torch.float32
            _chosen[key] = run(r.device, tuple(r.shape), dtype, candidates)["choice"]
    return _chosen[key]


def prepare(device, shape, dtype=torch.float32) -> str:
    """Run (or read) the check for a run's device and WKV shape before the first step (the trainer calls
    this, so the timing is at the run's shape and never inside ``torch.compile``'s tracing)."""
    device = torch.device(device)
    if device.type != "cuda":
        return "compiled"
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    name = run(device, tuple(shape), dtype)["choice"]
    _chosen[(str(device),)] = name
    return name
