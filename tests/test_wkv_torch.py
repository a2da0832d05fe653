"""The chunked torch WKV7 path against the per-token reference, and the backend dispatch."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from fsray.errors import UsageError
from fsray.wkv import compiled, wkv7
from fsray.wkv.chunked import LOGW_FLOOR, MAX_LOG_RANGE, pick_chunk, wkv7_chunked
from fsray.wkv.reference import wkv7_reference

NAMES = ("r", "logw", "k", "v", "a", "b", "s0")


def make_inputs(B, T, H, N, *, decay="rwkv", s0=True, dtype=torch.float32, seed=0):
    """Inputs shaped like the model makes them: a = -kk, b = kk * gate with kk L2-normalised keys."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    kk = F.normalize(randn(B, T, H, N), dim=-1)
    gate = torch.rand(B, T, H, N, generator=g, dtype=dtype)
    if decay == "rwkv":  # the model's range: log w = -e^{-1/2} sigmoid(z), in (-0.61, 0)
        logw = -0.6065306597126334 * torch.sigmoid(randn(B, T, H, N) * 2)
    elif decay == "strong":  # w down to e^{-25}: forces short chunks
        logw = -25.0 * torch.rand(B, T, H, N, generator=g, dtype=dtype)
    else:
        raise ValueError(decay)
    inputs = {
        "r": randn(B, T, H, N),
        "logw": logw,
        "k": randn(B, T, H, N) * 0.5,
        "v": randn(B, T, H, N),
        "a": -kk,
        "b": kk * gate,
        "s0": randn(B, H, N, N) if s0 else None,
    }
    return {name: (x.requires_grad_() if x is not None else None) for name, x in inputs.items()}


def run_with_grads(fn, inputs, seed=1):
    """Outputs and the gradient of a random linear function of (y, sT) w.r.t. every input."""
    for x in inputs.values():
        if x is not None:
            x.grad = None
    y, sT = fn(*(inputs[n] for n in NAMES))
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + (sT * torch.randn(sT.shape, generator=g, dtype=sT.dtype)).sum()
    loss.backward()
    out = {"y": y.detach(), "sT": sT.detach()}
    out.update({n: inputs[n].grad for n in NAMES if inputs[n] is not None})
    return out


def assert_close_rel(actual, expected, rtol, what):
    scale = expected.abs().max().clamp_min(1e-30)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= rtol, f"{what}: max error {err:.2e} relative to max |value|, tolerance {rtol:.0e}"


@pytest.mark.parametrize(
    "shape, decay, s0, chunk",
    [
        ((2, 37, 3, 16), "rwkv", True, None),  # T not a multiple of any chunk
        ((2, 37, 3, 16), "rwkv", True, 8),  # several chunks plus a padded one
        ((1, 1, 2, 8), "rwkv", True, None),  # T = 1
        ((2, 1, 1, 4), "strong", False, None),
        ((1, 64, 2, 8), "rwkv", False, 16),  # exact multiple, s0=None
        ((2, 29, 2, 16), "strong", True, None),  # strong decays: chunks of one or two tokens
        ((1, 96, 1, 32), "rwkv", True, 32),
    ],
)
def test_matches_reference_values_and_gradients(shape, decay, s0, chunk):
    inputs = make_inputs(*shape, decay=decay, s0=s0)
    expected = run_with_grads(wkv7_reference, inputs)
    actual = run_with_grads(lambda *xs: wkv7_chunked(*xs, chunk=chunk), inputs)
    assert set(actual) == set(expected)
    for name in expected:
        assert_close_rel(actual[name], expected[name], 1e-5, name)


def test_long_sequence_stays_exact():
    """Many chunks: the state pass must not drift from the per-token recurrence."""
    inputs = make_inputs(1, 256, 2, 16, s0=True, seed=3)
    expected = run_with_grads(wkv7_reference, inputs)
    actual = run_with_grads(lambda *xs: wkv7_chunked(*xs, chunk=16), inputs)
    for name in expected:
        assert_close_rel(actual[name], expected[name], 1e-5, name)


@pytest.mark.parametrize(
    "shape, decay, s0, chunk",
    [((1, 5, 1, 3), "rwkv", True, 2), ((1, 3, 1, 3), "strong", True, None), ((2, 4, 1, 2), "rwkv", False, 3)],
)
def test_gradcheck_float64(shape, decay, s0, chunk):
    inputs = make_inputs(*shape, decay=decay, s0=s0, dtype=torch.float64, seed=7)
    names = [n for n in NAMES if inputs[n] is not None]

    def fn(*xs):
        kw = dict(zip(names, xs))
        y, sT = wkv7_chunked(*(kw.get(n) for n in NAMES), chunk=chunk)
        assert y.dtype == sT.dtype == torch.float64
        return y, sT

    assert torch.autograd.gradcheck(fn, [inputs[n] for n in names], eps=1e-6, atol=1e-7, rtol=1e-5)


def test_chunk_length_respects_decay_range():
    mild = torch.full((1, 100, 1, 4), -0.6)
    assert pick_chunk(100, mild, 64) == 50  # 2 balanced chunks, 64 * 0.6 <= MAX_LOG_RANGE
    assert pick_chunk(100, mild, 32) == 25
    strong = torch.full((1, 100, 1, 4), -15.0)
    assert pick_chunk(100, strong, 64) * 15.0 <= MAX_LOG_RANGE
    beyond_floor = torch.full((1, 7, 1, 4), 2 * LOGW_FLOOR)
    assert pick_chunk(7, beyond_floor, 64) == 1
    assert pick_chunk(1, mild[:, :1], None) == 1
    assert pick_chunk(36, mild, None) == 12  # default cap 16 for N=4: three balanced chunks


def test_decay_below_the_floor_is_zero_to_float32_resolution():
    inputs = make_inputs(1, 6, 1, 4, s0=True)
    with torch.no_grad():
        inputs["logw"][:, 2] = -200.0  # w = e^{-200}: the state is wiped at step 2
    y_ref, s_ref = wkv7_reference(*(inputs[n] for n in NAMES))
    y, s = wkv7_chunked(*(inputs[n] for n in NAMES))
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    assert_close_rel(y, y_ref, 1e-5, "y")
    assert_close_rel(s, s_ref, 1e-5, "sT")


def test_noncontiguous_views_and_empty_sequence():
    inputs = make_inputs(2, 9, 3, 8, s0=True)
    # [B, H, T, N] storage viewed as [B, T, H, N], like a model's transposed activations
    views = {n: (x.detach().transpose(1, 2).contiguous().transpose(1, 2) if x.dim() == 4 else x.detach())
             for n, x in inputs.items()}
    y_ref, s_ref = wkv7_reference(*(views[n] for n in NAMES))
    y, s = wkv7_chunked(*(views[n] for n in NAMES), chunk=4)
    assert_close_rel(y, y_ref, 1e-5, "y")
    assert_close_rel(s, s_ref, 1e-5, "sT")

    empty = make_inputs(2, 0, 3, 8, s0=True)
    y0, s0 = wkv7_chunked(*(empty[n] for n in NAMES))
    assert y0.shape == (2, 0, 3, 8)
    assert torch.equal(s0, empty["s0"].detach())


def test_padding_tokens_leave_the_state_untouched():
    """k = v = a = b = 0 with log w = 0 (how the model pads) must pass the state through exactly."""
    inputs = make_inputs(1, 10, 2, 8, s0=True)
    padded = {n: x.detach().clone() if x is not None else None for n, x in inputs.items()}
    for n in ("k", "v", "a", "b", "logw"):
        padded[n][:, 6:] = 0.0
    _, s_full = wkv7_chunked(*(padded[n] for n in NAMES), chunk=4)
    _, s_short = wkv7_chunked(*(padded[n][:, :6] if n != "s0" else padded[n] for n in NAMES), chunk=4)
    assert_close_rel(s_full, s_short, 1e-6, "sT")


def test_dispatch_backends_and_dtypes():
    inputs = make_inputs(2, 11, 2, 8, s0=True)
    args = [inputs[n].detach() for n in NAMES]
    y_auto, s_auto = wkv7(*args)  # CPU tensors: auto is the compiled C loop (torch without a compiler)
    y_fast, s_fast = wkv7(*args, backend="compiled" if compiled.available() else "torch")
    assert torch.equal(y_auto, y_fast) and torch.equal(s_auto, s_fast)
    y_torch, s_torch = wkv7(*args, backend="torch")
    y_ref, s_ref = wkv7(*args, backend="reference")
    assert_close_rel(y_torch, y_ref, 1e-5, "y")

    half = [x.to(torch.bfloat16) for x in args[:6]] + [args[6]]
    y_bf, s_bf = wkv7(*half, backend="torch")
    assert y_bf.dtype == torch.bfloat16 and s_bf.dtype == torch.float32
    y64, s64 = wkv7(*[x.double() for x in args], backend="torch")
    assert y64.dtype == s64.dtype == torch.float64


def test_dispatch_rejects_bad_input_with_one_clear_error():
    args = [x.detach() if x is not None else None for x in make_inputs(1, 4, 2, 8, s0=True).values()]
    with pytest.raises(UsageError, match="unknown WKV backend 'cuda'"):
        wkv7(*args, backend="cuda")
    with pytest.raises(UsageError, match="input k has shape"):
        wkv7(args[0], args[1], args[2][:, :3], *args[3:])
    with pytest.raises(UsageError, match="initial state s0"):
        wkv7(*args[:6], args[6][:, :1])
    with pytest.raises(UsageError, match=r"\[B, T, H, N\]"):
        wkv7(*[x[0] for x in args[:6]])
    with pytest.raises(UsageError, match="NaN"):
        bad = args[1].clone()
        bad[0, 0, 0, 0] = float("nan")
        wkv7(args[0], bad, *args[2:], backend="torch")
    with pytest.raises(UsageError, match="chunk length"):
        wkv7_chunked(*args, chunk=0)


def test_fla_backend_errors_clearly_on_cpu_or_when_missing():
    args = [x.detach() for x in make_inputs(1, 4, 2, 8, s0=True).values()]
    expected = "CUDA" if importlib.util.find_spec("fla") else "flash-linear-attention"
    with pytest.raises(UsageError, match=expected):
        wkv7(*args, backend="fla")


def test_double_backward_is_refused_not_silently_wrong():
    inputs = make_inputs(1, 4, 1, 4, s0=True)
    y, _ = wkv7_chunked(*(inputs[n] for n in NAMES))
    (grad_r,) = torch.autograd.grad(y.sum(), inputs["r"], create_graph=True)
    with pytest.raises(RuntimeError):
        grad_r.sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "fla"])
def test_gpu_backends_match_reference(backend):
    """Where a GPU is lent: the torch path on CUDA tensors, and fla's layout/decay mapping (or, where
    the optional extra is not installed, the one clear error that says how to get it)."""
    inputs = make_inputs(2, 100, 2, 64, s0=True)
    cpu = [inputs[n].detach() for n in NAMES]
    if backend == "fla" and importlib.util.find_spec("fla") is None:
        with pytest.raises(UsageError, match="flash-linear-attention"):
            wkv7(*[x.cuda() for x in cpu], backend=backend)
        return
    y_ref, s_ref = wkv7_reference(*cpu)
    y, s = wkv7(*[x.cuda() for x in cpu], backend=backend)
    tol = 1e-5 if backend == "torch" else 2e-3  # fla computes the intra-chunk products in tf32/bf16
    assert_close_rel(y.cpu(), y_ref, tol, "y")
    assert_close_rel(s.cpu(), s_ref, tol, "sT")
