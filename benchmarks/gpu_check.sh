#!/usr/bin/env bash
# The whole check of a CUDA GPU machine, in parts, most important first:
#   doctor     `loopformer doctor`: versions, the kernel's self-check on each GPU, auto's timed choice
#   tests      the gpu-marked tests (kernels compiled, not interpreted; CUDA-graph training steps)
#   attention  bench_attention.py: fused attention against RoPE + SDPA, forward and forward+backward
#   fit        fit_backends.py: `loopformer fit` of the 3-stage recipe, 200 bf16 steps per attention backend
#   step       bench_step.py: the recipe's training step, triton eager / compiled / CUDA graphs, sdpa eager / compiled
#   tune       tune_attention.py: every candidate tile per kernel
#     bash benchmarks/gpu_check.sh              # every part
#     bash benchmarks/gpu_check.sh fit tune     # some parts (a rerun of what failed or was skipped)
# A part starts only if its time limit still fits in GPU_CHECK_BUDGET_S (default 560 s, under the device tool's
# 600 s a command): a part left out is named with the command that runs it. Each part's output goes to its own
# file under $OUT (the device tool brings those back, also after a timeout), and every file is printed at the end.
# Runs from a plain checkout where python has torch, triton, lightning and pytest, as on the lent GPU machines: the
# package is taken from the checkout, not installed; the wheels benchmarks/device_prep.sh put in .device/wheels
# (jsonargparse, for `fit`) are installed beside it, and its .device/sudoku9 is the fit's data.
set -uo pipefail
cd "$(dirname "$0")/.."
ALL_PARTS="doctor tests attention fit step tune"
declare -A LIMIT_S=([doctor]=60 [tests]=150 [attention]=50 [fit]=230 [step]=170 [tune]=45)
parts=("$@")
[ ${#parts[@]} -eq 0 ] && read -r -a parts <<< "$ALL_PARTS"
for part in "${parts[@]}"; do
    if [ -z "${LIMIT_S[$part]+x}" ]; then
        echo "gpu_check: unknown part '$part'; the parts are: $ALL_PARTS"
        exit 2
    fi
done
export WANDB_MODE=disabled TRITON_DEFAULT_FP_FUSION=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
PYTHON="${PYTHON:-python3}"  # the lent machines have python3 (with torch), not always python
"$PYTHON" - <<'PY' || { echo "gpu_check: no CUDA device visible"; exit 1; }
import torch, triton
assert torch.cuda.is_available()
print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}  triton {triton.__version__}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/nvidia-smi: /'
if ! "$PYTHON" -c "import jsonargparse" 2>/dev/null && compgen -G ".device/wheels/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/loopformer_site .device/wheels/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/loopformer_site"
fi
RESULTS="${OUT:-/tmp/loopformer_gpu_check}"
mkdir -p "$RESULTS"
BUDGET_S="${GPU_CHECK_BUDGET_S:-560}"
start=$(date +%s)

run_part() {  # the part's command, its output in $RESULTS/<part>.txt
    case "$1" in
    doctor) "$PYTHON" -m loopformer.cli doctor --no-compile ;;  # CUDA graphs: tests/model/test_cuda_graphs.py
    tests)  # compiling the kernels dominates: 8 processes where pytest-xdist is there; -v: a line per test as it ends
        local parallel
        parallel=$("$PYTHON" -c "import xdist" 2>/dev/null && echo "-n 8" || true)  # 16 cores there
        "$PYTHON" -m pytest -v -rfE -m gpu -p no:warnings -p no:cacheprovider ${parallel} tests/kernels \
            tests/model/test_cuda_graphs.py ;;
    attention) "$PYTHON" benchmarks/bench_attention.py ;;
    fit)
        local data=(--num-train 200)  # generated there, ~10 s, unless device_prep.sh made it ahead
        [ -f .device/sudoku9/train/dataset.json ] && data=(--data .device/sudoku9)
        "$PYTHON" benchmarks/fit_backends.py "${data[@]}" --timeout-s 110 ;;
    step) "$PYTHON" benchmarks/bench_step.py --rounds 6 --budget-s 60 --warmup-budget-s 70 ;;  # SIGTERM: prints what it has
    tune) "$PYTHON" benchmarks/tune_attention.py --budget-s 30 ;;
    esac
}

export -f run_part  # timeout starts a new bash, which needs the function
export PYTHON
for part in "${parts[@]}"; do rm -f "$RESULTS/$part.txt"; done  # no older run's output is printed as this one's
summary=()
for part in "${parts[@]}"; do
    elapsed=$(( $(date +%s) - start ))
    if (( elapsed + LIMIT_S[$part] > BUDGET_S )); then
        summary+=("$part: left out (${elapsed}s spent, its limit ${LIMIT_S[$part]}s): bash benchmarks/gpu_check.sh $part")
        continue
    fi
    began=$(date +%s)
    echo "== $part (limit ${LIMIT_S[$part]}s)"
    timeout "${LIMIT_S[$part]}" bash -c "run_part $part" > "$RESULTS/$part.txt" 2>&1
    rc=$?
    note=""
    [ "$rc" -eq 124 ] && note=" (timed out)"
    summary+=("$part: exit ${rc}${note}, $(( $(date +%s) - began ))s")
done

for part in "${parts[@]}"; do
    [ -f "$RESULTS/$part.txt" ] || continue
    echo
    echo "==== $part"
    if [ "$part" = tests ]; then tail -n 30 "$RESULTS/$part.txt"; else cat "$RESULTS/$part.txt"; fi
done
echo
echo "==== summary ($(( $(date +%s) - start ))s)"
printf '%s\n' "${summary[@]}" | tee "$RESULTS/summary.txt"
