#!/usr/bin/env bash
# On a machine with a CUDA GPU: the gpu-marked tests (kernels compiled, not interpreted), the attention
# benchmark, then the tile tuner; the tables come last. Budget: under 8 minutes on an H100
# (timeouts 180 + 150 + 130 s, plus start-up).
set -uo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled TRITON_DEFAULT_FP_FUSION=1
unset TRITON_INTERPRET
python - <<'PY' || { echo "gpu_check: no CUDA device visible"; exit 1; }
import torch, triton
assert torch.cuda.is_available()
print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
PY
start=$(date +%s)
timeout 180 python -m pytest -q -m gpu -p no:warnings tests/kernels 2>&1 | tail -n 15
tests_rc=${PIPESTATUS[0]}
timeout 150 python benchmarks/bench_attention.py > /tmp/loopformer_bench.txt 2>&1
bench_rc=$?
timeout 130 python benchmarks/tune_attention.py --budget-s 100 > /tmp/loopformer_tune.txt 2>&1
tune_rc=$?
echo
echo "gpu tests exit status: ${tests_rc}; benchmark: ${bench_rc}; tuner: ${tune_rc}; $(( $(date +%s) - start ))s"
cat /tmp/loopformer_bench.txt
echo
cat /tmp/loopformer_tune.txt
