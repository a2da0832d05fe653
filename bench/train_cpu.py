"""Throughput of the embedded default's paired training on this CPU.

Prints, all measured in this process:
  - tokens/s of a paired seed (no_fs + prompt_fs) in-process, one thread;
  - the same jobs through one Ray Train fit with 1 and 2 workers (training tokens/s, fit wall time,
    and the fit's fixed overhead = wall time - time spent training);
  - the share of a training step spent in the WKV operator, and the dense-layer-only ceiling: the same
    step with WKV replaced by a free stand-in of the same shapes (elementwise, keeps the graph).
Goal (issue 5): WKV at most a quarter of the step time.

Usage: .venv/bin/python bench/train_cpu.py [--steps 60] [--no-ray]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fsray.model as model_mod
from fsray.fsconfig import FSConfig
from fsray.trainer import AnswerScorer, _answer_stats, embedded_default_spec, initial_model, run_mode, task_data
from fsray.data import TrainStream, worker_slice

FS = FSConfig(fs_layer_start=1, alpha_init=-2.0)


def _free_wkv(r, logw, k, v, a, b, s0=None, backend="auto"):
    """Stand-in for the WKV op with its shapes and a gradient path, at elementwise cost."""
    B, T, H, N = r.shape
    sT = torch.zeros(B, H, N, N) if s0 is None else s0
    return r + k + v + a + b + logw, sT


def step_times(spec, seed: int, n: int, fs) -> list[float]:
    """Process CPU seconds per training step (one thread: the wall time of an idle machine; the
    shared 2-core machine's wall clock is too noisy for a ratio)."""
    data = task_data(spec)
    model = initial_model(spec, seed, data.tokenizer.vocab_size)
    if fs is not None:
        model.attach_fs(fs)
    scorer = AnswerScorer(model, fs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stream = TrainStream(len(data.train), spec.budget.batch_size, seed)
    out = []
    for step in range(n + 2):
        batch = data.batch("train", worker_slice(stream.batch_indices(step), 0, 1))
        t = time.process_time()
        ce, _, cnt, _ = _answer_stats(scorer(batch.prompt, batch.prompt_mask, batch.answer), batch)
        opt.zero_grad()
        (ce / cnt).backward()
        opt.step()
        if step >= 2:   # warm-up steps excluded
            out.append(time.process_time() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    spec = embedded_default_spec("query_after")
    spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"steps": args.steps, "eval_every": args.steps})})
    torch.set_num_threads(spec.threads)
    print(f"embedded default: {spec.model.n_layer} layers, width {spec.model.d_model}, head {spec.model.head_size}, "
          f"batch {spec.budget.batch_size}, {args.steps} steps per run, wkv backend {spec.wkv_backend}")

    t = time.perf_counter()
    pair = [run_mode(spec, 0, None), run_mode(spec, 0, FS)]
    wall = time.perf_counter() - t
    tokens = sum(r["tokens"] for r in pair)
    base_tps = tokens / sum(r["seconds"] for r in pair)
    cpu = sum(r["cpu_seconds"] for r in pair)
    print(f"in-process paired seed: {tokens} tokens in {wall:.1f} s wall -> {base_tps:,.0f} tokens/s wall, "
          f"{tokens / cpu:,.0f} tokens per CPU-second ({cpu / (2 * args.steps):.3f} CPU s/step incl. eval)")

    n = 8
    full = statistics.median(step_times(spec, 0, n, FS))
    real = model_mod.wkv7
    model_mod.wkv7 = _free_wkv
    try:
        dense = statistics.median(step_times(spec, 0, n, FS))
    finally:
        model_mod.wkv7 = real
    tok_step = tokens / (2 * args.steps)
    share = max(0.0, full - dense) / full
    print(f"train step (prompt_fs): {full * 1e3:.0f} CPU ms; dense layers only: {dense * 1e3:.0f} CPU ms; "
          f"WKV share {share:.0%} (goal <= 25%)")
    print(f"tokens/s {tok_step / full:,.0f} vs dense-layer ceiling {tok_step / dense:,.0f} "
          f"({dense / full:.2f}x of the ceiling)")

    if args.no_ray:
        return
    import ray

    from fsray.ray_train import fit_runs

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - t:.1f} s")
    for workers in (1, 2):
        t = time.perf_counter()
        res = fit_runs(spec, [(0, None), (0, FS)], num_workers=workers, name=f"bench_{workers}w_{int(t)}")
        wall = time.perf_counter() - t
        train_s = sum(r["seconds"] for r in res)
        tps = sum(r["tokens"] for r in res) / train_s
        cpu_tps = sum(r["tokens"] for r in res) / sum(r["cpu_seconds"] for r in res)
        print(f"Ray Train {workers} worker(s): {tps:,.0f} tokens/s wall while training ({tps / base_tps:.2f}x in-process), "
              f"{cpu_tps:,.0f} tokens per CPU-second per worker; "
              f"fit wall {wall:.1f} s, fixed overhead {wall - train_s:.1f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
