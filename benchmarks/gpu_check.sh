#!/usr/bin/env bash
# GPU checks of issue 8 in one go (within 8 minutes on one H100): real CUDA graphs against eager
# training (tests/test_graphs.py's cuda tests and the conformance suite's graphs check with torch's
# liveness check), one epoch of each method on a CIFAR-10-sized split fed by the device stream
# (eager and CUDA graphs) and by the releases' PIL DataLoader (fp32), the stream again under bf16,
# and the policy check (AUROC under fp32 / bf16, eager / graphs). The tables are printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}/osrbench-gpu-check
mkdir -p "$LOG"
python -m pip install --quiet --no-deps --no-build-isolation -e . -e plugins/softmax -e plugins/arpl -e plugins/dias
export OSRBENCH_BENCH_DEVICE=cuda OSRBENCH_BENCH_IMAGES=${OSRBENCH_BENCH_IMAGES:-30000}
python -m pytest tests/test_graphs.py -q -p no:cacheprovider -k cuda > "$LOG/graphs-tests.txt" 2>&1 || true
python -m osrbench.testing softmax arpl arpl-cs dias --device cuda > "$LOG/conformance.txt" 2>&1 || true
python -m pytest benchmarks/test_throughput.py -q -p no:cacheprovider --benchmark-columns=mean \
    --benchmark-json="$LOG/fp32.json" > "$LOG/fp32.txt" 2>&1 || true
OSRBENCH_BENCH_PRECISION=bf16 python -m pytest benchmarks/test_throughput.py -q -p no:cacheprovider \
    -k stream --benchmark-columns=mean --benchmark-json="$LOG/bf16.json" > "$LOG/bf16.txt" 2>&1 || true
python benchmarks/precision_check.py --device cuda > "$LOG/precision.txt" 2>&1 || true
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
echo "== CUDA graph tests"; tail -3 "$LOG/graphs-tests.txt"
echo "== conformance on cuda"; grep -E "graphs|failed|passed" "$LOG/conformance.txt" | tail -12
for f in fp32 bf16; do echo "== $f"; sed -n '/^one epoch of/,/^$/p' "$LOG/$f.txt"; grep -E "passed|failed|error" "$LOG/$f.txt" | tail -2; done
echo "== policies"; cat "$LOG/precision.txt"
