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
  - the fused (compiled, fsray.fused) training step against the eager one (issue 12: >= 1.5x): the
    trainer's whole step (forward, answer-token loss, backward, gradient clipping, AdamW) on the same
    batches, interleaved, process time per step. "eager (issue 12 start)" is the step as it was when
    issue 12 was filed (logits over every prompt position, the per-parameter gradient norm, foreach
    AdamW); "eager (now)" is the trainer's eager step today; "fused" is compile_scorer + fused AdamW.
    And the first compile's cost in fresh processes: cold (empty compile cache) and cached.

Usage: .venv/bin/python bench/train_cpu.py [--steps 60] [--no-ray] [--fused-only] [--no-compile-time]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import fsray.model as model_mod
from fsray.wkv import chunked, compiled
from fsray.fsconfig import FSConfig
from fsray import fused
from fsray.trainer import (AnswerScorer, _answer_stats, _trainable_groups, embedded_default_spec, initial_model,
                           run_mode, task_data)
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
    scorer = AnswerScorer(model, use_fs=fs is not None)
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


class _ScorerAtIssue12(AnswerScorer):
    """The trainer's scorer as it was when issue 12 was filed: logits over every prompt position."""

    def forward(self, prompt, prompt_mask, answer):
        out = self.model(prompt, mask=prompt_mask, use_fs=self.use_fs)
        logits = [out.logits[:, -1:]]
        if answer.shape[1] > 1:
            logits.append(self.model(answer[:, :-1], state=out.state).logits)
        return torch.cat(logits, dim=1)


def make_step(spec, variant: str, fs=FS, seed: int = 0):
    """One training step as fsray.trainer.run_mode takes it (loss over answer tokens, zero_grad,
    backward, clip, AdamW with the trainer's parameter groups), for a variant of the step."""
    data = task_data(spec)
    b = spec.budget
    torch.use_deterministic_algorithms(True, warn_only=True)   # as run_mode sets it
    model = initial_model(spec, seed, data.tokenizer.vocab_size)
    if fs is not None:
        torch.manual_seed(seed + 7919)
        model.attach_fs(fs)
    model.train()
    groups = _trainable_groups(model, fs, b)
    trainable = [p for g in groups for p in g["params"] if p.requires_grad]
    if variant == "eager (issue 12 start)":
        scorer = _ScorerAtIssue12(model, use_fs=fs is not None)
        opt = torch.optim.AdamW(groups, lr=b.lr, betas=b.betas, eps=1e-8)
        clip = torch.nn.utils.clip_grad_norm_
    elif variant == "eager (now)":
        scorer = AnswerScorer(model, use_fs=fs is not None)
        opt = torch.optim.AdamW(groups, lr=b.lr, betas=b.betas, eps=1e-8)
        clip = torch.nn.utils.clip_grad_norm_
    elif variant == "fused":
        scorer = fused.compile_scorer(AnswerScorer(model, use_fs=fs is not None), "on")
        opt = fused.adamw(groups, lr=b.lr, betas=b.betas, eps=1e-8)
        clip = fused.clip_grad_norm_
    else:
        raise ValueError(variant)

    def step(batch):
        ce_sum, _, n, _ = _answer_stats(scorer(batch.prompt, batch.prompt_mask, batch.answer), batch)
        loss = ce_sum / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip(trainable, b.grad_clip)
        opt.step()
        return loss

    return step, scorer


def fused_vs_eager(spec, n: int = 20, rounds: int = 3) -> dict[str, float]:
    """Median process-time ms per step of each variant, interleaved over rounds on the same batches."""
    data = task_data(spec)
    stream = TrainStream(len(data.train), spec.budget.batch_size, 0)
    batches = [data.batch("train", worker_slice(stream.batch_indices(i), 0, 1)) for i in range(n)]
    variants = ["eager (issue 12 start)", "eager (now)", "fused"]
    steps = {}
    for v in variants:
        t = time.perf_counter()
        steps[v], scorer = make_step(spec, v)
        for batch in batches[:2]:   # warm-up (and, for the fused step, compile or load from the cache)
            steps[v](batch)
        if v == "fused":
            print(f"fused step: first call {scorer.first_call_seconds:.1f} s in this process "
                  f"(compile cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR')})")
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            for batch in batches:
                t = time.process_time()
                steps[v](batch)
                times[v].append(time.process_time() - t)
    return {v: statistics.median(ts) * 1e3 for v, ts in times.items()}


def compile_probe() -> None:
    """(run in a fresh process) Seconds from nothing to the first fused step done, and its parts."""
    spec = embedded_default_spec("query_after")
    torch.set_num_threads(spec.threads)
    data = task_data(spec)
    batch = data.batch("train", TrainStream(len(data.train), spec.budget.batch_size, 0).batch_indices(0))
    step, scorer = make_step(spec, "fused")
    t = time.perf_counter()
    step(batch)   # forward compiled on the call, backward compiled at its first run
    first = time.perf_counter() - t
    t = time.perf_counter()
    step(batch)
    print(json.dumps({"first_step_s": first, "forward_first_call_s": scorer.first_call_seconds,
                      "next_step_s": time.perf_counter() - t}))


def compile_costs() -> dict[str, dict]:
    """The fused step's first-step time in fresh processes: cold (empty cache), then cached."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor")}
        for label in ("cold (empty cache)", "warm (cached)"):
            proc = subprocess.run([sys.executable, __file__, "--compile-probe"], capture_output=True,
                                  text=True, env=env, timeout=900)
            if proc.returncode:
                raise RuntimeError(f"compile probe failed: {proc.stderr.strip().splitlines()[-1:]}")
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def report_fused(spec, no_compile_time: bool) -> None:
    ms = fused_vs_eager(spec)
    base, now, fz = ms["eager (issue 12 start)"], ms["eager (now)"], ms["fused"]
    print(f"[fused step] eager (issue 12 start) {base:.1f} ms, eager (now) {now:.1f} ms, fused {fz:.1f} ms "
          f"per step (process time, one thread, batch {spec.budget.batch_size}, prompt_fs)")
    print(f"[fused step] fused vs eager (issue 12 start): {base / fz:.2f}x (goal >= 1.5x); "
          f"fused vs eager (now): {now / fz:.2f}x")
    if no_compile_time:
        return
    costs = compile_costs()
    for label, c in costs.items():
        print(f"[fused step] first compile, {label}: first step {c['first_step_s']:.1f} s "
              f"(forward call {c['forward_first_call_s']:.1f} s), next step {c['next_step_s'] * 1e3:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--fused-only", action="store_true", help="only the fused vs eager step section")
    ap.add_argument("--no-compile-time", action="store_true", help="skip the fresh-process compile timings")
    ap.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compile_probe:
        compile_probe()
        return
    spec = embedded_default_spec("query_after")
    spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"steps": args.steps, "eval_every": args.steps})})
    torch.set_num_threads(spec.threads)
    print(f"embedded default: {spec.model.n_layer} layers, width {spec.model.d_model}, head {spec.model.head_size}, "
          f"batch {spec.budget.batch_size}, {args.steps} steps per run, wkv backend {spec.wkv_backend}")
    report_fused(spec, args.no_compile_time)
    if args.fused_only:
        return

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

    from fsray.harness import train_paired

    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - t:.1f} s")
    for workers in (1, 2):
        t = time.perf_counter()
        res = []
        train_paired(spec, [0], FS, lambda seed, base, run: res.extend([base, run]), workers=workers)
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
