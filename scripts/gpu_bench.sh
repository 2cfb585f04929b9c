#!/usr/bin/env bash
# The GPU benchmark behind docs/benchmarks/h100-*.{json,md} and the README's GPU table: one call on a CUDA
# machine (about 7 minutes on an H100). Reports go to $OUT (default ./bench-gpu); each bench run saves its
# JSON after every row, so a run cut short keeps what it measured. Render one: apdepth bench --from FILE.json
# Usage: bash scripts/gpu_bench.sh   (SKIP_TESTS=1 skips the CUDA tests; BENCH_BUDGET_S caps the time)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-bench-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
start=$SECONDS
budget="${BENCH_BUDGET_S:-600}"  # later runs are skipped once this much time has gone
left() { echo $((budget - (SECONDS - start))); }
bench=("$PY" -m apdepth bench --device cuda --prior large)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. CUDA paths of the test suite (tiny models): fp32/fp16/bf16 against CPU, model CPU offload.
[ -n "${SKIP_TESTS:-}" ] || timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_and_weights.py

# 2. bf16 (the recommended setting): stages, end-to-end at batch 1-8, every fast path on and off, Marigold
#    1x1 / 4x1 / 50x10 on the same UNet and VAE, and the stage-2 training step at micro-batch 8.
timeout "$(left)" "${bench[@]}" --dtypes bf16 --train-batch 8 -o "$OUT/h100-bf16.json"

# 3. fp32 and fp16: stages and end-to-end, Marigold 1x1 and 4x1.
[ "$(left)" -gt 120 ] && timeout "$(left)" "${bench[@]}" --dtypes fp32,fp16 --no-fast-paths --marigold 1x1,4x1 \
  --no-train -o "$OUT/h100-fp32-fp16.json"

# 4. bf16 again with torch.compile of the UNet and VAE under CUDA graphs (warm-up includes the compilation).
[ "$(left)" -gt 150 ] && timeout "$(left)" "${bench[@]}" --dtypes bf16 --batch-sizes 1,8 --marigold 1x1,4x1 \
  --no-train --compile reduce-overhead -o "$OUT/h100-bf16-fast.json"

# 5. the training step at the paper's batch 32 in one micro-batch (out-of-memory rows say so).
[ "$(left)" -gt 60 ] && timeout "$(left)" "${bench[@]}" --dtypes bf16 --batch-sizes 1 --no-fast-paths \
  --marigold none --train-batch 32 -o "$OUT/h100-train32.json"
echo "done in $((SECONDS - start)) s"
