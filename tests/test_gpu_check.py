"""bench/gpu_check.sh and its benches, on the CPU: a dry run of the whole script (tiny shapes, Triton's
interpreter, the same steps and files as on a GPU) so that it cannot rot between GPU sessions, and the
pass/fail logic of bench/wkv_gpu.py with a wrong and a crashing backend injected."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_of_the_gpu_check_passes_every_step(tmp_path):
    # ~40 s: four steps, each a fresh Python importing torch (as on the GPU machine), one of them pytest.
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(out), "PYTHON": sys.executable,
           "WHEELS": str(tmp_path / "no_wheels")}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=400)
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 0, summary + "".join(
        f"\n--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(out.glob("*.txt")))
    steps = [line.split(":")[0] for line in summary.splitlines() if ": pass in" in line]
    assert steps == ["a_versions", "b_tests", "c_wkv_bench", "d_paired"]

    doctor = (out / "a_versions.txt").read_text()
    assert "torch " + torch.__version__ in doctor and "triton" in doctor
    for backend in ("compiled", "triton", "torch"):
        assert any(line.split()[:2] == [backend, "ok"] for line in doctor.splitlines() if line.strip())
    assert "1 passed" in (out / "b_tests.txt").read_text()  # the head-size-64 kernel test

    wkv = json.loads((out / "wkv_gpu.json").read_text())
    assert wkv["runs"]["bf16"]["triton"]["pass"] and wkv["runs"]["fp32"]["triton"]["pass"]
    assert wkv["triton_saved_bytes"]["saved"] == 1 * 1 * 1 * 16 * 16 * 4  # one checkpoint of one state

    paired = json.loads((out / "gpu_paired.json").read_text())
    runs = {(r["precision"], r["mode"]): r for r in paired["runs"]}
    assert set(runs) == {(p, m) for p in ("bf16", "fp32") for m in ("no_fs", "prompt_fs")}
    assert all(r["ok"] and r["steps"] == 1 and r["tokens"] > 0 for r in runs.values())
    # same seed, same data, same initial weights: the no_fs losses of both precisions are close
    assert abs(runs[("bf16", "no_fs")]["loss"] - runs[("fp32", "no_fs")]["loss"]) < 0.05 * runs[("fp32", "no_fs")]["loss"]


def test_wkv_bench_fails_on_a_wrong_result_and_survives_a_crash(monkeypatch, capsys, tmp_path):
    import fsray.wkv as wkv
    from fsray.wkv.chunked import wkv7_chunked

    def wrong(r, logw, k, v, a, b, s0):
        y, sT = wkv7_chunked(r, logw, k, v, a, b, s0)
        return y * 1.01, sT  # 1% off: beyond both tolerances

    def crash(*args):
        raise RuntimeError("Triton Error [CUDA]: misaligned address\n(long trace)")

    monkeypatch.setattr(wkv, "BACKENDS", wkv.BACKENDS + ("wrong", "crash"))
    monkeypatch.setitem(wkv._IMPLS, "wrong", wrong)
    monkeypatch.setitem(wkv._IMPLS, "crash", crash)
    bench = load_bench("wkv_gpu")
    args = ["--device", "cpu", "--B", "1", "--T", "5", "--H", "1", "--N", "8", "--reps", "1",
            "--backends", "crash,wrong,torch", "--json", str(tmp_path / "r.json")]
    assert bench.main(args) == 1
    out = capsys.readouterr().out
    assert "crash    FAILED: RuntimeError: Triton Error [CUDA]: misaligned address" in out
    assert "wrong" in out and "WRONG (" in out and out.rstrip().endswith("RESULT: FAIL")
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["runs"]["fp32"]["torch"]["pass"] and not result["runs"]["fp32"]["wrong"]["pass"]
    assert bench.main(args[:-4] + ["--backends", "torch"]) == 0
