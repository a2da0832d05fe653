"""bf16 autocast vs fp32 training steps of the embedded default on this CPU (fsray.precision).

    python bench/precision_cpu.py              # 100 steps a precision, after a warm-up run
    python bench/precision_cpu.py --steps 40

No speed goal on the CPU (bf16 matmuls are emulated on most x86 cores; auto keeps the CPU in fp32):
this prints the ratio, and the final metrics of both, so the GPU figure (bench/gpu_check.sh) has a
CPU baseline measured the same way, in the same process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsray.spec import TrainSpec, embedded_default_spec  # noqa: E402
from fsray.trainer import run_mode  # noqa: E402


def spec_for(precision: str, steps: int) -> TrainSpec:
    raw = embedded_default_spec().model_dump()
    raw["budget"].update(steps=steps, eval_every=steps)
    raw["data"].update(n_val=64, eval_batch_size=64)
    return TrainSpec.model_validate({**raw, "precision": precision})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    run_mode(spec_for("fp32", 2), 0, None)  # warm-up: task data, the initial model, the C kernel build
    per_step = {}
    for precision in ("fp32", "bf16") * args.repeats:
        t0 = time.perf_counter()
        result = run_mode(spec_for(precision, args.steps), 0, None)
        per_step.setdefault(precision, []).append((time.perf_counter() - t0) / args.steps)
        print(f"{precision}: {1e3 * per_step[precision][-1]:.1f} ms/step, final loss {result['loss']:.4f}, "
              f"token_acc {result['token_acc']:.4f}")
    best = {p: min(v) for p, v in per_step.items()}
    print(f"embedded default, {args.steps} steps, best of {args.repeats}: fp32 {1e3 * best['fp32']:.1f} ms/step, "
          f"bf16 {1e3 * best['bf16']:.1f} ms/step; bf16 step time / fp32 = {best['bf16'] / best['fp32']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
