"""The fla backend's glue: argument mapping (decay, state layout, fla's RWKV7-layer gate settings), the
custom ops torch.compile sees, and one-line errors.

fla's kernels need a GPU, so on the CPU a stand-in ``chunk_rwkv7`` with fla's signature and layouts
(state [B, H, key, value]) computes with the chunked torch path; it records what it was passed. On a
GPU with fla installed, the real kernels are checked against the reference too.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from fsray.errors import RunFailed, UsageError
from fsray.wkv import fla_backend, wkv7
from fsray.wkv.chunked import wkv7_chunked
from fsray.wkv.reference import wkv7_reference
from test_wkv_torch import NAMES, assert_close_rel, make_inputs, run_with_grads

HAS_FLA = importlib.util.find_spec("fla") is not None


class StandIn:
    """fla's ``chunk_rwkv7`` signature (0.6: safe_gate, lower_bound, chunk_size) over the torch path."""

    def __init__(self):
        self.calls = []

    def __call__(self, r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False,
                 cu_seqlens=None, safe_gate=False, chunk_size=None, lower_bound=None):
        self.calls.append(dict(safe_gate=safe_gate, lower_bound=lower_bound, chunk_size=chunk_size,
                               scale=scale, output_final_state=output_final_state))
        assert initial_state is None or initial_state.dtype == torch.float32
        s0 = None if initial_state is None else initial_state.transpose(-1, -2)
        y, sT = wkv7_chunked(r, w, k, v, a, b, s0)
        return y.to(r.dtype), sT.transpose(-1, -2)  # fla's [key, value] layout


@pytest.fixture
def stand_in(monkeypatch):
    fake = StandIn()
    monkeypatch.setattr(fla_backend, "_chunk_rwkv7", lambda: fake)
    monkeypatch.setattr(fla_backend, "_check_device", lambda r: None)
    return fake


def as_list(inputs):
    return [inputs[n] for n in NAMES]


@pytest.mark.parametrize("use_op", [False, True], ids=["eager", "custom_op"])
@pytest.mark.parametrize("s0", [True, False])
def test_values_and_gradients_match_the_reference(stand_in, use_op, s0):
    inputs = make_inputs(2, 11, 2, 8, s0=s0)
    got = run_with_grads(lambda *x: fla_backend.wkv7_fla(*x, use_op=use_op), inputs)
    want = run_with_grads(wkv7_reference, inputs)
    assert set(got) == set(want)
    for name in want:
        assert_close_rel(got[name], want[name], 1e-5, name)


def test_passes_the_gate_settings_of_flas_own_rwkv7_layer_within_the_bound(stand_in):
    inputs = make_inputs(1, 5, 1, 8)  # the model's range: log w in (-e^{-1/2}, 0)
    wkv7(*as_list(inputs), backend="fla")
    assert stand_in.calls[-1] == dict(safe_gate=True, lower_bound=fla_backend.RWKV7_LOGW_BOUND, chunk_size=64,
                                      scale=1.0, output_final_state=True)
    strong = make_inputs(1, 5, 1, 8, decay="strong")  # beyond the bound: fla's general path
    y, _ = wkv7(*as_list(strong), backend="fla")
    assert stand_in.calls[-1]["safe_gate"] is False and stand_in.calls[-1]["lower_bound"] is None
    assert_close_rel(y, wkv7_reference(*as_list(strong))[0], 1e-5, "y, strong decay")


def test_an_older_release_gets_only_the_arguments_it_has(monkeypatch):
    seen = {}

    def old_chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
        seen["called"] = True
        y, sT = wkv7_chunked(r, w, k, v, a, b, None if initial_state is None else initial_state.mT)
        return y, sT.mT

    monkeypatch.setattr(fla_backend, "_chunk_rwkv7", lambda: old_chunk_rwkv7)
    monkeypatch.setattr(fla_backend, "_check_device", lambda r: None)
    inputs = make_inputs(1, 4, 1, 8)
    y, sT = wkv7(*as_list(inputs), backend="fla")
    assert seen["called"]
    assert_close_rel(sT, wkv7_reference(*as_list(inputs))[1], 1e-5, "sT")


def test_compiles_in_one_graph(stand_in):
    inputs = make_inputs(1, 7, 2, 8)

    def fn(r, logw, k, v, a, b, s0):
        y, sT = wkv7(r * 1.5, logw, k, v, a, b, s0, backend="fla")
        return y.tanh(), sT * 2

    want = run_with_grads(fn, inputs)
    got = run_with_grads(torch.compile(fn, fullgraph=True, backend="aot_eager"), inputs)
    for name in want:
        assert_close_rel(got[name], want[name], 1e-5, name)


def test_custom_ops_pass_opcheck(stand_in):
    inputs = make_inputs(1, 4, 1, 4)
    x = [t.detach() for t in as_list(inputs)]
    torch.library.opcheck(torch.ops.fsray.wkv7_fla_fwd.default, tuple(x),
                          test_utils=("test_schema", "test_faketensor"))


def test_every_failure_is_one_line(monkeypatch):
    inputs = [t.detach() for t in as_list(make_inputs(1, 3, 1, 8))]

    def broken(**kwargs):
        raise AssertionError("triton compilation failed\n  File kernel.py, line 3\n  ...")

    monkeypatch.setattr(fla_backend, "_chunk_rwkv7", lambda: broken)
    monkeypatch.setattr(fla_backend, "_check_device", lambda r: None)
    with pytest.raises(RunFailed) as err:
        wkv7(*inputs, backend="fla")
    assert str(err.value) == "WKV backend 'fla' failed: AssertionError: triton compilation failed"
    monkeypatch.undo()

    monkeypatch.setitem(sys.modules, "fla.ops.rwkv7", None)  # what an absent package raises
    with pytest.raises(UsageError, match=r"pip install 'fsray\[fla\]' \(import failed: ModuleNotFoundError"):
        wkv7(*inputs, backend="fla")


@pytest.mark.skipif(not HAS_FLA or torch.cuda.is_available(), reason="fla installed on a CPU machine")
def test_cpu_tensors_are_refused_in_one_line():
    inputs = [t.detach() for t in as_list(make_inputs(1, 3, 1, 8))]
    with pytest.raises(UsageError, match="needs|CUDA device"):
        wkv7(*inputs, backend="fla")


@pytest.mark.skipif(not (HAS_FLA and torch.cuda.is_available()), reason="needs fla and a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_fla_kernels_match_the_reference_on_a_gpu(dtype):
    inputs = [x.detach() for x in as_list(make_inputs(2, 100, 2, 64))]
    cuda = [x.to("cuda", dtype if i < 6 else torch.float32).requires_grad_() for i, x in enumerate(inputs)]
    ref = [x.detach().float().requires_grad_() for x in cuda]
    g = torch.Generator().manual_seed(1)
    gy, gs = torch.randn(inputs[0].shape, generator=g).cuda(), torch.randn(inputs[6].shape, generator=g).cuda()
    results = []
    for fn, leaves in ((lambda *x: wkv7(*x, backend="fla"), cuda), (wkv7_reference, ref)):
        y, sT = fn(*leaves)
        grads = torch.autograd.grad((y.float() * gy).sum() + (sT * gs).sum(), leaves)
        results.append([y.detach(), sT.detach(), *grads])
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-3
    for name, got, want in zip(["y", "sT", *NAMES], *results):
        assert_close_rel(got.float(), want, tol, name)
