#!/usr/bin/env bash
# The device check for a bare GPU machine: no network, no Ray, its own python3 with a CUDA torch and triton.
#
#   OUT=/path/to/results bash bench/gpu_check.sh          # on the GPU machine, from anywhere
#   GPU_CHECK_DRY=1 OUT=/tmp/x bash bench/gpu_check.sh    # CPU dry run: tiny shapes, Triton's interpreter
#
# Steps, each under its own timeout, all output as files under $OUT (summary.txt: one line per step):
#   a_versions   device, driver, versions, and `fsray doctor` (the WKV self-check and what auto uses)
#   b_tests      the Triton (and fla) kernel tests on CUDA, head size 64 included, and the trainer's
#                collectives on the model's CUDA device (2 ranks on gloo)
#   c_wkv_bench  bench/wkv_gpu.py: triton vs fla vs torch at B8 T4096 H12 N64, bf16 and fp32,
#                fwd+bwd ms, peak memory, pass/fail against float64 references
#   d_paired     bench/gpu_paired.py: no_fs vs prompt_fs of a random 12-layer width-768 BlinkDL checkpoint,
#                World tokenizer, T 512 and 4096, bf16 vs fp32: steps/s, tokens/s, peak memory, runs per GPU
# The timeouts add up to 8 minutes (480 s). Exit 0 when every step passed, else 1.
#
# Python packages the machine may lack travel as wheels (64 MiB in all): put them in $WHEELS (default
# .gpu_wheels, see `make gpu-wheels`); they are installed with --no-index, nothing is fetched.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
: "${OUT:?set OUT to the directory for the results}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-$REPO/.gpu_wheels}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export FSRAY_CACHE_DIR="$OUT/cache"
export PYTHONUNBUFFERED=1
# fla autotunes its kernels per shape: keep the results on disk so the later steps reuse them
export TRITON_CACHE_AUTOTUNING=1
: > "$OUT/summary.txt"
failed=0

if [ "${GPU_CHECK_DRY:-0}" != "0" ]; then
    export TRITON_INTERPRET=1
    DEVICE=cpu
    DOCTOR_ARGS=(--device cpu --check-shape 1,5,1,16 --shape 1,9,1,16)
    TEST_ARGS=(tests/test_wkv_triton.py -k "head_size_64")
    WKV_ARGS=(--device cpu --B 1 --T 9 --H 1 --N 16 --reps 1)
    PAIRED_ARGS=(--device cpu --layers 2 --width 64 --T 40 --batch 2 --steps 1)
else
    DEVICE=cuda
    DOCTOR_ARGS=(--shape 8,4096,12,64 --dtype bf16)
    TEST_ARGS=(tests/test_wkv_triton.py tests/test_wkv_fla.py tests/test_wkv_selfcheck.py
               "tests/test_collectives.py::test_collectives_get_tensors_on_the_models_device_and_two_workers_equal_one[cuda:0]")
    WKV_ARGS=(--B 8 --T 4096 --H 12 --N 64 --reps 5)
    PAIRED_ARGS=(--layers 12 --width 768 --T 512,4096 --batch 8 --steps 4)
fi

step() {  # step NAME SECONDS COMMAND...: output to $OUT/NAME.txt, one summary line
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    local verdict=pass
    [ "$rc" -eq 124 ] && verdict="TIMED OUT after ${limit}s"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && verdict="FAILED (exit $rc)"
    [ "$rc" -ne 0 ] && failed=1
    echo "$name: $verdict in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    # only what is missing; --no-index: the wheels that travelled with the run, nothing else
    for pkg in numpy pydantic pytest pyrwkv_tokenizer fla; do
        "$PY" -c "import $pkg" 2> /dev/null && continue
        "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$(echo "$pkg" | tr _ - | sed 's/^fla$/fla-core/')" \
            >> "$OUT/wheels.txt" 2>&1 || echo "could not install $pkg from $WHEELS" >> "$OUT/wheels.txt"
    done
fi

versions() {
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
for pkg in ("triton", "fla", "pydantic", "numpy", "pytest"):
    try:
        print(pkg, __import__(pkg).__version__)
    except Exception as exc:
        print(pkg, "absent:", exc)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
          f"{torch.cuda.device_count()} device(s)")
EOF
    "$PY" -m fsray.cli doctor "${DOCTOR_ARGS[@]}"
}

# timeout runs programs, not shell functions: the function and what it reads travel as source
step a_versions 90 bash -c "$(declare -f versions); $(declare -p DOCTOR_ARGS); PY='$PY'; versions"
step b_tests 130 "$PY" -m pytest -q --noconftest -p no:cacheprovider "${TEST_ARGS[@]}"
step c_wkv_bench 100 "$PY" bench/wkv_gpu.py "${WKV_ARGS[@]}" --json "$OUT/wkv_gpu.json"
step d_paired 160 "$PY" bench/gpu_paired.py "${PAIRED_ARGS[@]}" --json "$OUT/gpu_paired.json"
echo "device: $DEVICE; results in $OUT" | tee -a "$OUT/summary.txt"
exit $failed
