"""The compiled C WKV7 loop (fsray/wkv/cpu_kernel.c) against the per-token reference, and its build."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fsray.errors import UsageError
from fsray.wkv import compiled, wkv7
from fsray.wkv.compiled import wkv7_compiled
from fsray.wkv.reference import wkv7_reference
from test_wkv_torch import NAMES, assert_close_rel, make_inputs, run_with_grads

pytestmark = pytest.mark.skipif(
    not compiled.available(), reason=f"C kernel not built here: {compiled.unavailable_reason()}"
)


@pytest.fixture(params=["all states kept", "checkpoints recomputed"])
def state_mode(request, monkeypatch):
    """Both backward strategies: every state saved, or one per CHECKPOINT tokens and recomputation."""
    if request.param == "checkpoints recomputed":
        monkeypatch.setattr(compiled, "FULL_STATES_BYTES", 0)
        monkeypatch.setattr(compiled, "CHECKPOINT", 8)
    return request.param


@pytest.mark.parametrize(
    "shape, decay, s0",
    [
        ((2, 37, 3, 16), "rwkv", True),  # several checkpoint stretches, the last one partial
        ((1, 1, 2, 8), "rwkv", True),  # T = 1
        ((2, 5, 1, 4), "strong", False),  # generic head size, no s0
        ((2, 29, 2, 12), "strong", True),  # generic head size (not 8/16/32/64)
        ((1, 24, 2, 32), "rwkv", False),  # T a multiple of the checkpoint interval
        ((1, 9, 1, 64), "rwkv", True),  # the largest supported head size
    ],
)
def test_matches_reference_values_and_gradients(shape, decay, s0, state_mode):
    inputs = make_inputs(*shape, decay=decay, s0=s0)
    expected = run_with_grads(wkv7_reference, inputs)
    actual = run_with_grads(wkv7_compiled, inputs)
    assert set(actual) == set(expected)
    for name in expected:
        assert_close_rel(actual[name], expected[name], 1e-5, name)


@pytest.mark.parametrize("shape, s0", [((1, 5, 2, 3), True), ((2, 4, 1, 2), False), ((1, 11, 1, 16), True)])
def test_gradcheck_float64(shape, s0, state_mode):
    inputs = make_inputs(*shape, s0=s0, dtype=torch.float64, seed=7)
    names = [n for n in NAMES if inputs[n] is not None]

    def fn(*xs):
        kw = dict(zip(names, xs))
        y, sT = wkv7_compiled(*(kw.get(n) for n in NAMES))
        assert y.dtype == sT.dtype == torch.float64
        return y, sT

    assert torch.autograd.gradcheck(fn, [inputs[n] for n in names], eps=1e-6, atol=1e-7, rtol=1e-5)


def test_threads_split_heads_without_changing_results():
    inputs = make_inputs(3, 20, 5, 16, s0=True)  # 15 heads: uneven split over threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_with_grads(wkv7_compiled, inputs)
        torch.set_num_threads(4)
        four = run_with_grads(wkv7_compiled, inputs)
    finally:
        torch.set_num_threads(threads)
    for name in one:
        assert torch.equal(one[name], four[name]), name  # heads are independent: bitwise equal


def test_non_finite_values_propagate():
    """The trainer sees divergence through NaN losses: the kernel's fast-math flags must not hide them."""
    inputs = make_inputs(1, 6, 1, 8, s0=True)
    args = [inputs[n].detach().clone() for n in NAMES]
    args[3][0, 2, 0, 1] = float("nan")  # v at token 2
    y, sT = wkv7_compiled(*args)
    assert not torch.isnan(y[:, :2]).any() and torch.isnan(y[:, 2:]).any() and torch.isnan(sT).any()
    args[3][0, 2, 0, 1] = float("inf")
    y, _ = wkv7_compiled(*args)
    assert not torch.isfinite(y[:, 2:]).all()


def test_noncontiguous_low_precision_and_empty_inputs():
    inputs = make_inputs(2, 9, 3, 8, s0=True)
    views = {n: (x.detach().transpose(1, 2).contiguous().transpose(1, 2) if x.dim() == 4 else x.detach())
             for n, x in inputs.items()}
    y_ref, s_ref = wkv7_reference(*(views[n] for n in NAMES))
    y, s = wkv7(*(views[n] for n in NAMES), backend="compiled")
    assert_close_rel(y, y_ref, 1e-5, "y")
    assert_close_rel(s, s_ref, 1e-5, "sT")
    y_bf, s_bf = wkv7(*(views[n].to(torch.bfloat16) for n in NAMES[:6]), views["s0"], backend="compiled")
    assert y_bf.dtype == torch.bfloat16 and s_bf.dtype == torch.float32

    empty = make_inputs(2, 0, 3, 8, s0=True)
    y0, s0 = wkv7_compiled(*(empty[n] for n in NAMES))
    assert y0.shape == (2, 0, 3, 8)
    assert torch.equal(s0, empty["s0"].detach())


def test_refuses_what_it_cannot_do():
    big = [x.detach() if x is not None else None for x in make_inputs(1, 2, 1, 65, s0=False).values()]
    with pytest.raises(UsageError, match="head size up to 64"):
        wkv7(*big, backend="compiled")
    inputs = make_inputs(1, 4, 1, 4, s0=True)
    y, _ = wkv7_compiled(*(inputs[n] for n in NAMES))
    (grad_r,) = torch.autograd.grad(y.sum(), inputs["r"], create_graph=True)
    with pytest.raises(RuntimeError):
        grad_r.sum().backward()


def _in_fresh_process(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_builds_into_its_cache_and_falls_back_without_a_compiler(tmp_path):
    probe = (
        "import torch; from fsray.wkv import compiled, wkv7; "
        "x = [torch.randn(1, 3, 1, 4) for _ in range(6)]; y, s = wkv7(*x); "
        "print(compiled.available(), compiled.unavailable_reason() is None, y.shape == (1, 3, 1, 4))"
    )
    built = _in_fresh_process(probe, {"FSRAY_CACHE_DIR": str(tmp_path / "cache")})
    assert built.returncode == 0, built.stderr
    assert built.stdout.split() == ["True", "True", "True"]
    assert len(list((tmp_path / "cache" / "kernels").glob("wkv7_cpu_*.so"))) == 1

    # No compiler: auto falls back to the torch path; asking for 'compiled' is one clear error.
    no_cc = {"FSRAY_CACHE_DIR": str(tmp_path / "empty"), "CC": str(tmp_path / "no-such-cc")}
    fallback = _in_fresh_process(probe, no_cc)
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.split() == ["False", "False", "True"]
    assert "compiled WKV7 CPU kernel is unavailable" in fallback.stderr and "no-such-cc" in fallback.stderr
    refused = _in_fresh_process(
        "import torch; from fsray.errors import UsageError; from fsray.wkv import wkv7\n"
        "x = [torch.randn(1, 3, 1, 4) for _ in range(6)]\n"
        "try:\n    wkv7(*x, backend='compiled')\nexcept UsageError as e:\n    print(e)\n",
        no_cc,
    )
    assert "WKV backend 'compiled' is unavailable" in refused.stdout and "no-such-cc" in refused.stdout


# ----------------------------------------------------------------------------------- custom ops
# The same C kernels as torch custom ops (the path torch.compile sees; fsray.fused): the op must give
# the autograd.Function's numbers exactly, pass torch's own registration checks, and compile without
# breaking the graph.


@pytest.mark.parametrize("s0", [True, False])
def test_custom_op_matches_the_autograd_function_exactly(s0, state_mode):
    inputs = make_inputs(2, 37, 3, 16, s0=s0)
    eager = run_with_grads(lambda *x: wkv7_compiled(*x, use_op=False), inputs)
    op = run_with_grads(lambda *x: wkv7_compiled(*x, use_op=True), inputs)
    assert set(op) == set(eager)
    for name in eager:
        assert torch.equal(op[name], eager[name]), name


def test_custom_op_registration_passes_opcheck():
    inputs = make_inputs(2, 5, 2, 4, s0=True, dtype=torch.float64)
    x = {n: inputs[n].detach() for n in NAMES}
    fwd_args = (x["r"], x["logw"].exp(), x["k"], x["v"], x["a"], x["b"], x["s0"])
    leaves = tuple(t.clone().requires_grad_() for t in fwd_args)
    for full, checkpoint in ((True, compiled.CHECKPOINT), (False, 2)):
        torch.library.opcheck(torch.ops.fsray.wkv7_cpu_fwd.default, (*leaves, checkpoint, full))
        _, _, u, states = torch.ops.fsray.wkv7_cpu_fwd(*fwd_args, checkpoint, full)
        dy, dsT = torch.randn_like(x["r"]), torch.randn_like(x["s0"])
        torch.library.opcheck(torch.ops.fsray.wkv7_cpu_bwd.default,
                              (*fwd_args[:6], u, states, dy, dsT, checkpoint, full))


def test_the_ops_saved_tensors_are_not_differentiable_outputs():
    # u and the states are kept for the backward only: no gradient (and no zero tensor of their size).
    inputs = make_inputs(1, 9, 2, 8, s0=True)
    x = [inputs[n] for n in NAMES]
    y, sT, u, states = torch.ops.fsray.wkv7_cpu_fwd(x[0], x[1].exp(), *x[2:], compiled.CHECKPOINT, True)
    assert y.requires_grad and sT.requires_grad and not u.requires_grad and not states.requires_grad
    (dv_y_only,) = torch.autograd.grad(wkv7_compiled(*x, use_op=True)[0].sum(), [x[3]])
    (dv_want,) = torch.autograd.grad(wkv7_compiled(*x, use_op=False)[0].sum(), [x[3]])
    assert torch.equal(dv_y_only, dv_want)


def test_gradcheck_float64_through_the_custom_op():
    inputs = make_inputs(1, 7, 2, 3, s0=True, dtype=torch.float64, seed=3)
    xs = [inputs[n] for n in NAMES]
    assert torch.autograd.gradcheck(lambda *a: wkv7_compiled(*a, use_op=True), xs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_compiles_in_one_graph_and_matches_eager():
    """torch.compile(fullgraph=True) would raise on a graph break: the op and the dispatch around it
    trace whole, forward and backward (the backward op inside AOTAutograd's backward graph)."""
    inputs = make_inputs(2, 13, 2, 8, s0=True)

    def fn(r, logw, k, v, a, b, s0):
        y, sT = wkv7(r * 1.5, logw, k, v, a, b, s0, backend="compiled")
        return y.tanh(), sT * 2

    expected = run_with_grads(fn, inputs)
    actual = run_with_grads(torch.compile(fn, fullgraph=True), inputs)
    for name in expected:
        assert_close_rel(actual[name], expected[name], 1e-5, name)
