#!/usr/bin/env bash
# The GPU benchmark behind docs/benchmarks/h100-*.{json,md} and the README's GPU table: one call on a CUDA
# machine (at most 8 minutes: BENCH_BUDGET_S, default 480). Reports go to $OUT (default ./bench-gpu); each bench run saves its
# JSON after every row, so a run cut short keeps what it measured. Render one: apdepth bench --from FILE.json
# Usage: bash scripts/gpu_bench.sh   (SKIP_TESTS=1 skips the CUDA tests; BENCH_BUDGET_S caps the time)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-bench-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
start=$SECONDS
budget="${BENCH_BUDGET_S:-480}"  # later runs are skipped once this much time has gone
left() { echo $((budget - (SECONDS - start))); }
bench=("$PY" -m apdepth bench --device cuda --prior large)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. CUDA paths of the test suite (tiny models): fp32/fp16/bf16 against CPU, model CPU offload, and each CUDA
#    fast path within its tolerance (whole-pipeline CUDA graph, side-stream encode, fp8, --fast).
[ -n "${SKIP_TESTS:-}" ] || timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_and_weights.py \
  tests/test_gpu_fast_paths.py 2>&1 | tee "$OUT/gpu-tests.txt"

# 2. bf16 (the recommended setting): stages, end-to-end at batch 1-8, the release's 768 row, the bare
#    components, every fast path on and off (int8, and fp8 on compute capability >= 8.9), Marigold
#    1x1 / 4x1 / 50x10 on the same UNet and VAE, and the stage-2 training step at micro-batch 8.
timeout "$(left)" "${bench[@]}" --dtypes bf16 --train-batch 8 -o "$OUT/h100-bf16.json"

# 3. fp32 and fp16: stages and end-to-end, Marigold 1x1 and 4x1.
[ "$(left)" -gt 120 ] && timeout "$(left)" "${bench[@]}" --dtypes fp32,fp16 --no-fast-paths --marigold 1x1,4x1 \
  --no-train -o "$OUT/h100-fp32-fp16.json"

# 4. bf16 again with torch.compile under CUDA graphs: the UNet and VAE, the whole pipeline as one region, and
#    the --fast preset against fp32 eager (the warm-up includes the compilation).
[ "$(left)" -gt 150 ] && timeout "$(left)" "${bench[@]}" --dtypes bf16 --batch-sizes 1,8 --marigold 1x1,4x1 \
  --no-train --compile reduce-overhead -o "$OUT/h100-bf16-fast.json"

# 5. the training step at the paper's batch 32 in one micro-batch (out-of-memory rows say so), and time and
#    peak memory by resolution (320x240 to 2048x1536) and batch (1 to 8).
[ "$(left)" -gt 60 ] && timeout "$(left)" "${bench[@]}" --dtypes bf16 --batch-sizes 1 --no-fast-paths \
  --marigold none --train-batch 32 --scaling --release-res 0 --no-components -o "$OUT/h100-train32.json"
echo "done in $((SECONDS - start)) s"
