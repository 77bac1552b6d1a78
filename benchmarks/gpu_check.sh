#!/usr/bin/env bash
# GPU checks of issue 8 in one go (within 8 minutes on one H100): one epoch of each method on a
# CIFAR-10-sized split fed by the device stream and by the releases' PIL DataLoader (fp32), the
# stream again under bf16, and the precision policy's accuracy check. Tables are printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}/osrbench-gpu-check
mkdir -p "$LOG"
python -m pip install --quiet --no-deps --no-build-isolation -e . -e plugins/softmax -e plugins/arpl -e plugins/dias
export OSRBENCH_BENCH_DEVICE=cuda OSRBENCH_BENCH_IMAGES=${OSRBENCH_BENCH_IMAGES:-30000}
python -m pytest benchmarks/test_throughput.py -q -p no:cacheprovider --benchmark-columns=mean \
    --benchmark-json="$LOG/fp32.json" > "$LOG/fp32.txt" 2>&1 || true
OSRBENCH_BENCH_PRECISION=bf16 python -m pytest benchmarks/test_throughput.py -q -p no:cacheprovider \
    -k stream --benchmark-columns=mean --benchmark-json="$LOG/bf16.json" > "$LOG/bf16.txt" 2>&1 || true
python benchmarks/precision_check.py --device cuda > "$LOG/precision.txt" 2>&1 || true
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
for f in fp32 bf16; do echo "== $f"; sed -n '/^one epoch of/,$p' "$LOG/$f.txt"; grep -E "passed|failed|error" "$LOG/$f.txt" | tail -2; done
echo "== precision"; cat "$LOG/precision.txt"
