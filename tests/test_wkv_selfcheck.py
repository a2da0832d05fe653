"""The self-check that decides ``wkv_backend: auto`` on CUDA devices, run through the same code on the CPU:
the Triton kernel in Triton's interpreter, plus backends the tests inject (a wrong one, a crashing one, a
slow one). Shapes are tiny: the interpreter runs the kernel's Python step by step. The flag is set per
test (the kernel reads it at launch), so a GPU run of the Triton tests in the same process stays on CUDA."""

from __future__ import annotations

import os
import time
import warnings

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from fsray import cli  # noqa: E402
from fsray.wkv import selfcheck  # noqa: E402
from fsray.wkv.chunked import wkv7_chunked  # noqa: E402
from fsray.wkv.triton_kernel import wkv7_triton  # noqa: E402

CPU = torch.device("cpu")
SMALL = (1, 7, 1, 16)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Interpreter on, a private cache, a small check shape, no memory of earlier choices or warnings."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("FSRAY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(selfcheck, "CHECK_SHAPE", SMALL)
    monkeypatch.setattr(selfcheck, "TIMING_REPS", 1)
    monkeypatch.setattr(selfcheck, "_chosen", {})
    monkeypatch.setattr(selfcheck, "_warned", set())


def forgets_s0(r, logw, k, v, a, b, s0):
    """Deliberately wrong: drops the initial state (y and sT off by the state's contribution)."""
    return wkv7_chunked(r, logw, k, v, a, b, None)


def wrong_decay_gradient(r, logw, k, v, a, b, s0):
    """Deliberately wrong in the backward only: the decay's gradient is cut."""
    return wkv7_chunked(r, logw.detach(), k, v, a, b, s0)


def crashes(*args):
    raise RuntimeError("CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA")


class Counting:
    def __init__(self, fn, delay=0.0):
        self.fn, self.delay, self.calls = fn, delay, 0

    def __call__(self, *args):
        self.calls += 1
        time.sleep(self.delay)
        return self.fn(*args)


def test_wrong_and_crashing_backends_are_refused_with_one_warning_each():
    triton = Counting(lambda *x: wkv7_triton(*x, chunk=4))
    candidates = {"wrong_state": forgets_s0, "wrong_grad": wrong_decay_gradient, "crashing": crashes,
                  "triton": triton, "torch": wkv7_chunked}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = selfcheck.run(CPU, (2, 9, 1, 16), torch.float32, candidates)
    res = report["backends"]
    assert res["triton"]["ok"] and res["torch"]["ok"], res
    assert not res["wrong_state"]["ok"] and res["wrong_state"]["error"].startswith("ds0 in float32: relative error 1.0e+00")
    assert not res["wrong_grad"]["ok"] and res["wrong_grad"]["error"].startswith("dlogw in float32")
    assert res["crashing"]["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert report["choice"] in ("triton", "torch")
    # The refused ones were never timed (never used); each has exactly one warning naming it and its error.
    timed = report["choices"]["2,9,1,16,float32"]["ms"]
    assert set(timed) == {"triton", "torch"}
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    for name in ("wrong_state", "wrong_grad", "crashing"):
        mine = [m for m in messages if f"backend {name!r} failed its self-check" in m]
        assert len(mine) == 1 and res[name]["error"] in mine[0], messages
    assert not any("'triton'" in m or "'torch'" in m for m in messages)
    # Triton's errors are within the stated tolerances in both dtypes.
    for dtype, tol in (("float32", 5e-3), ("bfloat16", 3e-2)):
        assert max(res["triton"]["max_rel_err"][dtype].values()) <= tol


def test_the_result_is_cached_per_device_and_versions(monkeypatch):
    slow = Counting(wkv7_chunked, delay=0.05)
    fast = Counting(wkv7_chunked)
    candidates = {"slow": slow, "fast": fast}
    first = selfcheck.run(CPU, SMALL, torch.float32, candidates)
    assert first["choice"] == "fast"  # both correct: the faster one at the run's shape
    calls = slow.calls
    again = selfcheck.run(CPU, SMALL, torch.float32, candidates)
    assert slow.calls == calls and again["backends"] == first["backends"]  # read from the cache
    assert again["path"] == first["path"] and os.path.exists(first["path"])
    # A new shape is timed (not re-checked); a new triton (or torch, fla, fsray, device) is checked again.
    selfcheck.run(CPU, (1, 3, 1, 16), torch.float32, candidates)
    assert 0 < slow.calls - calls <= 1 + selfcheck.TIMING_REPS
    versions = selfcheck._versions()
    monkeypatch.setattr(selfcheck, "_versions", lambda: {**versions, "triton": "9.9.9"})
    calls = slow.calls
    rechecked = selfcheck.run(CPU, SMALL, torch.float32, candidates)
    assert rechecked["path"] != first["path"] and slow.calls > calls + selfcheck.TIMING_REPS + 1


def test_a_backend_failing_at_the_runs_shape_is_not_used():
    def fails_when_long(r, *rest):
        if r.shape[1] > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return wkv7_chunked(r, *rest)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = selfcheck.run(CPU, (1, 20, 1, 16), torch.float32, {"oom": fails_when_long, "torch": wkv7_chunked})
    assert report["backends"]["oom"]["ok"] and report["choice"] == "torch"
    assert any("'oom'" in str(w.message) and "out of memory" in str(w.message) for w in caught)


def test_auto_dispatch_checks_once_per_device_at_the_first_calls_shape():
    counting = Counting(wkv7_chunked)
    candidates = {"wrong": forgets_s0, "torch": counting}
    r = torch.zeros(1, 5, 1, 16)
    with pytest.warns(RuntimeWarning, match="'wrong' failed its self-check"):
        assert selfcheck.backend_for(r, candidates) == "torch"
    calls = counting.calls
    assert selfcheck.backend_for(torch.zeros(3, 50, 1, 16), candidates) == "torch"
    assert counting.calls == calls  # memoised in the process


def test_doctor_prints_every_backend_and_the_choice(monkeypatch, capsys):
    monkeypatch.setattr(selfcheck, "default_candidates",
                        lambda device: {"triton": lambda *x: wkv7_triton(*x, chunk=4), "wrong": forgets_s0,
                                        "torch": wkv7_chunked})
    code = cli.main(["doctor", "--device", "cpu", "--shape", "1,5,1,16"])
    out = capsys.readouterr().out
    assert code == 1  # a refused backend makes the check fail
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "ok" in lines["triton"].split() and "ok" in lines["torch"].split()
    assert "REFUSED" in lines["wrong"].split()
    assert "error: ds0 in float32: relative error" in out
    assert "fastest correct here:" in out and "cache:" in out and "device: cpu (triton interpreter)" in out

    monkeypatch.setattr(selfcheck, "default_candidates", lambda device: {"torch": wkv7_chunked})
    assert cli.main(["doctor", "--device", "cpu"]) == 0
    assert cli.main(["doctor", "--shape", "8,x"]) == 2
    assert "--shape must be four positive integers" in capsys.readouterr().err
