"""The Triton WKV7 kernel as torch custom ops (fsray::wkv7_triton_fwd/_bwd), the path torch.compile
sees on a GPU: the same numbers as its autograd.Function, and no graph break.

Without a GPU the kernel runs in Triton's CPU interpreter (as in test_wkv_triton.py), and the compiled
graph around it is Inductor's CPU code; on a machine with CUDA the same tests run the real kernel
inside a Triton-compiled graph. Shapes stay tiny: the interpreter is slow.
"""

import os

import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
_FLAG_BEFORE = os.environ.get("TRITON_INTERPRET")
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed: the Triton WKV7 kernel cannot run")

from fsray import fused  # noqa: E402
from fsray.wkv.triton_kernel import wkv7_triton  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
NAMES = ("r", "logw", "k", "v", "a", "b", "s0")


@pytest.fixture(autouse=True, scope="module")
def _interpreter_only_for_this_module():
    if not ON_GPU:
        os.environ["TRITON_INTERPRET"] = "1"
    yield
    if _FLAG_BEFORE is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _FLAG_BEFORE


def make_inputs(B, T, H, N, dtype=torch.float32, with_s0=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    kk = torch.nn.functional.normalize(randn(B, T, H, N), dim=-1)
    logw = -torch.exp(-0.5 - torch.nn.functional.softplus(-randn(B, T, H, N)))
    xs = [randn(B, T, H, N), logw, randn(B, T, H, N) * 0.5, randn(B, T, H, N), -kk,
          kk * torch.rand(B, T, H, N, generator=g), randn(B, H, N, N) * 0.5 if with_s0 else None]
    dtypes = [dtype] * 6 + [torch.float32]
    return [None if x is None else x.to(device=DEVICE, dtype=dt).requires_grad_() for x, dt in zip(xs, dtypes)]


def outputs_and_grads(fn, inputs, seed=1):
    y, sT = fn(*inputs)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g).to(DEVICE)
    gs = torch.randn(sT.shape, generator=g).to(DEVICE)
    loss = (y.float() * gy).sum() + (sT * gs).sum()
    named = [(n, x) for n, x in zip(NAMES, inputs) if x is not None]
    grads = torch.autograd.grad(loss, [x for _, x in named])
    return {"y": y.detach(), "sT": sT.detach(), **{f"d{n}": gr for (n, _), gr in zip(named, grads)}}


@pytest.mark.parametrize(("dtype", "with_s0"), [(torch.float32, True), (torch.float32, False),
                                                (torch.bfloat16, True)], ids=["fp32-s0", "fp32", "bf16-s0"])
def test_custom_op_matches_the_autograd_function_exactly(dtype, with_s0):
    inputs = make_inputs(1, 11, 1, 16, dtype=dtype, with_s0=with_s0)
    want = outputs_and_grads(lambda *x: wkv7_triton(*x, chunk=4, use_op=False), inputs)
    got = outputs_and_grads(lambda *x: wkv7_triton(*x, chunk=4, use_op=True), inputs)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert torch.equal(got[name], want[name]), name


@pytest.mark.skipif(fused.unavailable_reason(DEVICE) is not None, reason=f"cannot compile: {fused.unavailable_reason(DEVICE)}")
def test_compiles_in_one_graph_and_matches_eager():
    inputs = make_inputs(2, 9, 2, 16)

    def fn(r, logw, k, v, a, b, s0):
        y, sT = wkv7_triton(r * 1.5, logw, k, v, a, b, s0, chunk=4)
        return y.tanh(), sT * 2

    want = outputs_and_grads(fn, inputs)
    got = outputs_and_grads(torch.compile(fn, fullgraph=True), inputs)
    for name in want:
        scale = want[name].abs().max().clamp_min(1e-30)
        err = ((got[name] - want[name]).abs().max() / scale).item()
        assert err <= 1e-5, f"{name}: {err:.1e}"
