"""Throughput of the embedded default's paired training on this CPU.

Prints, all measured in this process:
  - tokens/s of a paired seed (no_fs + prompt_fs) in-process, one thread;
  - the same jobs through one Ray Train fit with 1 and 2 workers (training tokens/s, fit wall time,
    and the fit's fixed overhead = wall time - time spent training);
  - the share of a training step spent in the WKV operator, for the compiled C kernel (the CPU default)
    and the chunked torch path: timed directly (process time inside the operator's forward and
    backward), and as the step-time difference against the dense-layer-only ceiling: the same step with
    WKV replaced by a stand-in of the same shapes (elementwise, keeps the graph; not quite free, so
    this second share is a lower bound).
Goal (issue 5): WKV at most a quarter of the step time.

Usage: .venv/bin/python bench/train_cpu.py [--steps 60] [--no-ray]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fsray.model as model_mod
from fsray.wkv import chunked, compiled
from fsray.fsconfig import FSConfig
from fsray.trainer import AnswerScorer, _answer_stats, embedded_default_spec, initial_model, run_mode, task_data
from fsray.data import TrainStream, worker_slice

FS = FSConfig(fs_layer_start=1, alpha_init=-2.0)


def _free_wkv(r, logw, k, v, a, b, s0=None, backend="auto"):
    """Stand-in for the WKV op with its shapes and a gradient path, at elementwise cost."""
    B, T, H, N = r.shape
    sT = torch.zeros(B, H, N, N) if s0 is None else s0
    return r + k + v + a + b + logw, sT


class _OpClock:
    """Process time spent inside the WKV operator: the dispatch's forward and the autograd backward
    of the fast paths' Functions."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._patched = []
        real = model_mod.wkv7

        def timed_wkv7(*args, **kw):
            t = time.process_time()
            try:
                return real(*args, **kw)
            finally:
                self.seconds += time.process_time() - t

        self._patched.append((model_mod, "wkv7", real))
        model_mod.wkv7 = timed_wkv7
        for fn in (chunked._ChunkedWKV7, compiled._CompiledWKV7):
            bwd = fn.backward

            def timed_backward(ctx, *grads, _bwd=bwd):
                t = time.process_time()
                try:
                    return _bwd(ctx, *grads)
                finally:
                    self.seconds += time.process_time() - t

            self._patched.append((fn, "backward", bwd))
            fn.backward = staticmethod(timed_backward)
        return self

    def __exit__(self, *exc):
        for owner, name, value in reversed(self._patched):
            setattr(owner, name, staticmethod(value) if owner is not model_mod else value)


def step_times(spec, seed: int, n: int, fs, backend: str = "auto", clock: _OpClock | None = None):
    """Process CPU seconds per training step (one thread: the wall time of an idle machine; the
    shared 2-core machine's wall clock is too noisy for a ratio), and the operator's seconds per step
    when a clock is given."""
    data = task_data(spec)
    model = initial_model(spec, seed, data.tokenizer.vocab_size)
    model.wkv_backend = backend
    if fs is not None:
        model.attach_fs(fs)
    scorer = AnswerScorer(model, fs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stream = TrainStream(len(data.train), spec.budget.batch_size, seed)
    out, op = [], []
    for step in range(n + 2):
        batch = data.batch("train", worker_slice(stream.batch_indices(step), 0, 1))
        before = clock.seconds if clock else 0.0
        t = time.process_time()
        ce, _, cnt, _ = _answer_stats(scorer(batch.prompt, batch.prompt_mask, batch.answer), batch)
        opt.zero_grad()
        (ce / cnt).backward()
        opt.step()
        if step >= 2:   # warm-up steps excluded
            out.append(time.process_time() - t)
            op.append((clock.seconds if clock else 0.0) - before)
    return out, op


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

    # Dense-only, compiled and torch steps interleaved over 3 rounds of 20 steps each, so slow
    # drifts of the shared machine fall on all of them alike; medians over all rounds.
    n, rounds = 20, 3
    real = model_mod.wkv7
    backends = ["compiled", "torch"] if compiled.available() else ["torch"]
    if not compiled.available():
        print(f"compiled C kernel unavailable ({compiled.unavailable_reason()}): timing the torch path only")
    steps = {b: [] for b in ["dense", *backends]}
    op = {b: [] for b in backends}
    for _ in range(rounds):
        model_mod.wkv7 = _free_wkv
        try:
            steps["dense"] += step_times(spec, 0, n, FS)[0]
        finally:
            model_mod.wkv7 = real
        for backend in backends:
            with _OpClock() as clock:
                st, op_s = step_times(spec, 0, n, FS, backend, clock)
            steps[backend] += st
            op[backend] += op_s
    dense = statistics.median(steps["dense"])
    tok_step = tokens / (2 * args.steps)
    for backend in backends:
        full, op_s = statistics.median(steps[backend]), statistics.median(op[backend])
        diff_share = max(0.0, full - dense) / full
        print(f"[{backend:8s}] train step (prompt_fs): {full * 1e3:5.1f} CPU ms, of which WKV {op_s * 1e3:5.1f} ms "
              f"= WKV share {op_s / full:.0%} (goal <= 25%); step minus dense-only step ({dense * 1e3:.1f} ms): "
              f"{diff_share:.0%}; tokens/s {tok_step / full:,.0f} vs dense-layer ceiling {tok_step / dense:,.0f} "
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
