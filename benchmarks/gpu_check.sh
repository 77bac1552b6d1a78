#!/usr/bin/env bash
# GPU checks of issue 8 in one go (within 8 minutes on one H100): real CUDA graphs against eager
# training (tests/test_graphs.py's cuda tests and the conformance suite's graphs check with torch's
# liveness check), one epoch of each method on a CIFAR-10-sized split fed by the device stream
# (eager and CUDA graphs) and by the releases' PIL DataLoader (fp32), the stream again under bf16,
# and the policy check (AUROC under fp32 / bf16, eager / graphs). The tables are printed last.
#
# Knobs (defaults are the GPU run): OSRBENCH_BENCH_DEVICE (cuda), OSRBENCH_BENCH_IMAGES (30000),
# OSRBENCH_BENCH_METHODS (softmax arpl-cs dias), and for the policy check OSRBENCH_CHECK_METHODS
# (softmax dias), OSRBENCH_CHECK_EPOCHS (10), OSRBENCH_CHECK_SEEDS (3).
# A CPU smoke run of the script itself:
#   OSRBENCH_BENCH_DEVICE=cpu OSRBENCH_BENCH_IMAGES=128 OSRBENCH_BENCH_METHODS=softmax \
#   OSRBENCH_CHECK_METHODS=softmax OSRBENCH_CHECK_EPOCHS=1 OSRBENCH_CHECK_SEEDS=2 benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}/osrbench-gpu-check
mkdir -p "$LOG"
export OSRBENCH_BENCH_DEVICE=${OSRBENCH_BENCH_DEVICE:-cuda} OSRBENCH_BENCH_IMAGES=${OSRBENCH_BENCH_IMAGES:-30000}
export OSRBENCH_BENCH_METHODS=${OSRBENCH_BENCH_METHODS:-softmax arpl-cs dias}
DEVICE=$OSRBENCH_BENCH_DEVICE
python -m pip install --quiet --no-deps --no-build-isolation -e . -e plugins/softmax -e plugins/arpl -e plugins/dias
step() { echo "[gpu_check $(date +%T)] $*" >&2; }
step "CUDA graph tests"
python -m pytest tests/test_graphs.py -q -p no:cacheprovider -k cuda > "$LOG/graphs-tests.txt" 2>&1 || true
step "conformance suite on $DEVICE"
python -m osrbench.testing $OSRBENCH_BENCH_METHODS --device "$DEVICE" > "$LOG/conformance.txt" 2>&1 || true
step "throughput fp32"
python -m pytest benchmarks/test_throughput.py -q -p no:cacheprovider --benchmark-columns=mean \
    --benchmark-json="$LOG/fp32.json" > "$LOG/fp32.txt" 2>&1 || true
step "throughput bf16"
OSRBENCH_BENCH_PRECISION=bf16 python -m pytest benchmarks/test_throughput.py -q -p no:cacheprovider \
    -k stream --benchmark-columns=mean --benchmark-json="$LOG/bf16.json" > "$LOG/bf16.txt" 2>&1 || true
step "policy check"
python benchmarks/precision_check.py --device "$DEVICE" --methods ${OSRBENCH_CHECK_METHODS:-softmax dias} \
    --epochs "${OSRBENCH_CHECK_EPOCHS:-10}" --seeds "${OSRBENCH_CHECK_SEEDS:-3}" > "$LOG/precision.txt" 2>&1 || true
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
echo "== CUDA graph tests"; tail -1 "$LOG/graphs-tests.txt"
echo "== conformance on $DEVICE"; grep -E "conformance of|graphs|FAILED|SKIPPED|all checks" "$LOG/conformance.txt" || tail -5 "$LOG/conformance.txt"
for f in fp32 bf16; do
    echo "== throughput $f"; sed -n '/^one epoch of/,/^$/p' "$LOG/$f.txt"; tail -1 "$LOG/$f.txt"
done
echo "== policies"; cat "$LOG/precision.txt"
