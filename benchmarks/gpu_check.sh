#!/usr/bin/env bash
# On a machine with a CUDA GPU: the gpu-marked tests (kernels compiled, not interpreted), the attention
# benchmark, the 3-stage training step (bench_step.py: triton eager / compiled / CUDA graphs, sdpa eager /
# compiled, interleaved rounds: ms/step, samples/s, peak memory, loss), then the tile tuner, after `loopformer doctor`; the tables come last. Budget: about 9 minutes on an H100 (timeouts 60 +
# 150 + 50 + 230 + 45 s, plus start-up), so that a 15-minute device lease leaves room to rerun a part.
# Runs from a plain checkout where python has torch and triton (and pytest), as on the lent GPU machines:
# the package is taken from the checkout, not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled TRITON_DEFAULT_FP_FUSION=1 PYTHONUNBUFFERED=1
# The package need not be installed: the kernels, the model and these scripts import only torch and triton.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
PYTHON="${PYTHON:-python3}"  # the lent machines have python3 (with torch), not always python
"$PYTHON" - <<'PY' || { echo "gpu_check: no CUDA device visible"; exit 1; }
import torch, triton
assert torch.cuda.is_available()
print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
PY
start=$(date +%s)
# First the checks a user runs on a new machine (`loopformer doctor`): versions, each GPU's kernel self-check,
# auto's timed choice (CUDA graphs: tests/model/test_cuda_graphs.py below); its exit code goes in the summary.
timeout 60 "$PYTHON" -m loopformer.cli doctor --no-compile 2>&1 | tail -n 20  # graphs: test_cuda_graphs below
doctor_rc=${PIPESTATUS[0]}
# Compiling the kernels dominates the tests' time: spread it over 4 processes where pytest-xdist is there.
parallel=$("$PYTHON" -c "import xdist" 2>/dev/null && echo "-n 4" || true)
timeout 150 "$PYTHON" -m pytest -q -rfE -m gpu -p no:warnings -p no:cacheprovider ${parallel} tests/kernels tests/model/test_cuda_graphs.py 2>&1 | tail -n 30
tests_rc=${PIPESTATUS[0]}
timeout 50 "$PYTHON" benchmarks/bench_attention.py > /tmp/loopformer_bench.txt 2>&1
bench_rc=$?
timeout 230 "$PYTHON" benchmarks/bench_step.py --rounds 8 --budget-s 120 > /tmp/loopformer_step.txt 2>&1
step_rc=$?
timeout 45 "$PYTHON" benchmarks/tune_attention.py --budget-s 30 > /tmp/loopformer_tune.txt 2>&1
tune_rc=$?
echo
echo "doctor: ${doctor_rc}; gpu tests exit status: ${tests_rc}; attention benchmark: ${bench_rc}; step benchmark: ${step_rc}; tuner: ${tune_rc}; $(( $(date +%s) - start ))s"
cat /tmp/loopformer_bench.txt
echo
cat /tmp/loopformer_step.txt
echo
cat /tmp/loopformer_tune.txt
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then  # the lent machines bring back what is written under $OUT
    cp /tmp/loopformer_bench.txt /tmp/loopformer_step.txt /tmp/loopformer_tune.txt "${OUT}/"
fi
