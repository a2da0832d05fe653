"""The fused (compiled) training step against the eager one, and its fallbacks (fsray.fused).

The eager step is the reference: the compiled step must give the same logits and gradients within
1e-5 (relative to the largest value), on the embedded default with FS on, the seed's gradient into
the layer below included. Compiling is slow on a small CPU (tens of seconds a graph, cold), so the
compiling tests share Inductor's on-disk cache (fsray's, as in a search) and the model-sized one is
marked slow.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from fsray import fused
from fsray.errors import UsageError
from fsray.fsconfig import FSConfig
from fsray.model import RWKV7, ModelConfig
from fsray.spec import embedded_default_spec
from fsray.trainer import AnswerScorer, initial_model, task_data
from fsray.wkv import compiled

needs_compiler = pytest.mark.skipif(fused.unavailable_reason("cpu") is not None or not compiled.available(),
                                    reason=f"cannot compile here: {fused.unavailable_reason('cpu')}")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def loss_and_grads(scorer, model, prompt, mask, answer, answer_mask):
    for p in model.parameters():
        p.grad = None
    logits = scorer(prompt, mask, answer)
    ce = F.cross_entropy(logits.transpose(1, 2).float(), answer, reduction="none")
    (ce * answer_mask).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(actual, expected, tol=1e-5):
    (logits_a, grads_a), (logits_e, grads_e) = actual, expected
    assert rel_err(logits_a, logits_e) <= tol, "logits"
    assert set(grads_a) == set(grads_e)
    worst = max(((rel_err(grads_a[n], grads_e[n]), n) for n in grads_e))
    assert worst[0] <= tol, f"gradient of {worst[1]}: relative error {worst[0]:.1e}"


def tiny_batch(B, T, vocab, seed, min_len=2):
    """Left-padded prompts of lengths in [min_len, T] (as fsray.data.collate makes them), 2-token answers."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T).expand(B, T) >= (T - lengths).unsqueeze(1)
    prompt = torch.randint(1, vocab, (B, T), generator=g) * mask
    answer = torch.randint(1, vocab, (B, 2), generator=g)
    return prompt, mask, answer, torch.ones(B, 2, dtype=torch.bool)


# ----------------------------------------------------------------------------------- fallbacks
def test_modes_and_off():
    scorer = AnswerScorer(RWKV7(ModelConfig(n_layer=1, d_model=16, head_size=8, vocab_size=32)), use_fs=False)
    assert fused.compile_scorer(scorer, "off") is scorer
    with pytest.raises(UsageError, match="unknown compile mode 'fast'"):
        fused.compile_scorer(scorer, "fast")


@pytest.fixture
def cxx():
    """Make TorchInductor use another C++ compiler for the test."""
    import torch._inductor.config as inductor_config

    patches = []

    def use(path):
        patch = inductor_config.patch({"cpp.cxx": (None, path)})
        patch.__enter__()
        patches.append(patch)

    fused._warn_fallback.cache_clear()
    yield use
    for patch in reversed(patches):
        patch.__exit__(None, None, None)
    fused._warn_fallback.cache_clear()


def test_no_compiler_auto_falls_back_said_once_on_is_one_clear_error(cxx):
    cxx("/no/such/c++")
    scorer = AnswerScorer(RWKV7(ModelConfig(n_layer=1, d_model=16, head_size=8, vocab_size=32)), use_fs=False)
    assert "/no/such/c++" in fused.unavailable_reason("cpu")
    with pytest.warns(RuntimeWarning, match=r"fused \(compiled\) training step is unavailable .*/no/such/c\+\+"):
        assert fused.compile_scorer(scorer, "auto") is scorer
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # said once: the second run of the process is quiet
        assert fused.compile_scorer(scorer, "auto") is scorer
    with pytest.raises(UsageError, match=r"compile='on'.*cannot be compiled here.*/no/such/c\+\+"):
        fused.compile_scorer(scorer, "on")


def test_unsupported_device_is_said():
    assert "meta devices is not supported" in fused.unavailable_reason("meta")


_BROKEN_COMPILE = """
import warnings, torch
import torch._inductor.config as inductor_config
from fsray import fused
from fsray.errors import UsageError
from fsray.model import RWKV7, ModelConfig
from fsray.trainer import AnswerScorer
inductor_config.cpp.cxx = (None, BROKEN)
torch.manual_seed(0)
scorer = AnswerScorer(RWKV7(ModelConfig(n_layer=1, d_model=16, head_size=8, vocab_size=32)), use_fs=False)
mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
prompt, answer = torch.randint(1, 32, (2, 4)) * mask, torch.randint(1, 32, (2, 2))
step = fused.compile_scorer(scorer, "auto")
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    out = step(prompt, mask, answer)
    again = step(prompt, mask, answer)
print("warnings", sum("compiling failed" in str(w.message) for w in said))
print("compiled", step.compiled, "compiling failed" in step.fallback_reason)
print("eager result", torch.equal(out, scorer(prompt, mask, answer)), torch.equal(again, out))
try:
    fused.compile_scorer(scorer, "on")(prompt, mask, answer)
except UsageError as exc:
    print("on:", exc)
"""


@needs_compiler
@pytest.mark.slow
def test_a_compile_that_fails_falls_back_to_eager(tmp_path):
    """A compiler that answers --version but fails to compile: auto trains on with the eager step,
    said once; on is one UsageError. (In a fresh process: Inductor caches what its compiler probes
    found, and a broken compiler must not leave that behind for the other tests.)"""
    broken = tmp_path / "broken-g++"
    broken.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then exec g++ --version; fi\n'
                      'echo "broken-g++: cannot compile" >&2\nexit 1\n')
    broken.chmod(0o755)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}   # nothing cached
    proc = subprocess.run([sys.executable, "-c", f"BROKEN = {str(broken)!r}\n" + _BROKEN_COMPILE],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "warnings 1" in lines   # said once, not at every step
    assert "compiled False True" in lines
    assert "eager result True True" in lines
    assert any(line.startswith("on:") and "could not be compiled" in line for line in lines), lines


def test_cache_goes_under_fsray_cache_dir_unless_chosen(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("FSRAY_CACHE_DIR", str(tmp_path / "fsray"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    fused._setup_cache()
    assert fused.cache_dir() == tmp_path / "fsray" / "inductor"
    assert __import__("os").environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "fsray" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())   # Inductor's own default: replaced
    fused._setup_cache()
    assert __import__("os").environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "fsray" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))   # the user's: kept
    fused._setup_cache()
    assert __import__("os").environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_fused_adamw_makes_the_foreach_update(monkeypatch):
    """The same updates as torch's default AdamW, the clipped gradients as torch's clip; after the
    first step (which creates the state through torch's own step) the direct fused path runs."""
    torchs_steps = []
    real_step = torch.optim.AdamW.step

    def counted(self, *args, **kw):
        torchs_steps.append(self)
        return real_step(self, *args, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    kw = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    opt_a = fused.adamw([{"params": params, "name": "model"}], **kw)
    opt_b = torch.optim.AdamW([{"params": twin, "name": "model"}], **kw)
    assert opt_a.defaults.get("fused") is True
    for step in range(3):
        for p, q in zip(params, twin):
            g = torch.randn(p.shape, generator=torch.Generator().manual_seed(step))
            p.grad, q.grad = g.clone(), g.clone()
        fused.clip_grad_norm_(params, 1.0)
        torch.nn.utils.clip_grad_norm_(twin, 1.0)
        opt_a.step()
        opt_b.step()
    for p, q in zip(params, twin):
        assert rel_err(p.detach(), q.detach()) <= 1e-6
    assert torchs_steps.count(opt_a) == 1 and torchs_steps.count(opt_b) == 3


# ----------------------------------------------------------------------------------- compiled vs eager
def test_prompt_lengths_recompile_at_most_once_and_match_eager():
    """The first length compiles static; the second recompiles with the length symbolic (the WKV
    op's fake included); later lengths reuse that graph. Every one matches the eager step. Dynamo
    and AOTAutograd only (backend aot_eager): Inductor's C++ build of two more graphs would cost
    minutes here, and its code for the graph is checked by the tests below."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = RWKV7(ModelConfig(n_layer=1, d_model=16, head_size=8, vocab_size=32))
    twin = copy.deepcopy(model)
    eager = AnswerScorer(model, use_fs=False)
    step = fused.compile_scorer(AnswerScorer(twin, use_fs=False), "on", backend="aot_eager")
    counters.clear()
    compiles = []
    for i, T in enumerate((9, 12, 7)):
        batch = tiny_batch(4, T, 32, seed=i)
        assert_same(loss_and_grads(step, twin, *batch), loss_and_grads(eager, model, *batch))
        compiles.append(counters["stats"]["unique_graphs"])
    assert compiles[1] > compiles[0], "a second prompt length should recompile (dynamic)"
    assert compiles[2] == compiles[1], f"a third length recompiled: {compiles}"


@needs_compiler
@pytest.mark.slow
def test_fused_step_matches_eager_on_the_embedded_default_with_fs(request):
    """The embedded default (fsray/assets/base_l2_d64.pth), FS on layer 1 with every gate kind
    trainable and the seed not detached: the gradient flows through the seed into layer 0's final
    state (the WKV op's s0 and sT gradients), the per-head and input gates."""
    spec = embedded_default_spec("query_after")
    data = task_data(spec)
    fs = FSConfig(fs_layer_start=1, alpha_init=-1.0, fs_detach=False, alpha_lr=1e-3, fs_variant="head",
                  fs_input_gate=True)
    model = initial_model(spec, 0, data.tokenizer.vocab_size)
    torch.manual_seed(3)
    model.attach_fs(fs)
    with torch.no_grad():   # gates away from their init, so every term of the gate is exercised
        for p in model.future_seed.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    twin = copy.deepcopy(model)
    eager = AnswerScorer(model, use_fs=True)
    step = fused.compile_scorer(AnswerScorer(twin, use_fs=True), "on")
    # as fsray.trainer.run_mode sets it (part of the compiled graph's guards: the run_mode test below
    # then reuses this graph instead of compiling its own)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    request.addfinalizer(lambda: torch.use_deterministic_algorithms(before[0], warn_only=before[1]))
    for i in range(2):
        b = data.batch("train", list(range(32 * i, 32 * (i + 1))))
        got = loss_and_grads(step, twin, b.prompt, b.prompt_mask, b.answer, b.answer_mask)
        want = loss_and_grads(eager, model, b.prompt, b.prompt_mask, b.answer, b.answer_mask)
        assert_same(got, want)
        assert {"future_seed.alpha", "future_seed.alpha_head", "future_seed.fs_in_w"} <= set(want[1])
    assert step.compiled and step.first_call_seconds is not None


@needs_compiler
def test_the_model_traces_in_one_graph_per_pass_with_fs():
    """No graph break anywhere in the scorer: the WKV ops are custom ops, padding needs no
    data-dependent branch (trace only: nothing is compiled)."""
    torch.manual_seed(0)
    model = RWKV7(ModelConfig(n_layer=2, d_model=16, head_size=8, vocab_size=32))
    model.attach_fs(FSConfig(fs_layer_start=1, fs_detach=False, fs_input_gate=True, alpha_lr=1e-3))
    explained = torch._dynamo.explain(AnswerScorer(model, use_fs=True))(*tiny_batch(3, 7, 32, seed=0)[:3])
    assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in explained.break_reasons]
    assert explained.graph_count == 1


@needs_compiler
def test_a_mask_that_is_not_left_padded_runs_eagerly():
    torch.manual_seed(0)
    model = RWKV7(ModelConfig(n_layer=1, d_model=16, head_size=8, vocab_size=32))
    scorer = AnswerScorer(model, use_fs=False)
    step = fused.compile_scorer(scorer, "on")
    prompt, mask, answer, _ = tiny_batch(3, 6, 32, seed=2)
    right = mask.flip(1)   # right padding: the eager model's gather path
    calls = []
    step._compiled = lambda *a, **k: calls.append(1)
    assert torch.equal(step(prompt, right, answer), scorer(prompt, right, answer))
    assert not calls


@needs_compiler
@pytest.mark.slow
def test_run_mode_with_compile_on_trains_like_the_eager_step():
    """The trainer's own loop (fsray.trainer.run_mode, spec.compile): the same run, compiled or not,
    ends at the same validation numbers (up to rounding; 12 steps of AdamW)."""
    from fsray.trainer import run_mode

    spec = embedded_default_spec("query_after")
    spec = spec.model_copy(update={
        "budget": spec.budget.model_copy(update={"steps": 12, "eval_every": 6, "warmup": 2}),
        "data": spec.data.model_copy(update={"n_val": 64, "eval_batch_size": 64})})
    fs = FSConfig(fs_layer_start=1, alpha_init=-1.0, fs_detach=False, alpha_lr=1e-3, fs_variant="head",
                  fs_input_gate=True)   # the graph of the test above: compiled once per session
    eager = run_mode(spec, 0, fs)
    compiled_run = run_mode(spec.model_copy(update={"compile": "on"}), 0, fs)
    assert eager["status"] == compiled_run["status"] == "ok"
    for (step_e, *metrics_e), (step_c, *metrics_c) in zip(eager["curve"], compiled_run["curve"]):
        assert step_e == step_c
        for e, c in zip(metrics_e, metrics_c):
            assert abs(e - c) <= 1e-4 * max(1.0, abs(e)), (eager["curve"], compiled_run["curve"])
