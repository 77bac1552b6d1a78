#!/usr/bin/env bash
# GPU checks in one go on one H100/H200, most telling first, each under its own time budget and all
# under one deadline (9 minutes: a session's device call may run 10), so the tables always print:
#   1. CUDA tests: real CUDA graphs against eager (tests/test_graphs.py -k cuda; among them parameters
#      eager vs graphed after an epoch that crosses a learning-rate milestone, 32-px reference GAN),
#      compiled networks inside graphs, and a pack of softmax, ARPL+CS and DIAS against each alone;
#   2. packs: aggregate img/s of 1, 2 and 5 DIAS and ARPL+CS runs packed in one process vs one alone
#      (30,000 CIFAR-shaped images per run), with the profiler's GPU-busy fraction and kernels per batch;
#   3. the ceiling of horizontal fusion: 1, 2, 5, 8 classifier32 steps and 32-px DCGAN steps as
#      separate networks and as one grouped network, eager and graphed (benchmarks/fusion_check.py);
#   4. throughput of one epoch per method: osrbench's stream eager and replayed from CUDA graphs, and
#      osrbench's same step fed by a PIL DataLoader like the releases' (fp32), the median of several
#      epochs each. This compares osrbench with itself under two feeds: it is not a comparison with
#      the releases' own code;
#   5. compile=true inside CUDA graphs against graphs alone, one epoch of DIAS (compiling included);
#   6. aggregate throughput of N runs at once, end to end (compare --jobs N as N processes and as one
#      pack vs --jobs 1; CUDA MPS if its daemon runs);
#   7. kernels per training batch on CUDA, eager and replayed (benchmarks/test_kernels.py);
#   8. optimiser steps: fused and foreach against for-loop, bit for bit, and kernels per step;
#   9. the conformance suite on CUDA (its graphs check records real graphs with torch's liveness check);
#  10. throughput of the stream in bf16;
#  11. the policy check (AUROC under fp32 / bf16, eager / graphs).
# A step that fails or runs over its budget is FAILED in the table, one the deadline leaves no time
# for is SKIPPED; the script goes on with the next one and exits non-zero at the end. The tables
# are printed last; logs are in $LOG.
#
# Knobs (defaults are the GPU run): OSRBENCH_BENCH_DEVICE (cuda), OSRBENCH_BENCH_IMAGES (10000),
# OSRBENCH_BENCH_ROUNDS (3), OSRBENCH_BENCH_METHODS (softmax arpl-cs dias), OSRBENCH_CHECK_JOBS (4),
# OSRBENCH_CHECK_SPLITS (0-4, the concurrent runs' splits), OSRBENCH_CHECK_METHODS (softmax),
# OSRBENCH_CHECK_EPOCHS (5), OSRBENCH_CHECK_SEEDS (2) of the policy check, OSRBENCH_CHECK_PACK
# (the pack check's arguments; default: dias and arpl-cs, 1 2 5 runs, 30,000 images).
# OSRBENCH_CHECK_COMPILE_METHODS (dias) of the compile step, OSRBENCH_CHECK_FUSION (the fusion
# check's arguments; default: 1 2 5 8 runs, 50 timed steps).
# OSRBENCH_CHECK_DEADLINE (540 s) of the whole check; OSRBENCH_CHECK_BUDGET_SCALE (1) multiplies it
# and every step's budget. A CPU smoke run of the script itself
# (the CUDA-only parts skip; the policy check's bf16 runs overrun there: CPUs emulate bf16):
#   OSRBENCH_BENCH_DEVICE=cpu OSRBENCH_BENCH_IMAGES=128 OSRBENCH_BENCH_ROUNDS=1 OSRBENCH_BENCH_METHODS=softmax \
#   OSRBENCH_CHECK_EPOCHS=1 OSRBENCH_CHECK_JOBS=2 OSRBENCH_CHECK_SPLITS=0-1 OSRBENCH_CHECK_BUDGET_SCALE=4 \
#   OSRBENCH_CHECK_PACK="--methods softmax --runs 1 2 --images 512 --warm 4 --steps 2" \
#   OSRBENCH_CHECK_FUSION="--runs 1 2 --warm 1 --steps 2" OSRBENCH_CHECK_COMPILE_METHODS=softmax \
#   benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}/osrbench-gpu-check
mkdir -p "$LOG"
: > "$LOG/steps.tsv"
export OSRBENCH_BENCH_DEVICE=${OSRBENCH_BENCH_DEVICE:-cuda} OSRBENCH_BENCH_IMAGES=${OSRBENCH_BENCH_IMAGES:-10000}
export OSRBENCH_BENCH_ROUNDS=${OSRBENCH_BENCH_ROUNDS:-3} OSRBENCH_BENCH_METHODS=${OSRBENCH_BENCH_METHODS:-softmax arpl-cs dias}
DEVICE=$OSRBENCH_BENCH_DEVICE
SCALE=${OSRBENCH_CHECK_BUDGET_SCALE:-1}
DEADLINE=$(( ${OSRBENCH_CHECK_DEADLINE:-540} * SCALE ))
START=$(date +%s)
PYTEST="python -m pytest -q -p no:cacheprovider"

# step NAME BUDGET_S COMMAND...: run it under its budget (cut to what the deadline leaves), log its
# output, record ok / FAILED / SKIPPED.
step() {
    local name=$1 budget=$(( $2 * SCALE )) t0 rc status left
    shift 2
    t0=$(date +%s)
    left=$(( START + DEADLINE - t0 ))
    if [ "$left" -lt 10 ]; then
        printf '%s\t%s\t%s\t%s\n' "$name" "SKIPPED (deadline)" 0 "$budget" >> "$LOG/steps.tsv"
        return
    fi
    [ "$left" -lt "$budget" ] && budget=$left
    echo "[gpu_check $(date +%T)] $name (budget ${budget}s)" >&2
    timeout "$budget" "$@" > "$LOG/$name.txt" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then status=ok
    elif [ "$rc" -eq 124 ]; then status="FAILED (over budget)"
    else status="FAILED (exit $rc)"; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$budget" >> "$LOG/steps.tsv"
}

step install 60 python -m pip install --quiet --no-deps --no-build-isolation -e . -e plugins/softmax -e plugins/arpl -e plugins/dias
step cuda-tests 120 $PYTEST tests/test_graphs.py tests/test_compile.py tests/test_pack.py -k cuda -rs
step pack 75 python benchmarks/pack_check.py --device "$DEVICE" ${OSRBENCH_CHECK_PACK:-}
step fusion 30 python benchmarks/fusion_check.py --device "$DEVICE" ${OSRBENCH_CHECK_FUSION:-}
step throughput-fp32 90 $PYTEST benchmarks/test_throughput.py -k "not compiled" --benchmark-columns=median \
    --benchmark-json="$LOG/fp32.json"
step compile 120 env OSRBENCH_BENCH_METHODS="${OSRBENCH_CHECK_COMPILE_METHODS:-dias}" OSRBENCH_BENCH_ROUNDS=1 \
    $PYTEST benchmarks/test_throughput.py -k cuda_graphs --benchmark-columns=median --benchmark-json="$LOG/compile.json"
step concurrency 60 python benchmarks/concurrency_check.py --device "$DEVICE" --jobs "${OSRBENCH_CHECK_JOBS:-4}" \
    --epochs 3 --splits "${OSRBENCH_CHECK_SPLITS:-0-4}"
step kernels 30 $PYTEST benchmarks/test_kernels.py --benchmark-disable
step optimizers 20 python benchmarks/optimizer_check.py --device "$DEVICE"
step conformance 60 python -m osrbench.testing $OSRBENCH_BENCH_METHODS --device "$DEVICE"
step throughput-bf16 30 env OSRBENCH_BENCH_PRECISION=bf16 $PYTEST benchmarks/test_throughput.py -k stream \
    --benchmark-columns=median --benchmark-json="$LOG/bf16.json"
step policy 40 python benchmarks/precision_check.py --device "$DEVICE" --methods ${OSRBENCH_CHECK_METHODS:-softmax} \
    --epochs "${OSRBENCH_CHECK_EPOCHS:-5}" --seeds "${OSRBENCH_CHECK_SEEDS:-2}"
TOTAL=$(( $(date +%s) - START ))

nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
# section TITLE FILE SED_RANGE: the table a step printed (nothing when the step did not run).
section() { echo "== $1"; [ -f "$LOG/$2.txt" ] && sed -n "$3" "$LOG/$2.txt"; }
echo "== CUDA tests"; grep -E "passed|failed|SKIPPED|Error" "$LOG/cuda-tests.txt" 2>/dev/null | tail -8
section packs pack '/^packed runs/,$p'
section "horizontal fusion" fusion '/^horizontal fusion/,$p'
section "throughput fp32" throughput-fp32 '/^one epoch of/,/^$/p'
section "compile inside graphs" compile '/^one epoch of/,/^$/p'
section "concurrent runs" concurrency '/^concurrent runs/,$p'
section "kernels per training batch" kernels '/^kernels per training batch/,/^$/p'
section "optimiser steps" optimizers '/^optimiser steps/,$p'
echo "== conformance on $DEVICE"
grep -E "conformance of|graphs|FAILED|SKIPPED|all checks" "$LOG/conformance.txt" 2>/dev/null
section "throughput bf16" throughput-bf16 '/^one epoch of/,/^$/p'
section policies policy '/^policy check/,$p'
echo "== steps (osrbench compared with itself; total ${TOTAL}s, deadline ${DEADLINE}s)"
python -c 'import sys, tabulate; rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print(tabulate.tabulate(rows, headers=["step", "status", "seconds", "budget s"], disable_numparse=True))' "$LOG/steps.tsv"
if grep -qE "FAILED|SKIPPED" "$LOG/steps.tsv"; then
    exit 1
fi
