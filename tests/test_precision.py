"""The precision policy (fsray.precision) on the CPU, where torch autocasts to bf16 as on a GPU: auto's
resolution, bf16 training of the embedded default against fp32, every WKV backend's gradients under bf16
autocast against fp32, and baselines never paired across precisions."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fsray.fsconfig import FSConfig
from fsray.model import RWKV7, ModelConfig
from fsray.precision import autocast, resolve
from fsray.records import build_record
from fsray.spec import TrainSpec, baseline_key, embedded_default_spec
from fsray.trainer import run_mode

# bf16 keeps 8 bits of mantissa (2^-8 ~ 4e-3 relative per rounding); a short fine-tune of the embedded
# default compounds a few hundred of them. Measured: loss curves within 0.2%, same accuracies.
LOSS_RTOL = 0.02
ACC_ATOL = 0.04
GRAD_RTOL = 0.025  # each parameter's gradient, relative to its largest magnitude (measured: <= 0.009)


def test_auto_is_bf16_on_cuda_and_fp32_on_the_cpu():
    assert resolve("auto", "cpu") == "fp32" and resolve("auto", torch.device("cuda", 1)) == "bf16"
    assert resolve("bf16", "cpu") == "bf16" and resolve("fp32", "cuda") == "fp32"
    with autocast("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def _short_default(precision: str) -> TrainSpec:
    spec = embedded_default_spec().model_dump()
    spec["budget"].update(steps=60, eval_every=20)
    spec["data"].update(n_val=64, eval_batch_size=64)
    return TrainSpec.model_validate({**spec, "precision": precision})


def test_bf16_trains_the_embedded_default_within_tolerance_of_fp32():
    runs = {p: run_mode(_short_default(p), 0, None) for p in ("fp32", "bf16")}
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    assert bf16["status"] == "ok" and bf16["init_hash"] == fp32["init_hash"]
    assert [c[0] for c in bf16["curve"]] == [c[0] for c in fp32["curve"]]
    for (step, acc32, loss32, seq32), (_, acc16, loss16, seq16) in zip(fp32["curve"], bf16["curve"]):
        assert abs(loss16 - loss32) <= LOSS_RTOL * loss32, f"step {step}: loss {loss16} vs {loss32}"
        assert abs(acc16 - acc32) <= ACC_ATOL and abs(seq16 - seq32) <= ACC_ATOL, f"step {step}"
    assert fp32["loss"] < fp32["curve"][0][2] or fp32["token_acc"] >= fp32["curve"][0][1]  # it trained


BACKENDS = ["reference", "torch", "compiled"]
if importlib.util.find_spec("triton") is not None:
    BACKENDS.append("triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backends_gradients_in_bf16_match_fp32(backend, monkeypatch):
    if backend == "triton":
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # read at launch: the kernel runs in the interpreter
    torch.manual_seed(0)
    model = RWKV7(ModelConfig(n_layer=2, d_model=32, head_size=16, vocab_size=64), wkv_backend=backend)
    model.attach_fs(FSConfig(fs_layer_start=1, alpha_init=0.0))
    idx = torch.randint(1, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    grads = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with autocast(precision, "cpu"):
            out = model(idx, use_fs=True)
        assert out.state[0].wkv.dtype == torch.float32  # the WKV state stays fp32 under autocast
        loss = torch.nn.functional.cross_entropy(out.logits.float().flatten(0, 1), idx.flatten())
        loss.backward()
        grads[precision] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        if precision == "bf16":
            assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
            assert all(g.dtype == torch.float32 for g in grads["bf16"].values())
    assert set(grads["bf16"]) == set(grads["fp32"]) and len(grads["fp32"]) > 20
    worst = 0.0
    for name, g32 in grads["fp32"].items():
        scale = g32.abs().max()
        if scale == 0:
            continue
        err = ((grads["bf16"][name] - g32).abs().max() / scale).item()
        worst = max(worst, err)
        assert err <= GRAD_RTOL, f"{backend} d{name}: bf16 vs fp32 relative error {err:.3f}"
    print(f"{backend}: worst bf16 vs fp32 gradient error {worst:.4f}")


def _run(precision, acc=0.5):
    return {"mode": "no_fs", "status": "ok", "failure": None, "token_acc": acc, "loss": 1.0, "seq_acc": acc,
            "precision": precision}


def test_a_baseline_is_never_paired_with_a_run_of_another_precision():
    fs = FSConfig(fs_layer_start=1)
    rec = build_record("t", fs, 0, _run("fp32"), {**_run("bf16"), "mode": "prompt_fs"}, "train")
    assert rec["status"] == "failed" and "precision differs: baseline ran in fp32, prompt_fs in bf16" in rec["failure"]
    ok = build_record("t", fs, 0, _run("bf16"), {**_run("bf16"), "mode": "prompt_fs"}, "train")
    assert ok["status"] == "ok" and ok["baseline"]["precision"] == ok["fs"]["precision"] == "bf16"
    old = {k: v for k, v in _run("fp32").items() if k != "precision"}   # a cached baseline from before
    assert build_record("t", fs, 0, old, {**_run("fp32"), "mode": "prompt_fs"}, "train")["status"] == "ok"
    assert build_record("t", fs, 0, old, {**_run("bf16"), "mode": "prompt_fs"}, "train")["status"] == "failed"


def test_baseline_keys_carry_the_resolved_precision():
    spec = embedded_default_spec()
    auto, fp32, bf16 = (spec.model_copy(update={"precision": p}) for p in ("auto", "fp32", "bf16"))
    # auto and fp32 on the CPU train the same numbers as every run before the policy: the same key
    assert baseline_key(auto, 3) == baseline_key(fp32, 3) == baseline_key(auto, 3, "fp32")
    assert baseline_key(bf16, 3) == baseline_key(auto, 3, "bf16") != baseline_key(fp32, 3)


def test_the_search_keys_auto_by_the_workers_device(tmp_path):
    from fsray.search.evaluate import RealRunner
    from fsray.search.space import SearchSpace

    def runner(**resources):
        space = SearchSpace.model_validate({
            "name": "p", "base": "embedded_default", "task": {"name": "kv_retrieval"}, "seeds": 2,
            "space": {"alpha_init": {"type": "float", "low": -2, "high": 0}}, "resources": resources})
        return RealRunner(space, n_layer=2)

    cpu, gpu = runner(), runner(gpus_per_worker=0.25)
    assert cpu.spec.precision == gpu.spec.precision == "auto"
    assert cpu.baseline_key(0) == baseline_key(cpu.spec, 0, "fp32")
    assert gpu.baseline_key(0) == baseline_key(gpu.spec, 0, "bf16") != cpu.baseline_key(0)
