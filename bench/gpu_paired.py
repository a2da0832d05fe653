"""A short paired run on one GPU without Ray: a random BlinkDL-format checkpoint, the World tokenizer.

    python bench/gpu_paired.py                       # 12 layers, width 768, T 512 and 4096, bf16 vs fp32
    python bench/gpu_paired.py --T 512 --steps 4 --json out.json
    python bench/gpu_paired.py --device cpu --layers 1 --width 64 --T 48 --batch 2 --steps 1   # dry run

For each prompt length T and precision, one no_fs and one prompt_fs run of the same seed through the
trainer (``fsray.trainer.run_mode``, what every Ray worker runs): steps/s, tokens/s, peak GPU memory of
the run, and how many such runs fit the GPU at once (its memory over the peak plus a CUDA context per
process), which is what ``gpus_per_worker`` packs. The task is kv_retrieval with as many key-value
pairs as fit T tokens. Exit 1 when a run fails or its loss is not finite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsray.checkpoint import save_blinkdl  # noqa: E402
from fsray.errors import first_line  # noqa: E402
from fsray.fsconfig import FSConfig  # noqa: E402
from fsray.model import RWKV7, ModelConfig  # noqa: E402
from fsray.tasks import get_task  # noqa: E402
from fsray.tokenizer import WorldTokenizer  # noqa: E402
from fsray.trainer import TrainSpec, run_mode  # noqa: E402

CUDA_CONTEXT_BYTES = 600 << 20  # a CUDA context and the allocator's slack, per process (measured ~0.5 GB)
TASK = {"name": "kv_retrieval", "key_len": "3-3", "value_len": "4-4"}


def pairs_for(T: int, tokenizer) -> int:
    """The most key-value pairs whose longest prompt fits 7/8 of T tokens by the task's own length check
    (the check's longest keys and values are not always the longest in tokens: the rest is margin)."""
    lo, hi = 1, 4096
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            get_task(TASK["name"], n_pairs=f"{mid}-{mid}", key_len=TASK["key_len"], value_len=TASK["value_len"],
                     max_prompt_len=T - T // 8).check(tokenizer)
            lo = mid
        except Exception:  # noqa: BLE001 - too long (or too few distinct keys/values): fewer pairs
            hi = mid - 1
    return lo


def spec_for(checkpoint: str, T: int, n_pairs: int, args, precision: str) -> TrainSpec:
    spec = {
        "task": {"name": TASK["name"], "options": {"n_pairs": f"{n_pairs}-{n_pairs}", "key_len": TASK["key_len"],
                                                   "value_len": TASK["value_len"], "max_prompt_len": T}},
        "model": {"checkpoint": checkpoint, "tokenizer": "world"},
        "budget": {"steps": args.steps, "batch_size": args.batch, "eval_every": args.steps, "warmup": 1},
        "data": {"n_train": max(4 * args.batch, 16), "n_val": args.batch, "eval_batch_size": args.batch},
    }
    if "precision" in TrainSpec.model_fields:
        spec["precision"] = precision
    elif precision != "fp32":
        raise SystemExit("this fsray has no precision setting: run with --precisions fp32")
    return TrainSpec.model_validate(spec)


def one_run(spec, fs, device) -> dict:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    res = run_mode(spec, 0, fs, device=device)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    ok = res["status"] == "ok" and res["loss"] is not None and math.isfinite(res["loss"])
    out = {"status": res["status"], "failure": res["failure"], "loss": res["loss"], "steps": res["steps"],
           "tokens": res["tokens"], "train_seconds": res["seconds"], "wall_seconds": wall, "peak_bytes": peak,
           "ok": ok}
    secs = res["seconds"] or wall
    out["steps_per_s"] = res["steps"] / secs if secs else None
    out["tokens_per_s"] = res["tokens"] / secs if secs else None
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--T", default="512,4096", help="prompt lengths (tokens), comma-separated")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_paired.py: no CUDA device here (--device cpu for a dry run)")
        return 0
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    tokenizer = WorldTokenizer()
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    fs = FSConfig.model_validate({})  # the default FS configuration
    results = {"device": name, "layers": args.layers, "width": args.width, "batch": args.batch,
               "steps": args.steps, "runs": []}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = RWKV7(ModelConfig(args.layers, args.width, args.head_size, tokenizer.vocab_size))
        checkpoint = str(Path(tmp) / "random.pth")
        save_blinkdl(model, checkpoint)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        print(f"{name}: random {args.layers}-layer width-{args.width} checkpoint ({n_params / 1e6:.0f}M params), "
              f"World tokenizer, batch {args.batch}, {args.steps} steps a run")
        print(f"{'T':>5s} {'prec':5s} {'mode':9s} {'steps/s':>8s} {'tokens/s':>9s} {'peak GiB':>9s} "
              f"{'fit/GPU':>7s} {'loss':>8s}")
        for T in (int(t) for t in args.T.split(",")):
            n_pairs = pairs_for(T, tokenizer)
            for precision in args.precisions.split(","):
                spec = spec_for(checkpoint, T, n_pairs, args, precision)
                for mode, cfg in (("no_fs", None), ("prompt_fs", fs)):
                    try:
                        r = one_run(spec, cfg, device)
                    except Exception as exc:  # noqa: BLE001 - report and go on with the next run
                        r = {"ok": False, "failure": first_line(exc)}
                    r.update(T=T, n_pairs=n_pairs, precision=precision, mode=mode)
                    if r.get("peak_bytes"):
                        r["runs_per_gpu"] = int(total // (r["peak_bytes"] + CUDA_CONTEXT_BYTES))
                    results["runs"].append(r)
                    failed |= not r["ok"]
                    if "steps_per_s" not in r:
                        print(f"{T:5d} {precision:5s} {mode:9s} FAILED: {r['failure']}")
                        continue
                    peak = f"{r['peak_bytes'] / 2**30:9.2f}" if r["peak_bytes"] else f"{'-':>9s}"
                    fit = f"{r.get('runs_per_gpu', '-'):>7}"
                    loss = f"{r['loss']:8.3f}" if r["loss"] is not None else f"{'-':>8s}"
                    print(f"{T:5d} {precision:5s} {mode:9s} {r['steps_per_s']:8.2f} {r['tokens_per_s']:9.0f} "
                          f"{peak} {fit} {loss}" + ("" if r["ok"] else f"  FAILED: {r['failure']}"))
            by = {(r["precision"], r["mode"]): r for r in results["runs"] if r["T"] == T and "steps_per_s" in r}
            for mode in ("no_fs", "prompt_fs"):
                if ("bf16", mode) in by and ("fp32", mode) in by and by[("fp32", mode)]["steps_per_s"]:
                    ratio = by[("bf16", mode)]["steps_per_s"] / by[("fp32", mode)]["steps_per_s"]
                    print(f"T {T} {mode}: bf16 / fp32 steps/s = {ratio:.2f}x (goal on a GPU >= 3)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print("RESULT:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
