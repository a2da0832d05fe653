"""The Triton WKV7 kernel against the per-token reference, forward and backward.

Without a GPU the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1). The flag is set
before triton is imported, as triton's own jit helpers need; the kernel itself is built at launch
and also works when the flag comes after triton was imported elsewhere. On a machine with CUDA the
same tests run the compiled kernel instead. The interpreter is slow: shapes stay tiny.
"""

import os

import torch

# torch does not import triton, so the flag is still in time here.
ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
_FLAG_BEFORE = os.environ.get("TRITON_INTERPRET")
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed: the Triton WKV7 kernel cannot run")

from fsray.errors import UsageError  # noqa: E402
from fsray.wkv.reference import wkv7_reference  # noqa: E402
from fsray.wkv.triton_kernel import wkv7_triton  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
NAMES = ("r", "logw", "k", "v", "a", "b", "s0")


@pytest.fixture(autouse=True, scope="module")
def _interpreter_only_for_this_module():
    """Keep the interpreter on for these tests and give the process its old flag back after."""
    if not ON_GPU:
        os.environ["TRITON_INTERPRET"] = "1"
    yield
    if _FLAG_BEFORE is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _FLAG_BEFORE


def make_inputs(B, T, H, N, dtype=torch.float32, with_s0=True, seed=0):
    """Inputs shaped like the model's: decays in (0.545, 1), a = -kk, b = kk * gate, |kk| = 1."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    kk = torch.nn.functional.normalize(randn(B, T, H, N), dim=-1)
    logw = -torch.exp(-0.5 - torch.nn.functional.softplus(-randn(B, T, H, N)))
    inputs = [
        randn(B, T, H, N),
        logw,
        randn(B, T, H, N) * 0.5,
        randn(B, T, H, N),
        -kk,
        kk * torch.rand(B, T, H, N, generator=g),
        randn(B, H, N, N) * 0.5 if with_s0 else None,
    ]
    dtypes = [dtype] * 6 + [torch.float32]  # the state is float32 whatever the inputs are
    return [
        None if x is None else x.to(device=DEVICE, dtype=dt).requires_grad_()
        for x, dt in zip(inputs, dtypes)
    ]


def reference_on(inputs):
    """The reference in float32 on the same (possibly bf16-rounded) values, with its own leaves."""
    leaves = [None if x is None else x.detach().float().requires_grad_() for x in inputs]
    return leaves, wkv7_reference(*leaves)


def grads(outputs, leaves, gy, gs):
    """Gradients of <y, gy> + <sT, gs> (gs: an incoming gradient on the final state)."""
    y, sT = outputs
    loss = (y.float() * gy).sum() + (sT * gs).sum()
    named = [(n, x) for n, x in zip(NAMES, leaves) if x is not None]
    return dict(zip([n for n, _ in named], torch.autograd.grad(loss, [x for _, x in named])))


def assert_rel_close(actual, expected, tol, what):
    """max |actual - expected| <= tol * max |expected|: rounding errors scale with the tensor."""
    actual, expected = actual.detach().float(), expected.detach().float()
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().clamp_min(1e-30)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def check_against_reference(inputs, tol_y, tol_grad, **kw):
    y, sT = wkv7_triton(*inputs, **kw)
    leaves, (y_ref, sT_ref) = reference_on(inputs)
    assert y.dtype == inputs[0].dtype and sT.dtype == torch.float32
    assert_rel_close(y, y_ref, tol_y, "y")
    assert_rel_close(sT, sT_ref, 1e-5, "sT")

    g = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=g).to(DEVICE)
    gs = torch.randn(sT.shape, generator=g).to(DEVICE)
    got = grads((y, sT), inputs, gy, gs)
    want = grads((y_ref, sT_ref), leaves, gy, gs)
    assert set(got) == set(want)
    for name in got:
        x = inputs[NAMES.index(name)]
        assert got[name].dtype == x.dtype, f"d{name} dtype"
        assert_rel_close(got[name], want[name], tol_grad, f"d{name}")


@pytest.mark.parametrize(
    ("with_s0", "T", "chunk"), [(True, 37, 16), (False, 21, 8)], ids=["s0", "no_s0"]
)
def test_fp32_matches_reference_across_chunks_padding_and_row_blocks(with_s0, T, chunk):
    # T=37 with chunk 16 (21 with 8): two full chunks and a partial one; block_v=8 splits the 16
    # value rows over two programs, so dr, dk, dlogw, da, db are sums of per-block partials.
    inputs = make_inputs(B=2, T=T, H=1, N=16, with_s0=with_s0)
    check_against_reference(inputs, tol_y=1e-5, tol_grad=1e-5, chunk=chunk, block_v=8)


@pytest.mark.parametrize("with_s0", [True, False], ids=["s0", "no_s0"])
def test_bf16_matches_reference_within_bf16_rounding(with_s0):
    # The state stays fp32; y and the input gradients are rounded to bf16 (2^-8 relative) at the
    # end.
    inputs = make_inputs(B=1, T=21, H=2, N=16, dtype=torch.bfloat16, with_s0=with_s0)
    check_against_reference(inputs, tol_y=1e-2, tol_grad=1e-2, chunk=8)


def test_fp16_with_fp32_decay_keeps_each_gradient_in_its_dtype():
    inputs = make_inputs(B=1, T=6, H=1, N=16, dtype=torch.float16)
    inputs[1] = inputs[1].detach().float().requires_grad_()  # logw in fp32, the rest fp16
    # fp16 rounds at 2^-11: tighter than bf16.
    check_against_reference(inputs, tol_y=2e-3, tol_grad=2e-3, chunk=4)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_any_checkpoint_interval_gives_the_same_result(chunk):
    # 1: a checkpoint every step; 5: T=11 ends mid-chunk; 64: one chunk longer than the sequence.
    inputs = make_inputs(B=1, T=11, H=1, N=16)
    check_against_reference(inputs, tol_y=1e-5, tol_grad=1e-5, chunk=chunk)


def test_head_size_that_is_not_a_power_of_two_is_masked():
    # N=12 pads the key dimension to 16 and leaves the second 8-row value block half empty.
    inputs = make_inputs(B=1, T=7, H=2, N=12)
    check_against_reference(inputs, tol_y=1e-5, tol_grad=1e-5, chunk=4, block_v=8)


def test_gradient_from_the_state_alone_and_from_y_alone():
    inputs = make_inputs(B=1, T=9, H=1, N=16)
    leaves, (y_ref, sT_ref) = reference_on(inputs)

    y, sT = wkv7_triton(*inputs, chunk=4)
    # y unused: no gradient flows into it.
    got = torch.autograd.grad((sT * sT_ref.detach()).sum(), inputs)
    # r only reaches y: the reference leaves dr undefined, the kernel must give exact zeros.
    want = torch.autograd.grad(
        (sT_ref * sT_ref.detach()).sum(), leaves, allow_unused=True, retain_graph=True
    )
    assert want[0] is None and torch.count_nonzero(got[0]) == 0
    for name, a, e in list(zip(NAMES, got, want))[1:]:
        assert_rel_close(a, e, 1e-5, f"d{name} from sT only")

    y, sT = wkv7_triton(*inputs, chunk=4)
    got = torch.autograd.grad(y.square().sum(), inputs)  # sT unused
    want = torch.autograd.grad(y_ref.square().sum(), leaves)
    for name, a, e in zip(NAMES, got, want):
        assert_rel_close(a, e, 1e-5, f"d{name} from y only")


def test_backward_is_deterministic_and_no_grad_forward_matches():
    inputs = make_inputs(B=1, T=9, H=1, N=16)
    runs = []
    for _ in range(2):
        y, sT = wkv7_triton(*inputs, chunk=4, block_v=8)
        runs.append(torch.autograd.grad(y.sum() + sT.sum(), inputs))
    for name, first, second in zip(NAMES, *runs):
        assert torch.equal(first, second), f"d{name} differs between two identical backward passes"

    with torch.no_grad():  # no checkpoints are kept; results must not change
        y0, sT0 = wkv7_triton(*inputs, chunk=4, block_v=8)
    assert not y0.requires_grad
    assert torch.equal(y0, y.detach()) and torch.equal(sT0, sT.detach())


def test_empty_sequence_returns_the_initial_state():
    inputs = make_inputs(B=1, T=0, H=1, N=16)
    y, sT = wkv7_triton(*inputs)
    assert y.shape == (1, 0, 1, 16)
    assert torch.equal(sT, inputs[6].detach())
    (ds0,) = torch.autograd.grad(sT.sum(), [inputs[6]])
    assert torch.equal(ds0, torch.ones_like(ds0))


def test_bad_inputs_raise_one_clear_usage_error(monkeypatch):
    r, logw, k, v, a, b, s0 = (None if x is None else x.detach() for x in make_inputs(1, 3, 1, 16))
    cases = [
        ((r, logw, k[:, :2], v, a, b), {}, "k has shape"),
        ((r.double(), logw, k, v, a, b), {}, "float64"),
        ((r[0], logw[0], k[0], v[0], a[0], b[0]), {}, "r must be"),
        ((r, logw, k, v, a, b), {"s0": s0[..., :8]}, "s0 must be"),
        ((r, logw, k, v, a, b), {"chunk": 0}, "chunk"),
        ((r, logw, k, v, a, b), {"block_v": 3}, "block_v"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(UsageError, match=message):
            wkv7_triton(*args, **kwargs)
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(UsageError, match="needs a CUDA device"):
            wkv7_triton(r, logw, k, v, a, b)


COMPILE_FOR_H100 = r"""
import inspect
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction
import fsray.wkv.triton_kernel as tk

BK, BV, num_warps = tk._launch_config(64, None)
constexprs = dict(N=64, BK=BK, BV=BV, CHUNK=16, HAS_S0=True, SAVE_CKPT=True, HAS_DST=True)
bf16_ptrs = {"r_ptr", "logw_ptr", "k_ptr", "v_ptr", "a_ptr", "b_ptr", "y_ptr", "dy_ptr"}
for fn in (tk._wkv7_fwd_kernel, tk._wkv7_bwd_kernel):
    signature = {}
    for name in inspect.signature(fn).parameters:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*bf16" if name in bf16_ptrs else "*fp32"
        else:
            signature[name] = "i64" if name == "BTHN" else "i32"
    used = {k: v for k, v in constexprs.items() if k in signature}
    src = ASTSource(fn=JITFunction(fn), signature=signature, constexprs=used)
    target = GPUTarget("cuda", 90, 32)
    compiled = triton.compile(src, target=target, options={"num_warps": num_warps})
    assert len(compiled.asm["cubin"]) > 0
    print(fn.__name__, "compiled")
"""


@pytest.mark.skipif(ON_GPU, reason="on a GPU the tests above already run the compiled kernels")
def test_kernels_compile_for_an_h100_without_a_gpu(tmp_path):
    # The interpreter runs the kernels' Python; this checks that the compiler lowers them too
    # (bf16 inputs, head size 64, the default launch) down to an sm_90 cubin with ptxas.
    # A fresh process: this one imported triton in interpreter mode.
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from an earlier run's cache
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_FOR_H100],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["_wkv7_fwd_kernel", "compiled", "_wkv7_bwd_kernel", "compiled"]


# ---------------------------------------------------------------- the custom ops torch.compile sees
# fsray::wkv7_triton_fwd/_bwd: the same numbers as the autograd.Function and no graph break (without
# a GPU the kernel runs in the interpreter and the graph around it is Inductor's CPU code).

from fsray import fused  # noqa: E402


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


# ------------------------------------------------- the model's head size, odd lengths, strided inputs
def test_head_size_64_with_a_partial_last_chunk_matches_reference():
    # The model's head size: four 16-row value blocks (the default launch), T=13 with chunk 8 ends
    # mid-chunk. Kept tiny for the interpreter.
    inputs = make_inputs(B=1, T=13, H=1, N=64)
    check_against_reference(inputs, tol_y=1e-5, tol_grad=1e-5, chunk=8)


def test_non_contiguous_inputs_give_the_contiguous_result():
    # Views the model could hand over: heads and time transposed, every second batch row.
    base = make_inputs(B=2, T=9, H=2, N=64, seed=3)
    strided = []
    for x in base[:6]:
        y = x.detach().transpose(1, 2).contiguous().transpose(1, 2)  # [B, T, H, N] view of [B, H, T, N]
        assert not y.is_contiguous()
        strided.append(y.requires_grad_())
    s0 = base[6].detach().mT.contiguous().mT.requires_grad_()  # a transposed state view
    assert not s0.is_contiguous()
    check_against_reference(strided + [s0], tol_y=1e-5, tol_grad=1e-5, chunk=4)


def test_saved_bytes_is_what_the_forward_keeps():
    from fsray.wkv import triton_kernel as tk

    B, T, H, N, chunk = 1, 13, 2, 64, 8
    r, logw, k, v, a, b, s0 = (x.detach() for x in make_inputs(B, T, H, N))
    _, _, ckpt = tk._forward(r, logw, k, v, a, b, s0, chunk, None, True)
    assert tk.saved_bytes(B, T, H, N, chunk)["saved"] == ckpt.numel() * ckpt.element_size()
    # the documented figure at the GPU check's shape
    assert tk.saved_bytes(8, 4096, 12, 64, 16)["saved"] == 8 * 12 * 256 * 64 * 64 * 4


def test_the_checkpoint_output_of_the_custom_op_is_not_differentiable():
    from fsray.wkv import triton_kernel as tk

    inputs = make_inputs(1, 5, 1, 16)
    y, sT, ckpt = tk._op_fwd(*inputs, 4, None)
    assert y.requires_grad and sT.requires_grad and not ckpt.requires_grad
    # only y used: the backward runs with no incoming gradient for sT or the checkpoints
    (dr,) = torch.autograd.grad(y.sum(), [inputs[0]])
    leaves, (y_ref, _) = reference_on(inputs)
    (dr_ref,) = torch.autograd.grad(y_ref.sum(), [leaves[0]])
    assert_rel_close(dr, dr_ref, 1e-5, "dr")


def test_launches_run_under_the_inputs_cuda_device(monkeypatch):
    from fsray.wkv import triton_kernel as tk

    entered = []

    class Recorder:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    class OnSecondGpu:
        is_cuda = True
        device = torch.device("cuda", 1)

    monkeypatch.setattr(torch.cuda, "device", Recorder)
    with tk._on_device(OnSecondGpu()):
        pass
    assert entered == [torch.device("cuda", 1)]
    cpu = torch.zeros(1)
    with tk._on_device(cpu):  # no CUDA context is touched for CPU tensors (the interpreter)
        pass
    assert entered == [torch.device("cuda", 1)]


@pytest.mark.skipif(not ON_GPU or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_inputs_on_another_gpu_than_the_current_one():
    inputs = [None if x is None else x.detach().to("cuda:1").requires_grad_() for x in make_inputs(1, 9, 1, 64)]
    with torch.cuda.device(0):
        y, sT = wkv7_triton(*inputs, chunk=4)
        assert y.device == torch.device("cuda", 1)
        leaves, (y_ref, sT_ref) = reference_on(inputs)
        assert_rel_close(y, y_ref, 1e-5, "y on cuda:1")
