#!/usr/bin/env bash
# On a machine with a CUDA GPU: the gpu-marked tests (kernels compiled, not interpreted), then the
# attention benchmark; the tables come last. Budget: under 8 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled
unset TRITON_INTERPRET
python - <<'PY' || { echo "gpu_check: no CUDA device visible"; exit 1; }
import torch, triton
assert torch.cuda.is_available()
print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
PY
start=$(date +%s)
timeout 240 python -m pytest -q -m gpu -p no:warnings tests/kernels 2>&1 | tail -n 15
tests_rc=${PIPESTATUS[0]}
timeout 300 python benchmarks/bench_attention.py > /tmp/loopformer_bench.txt 2>&1
bench_rc=$?
echo
echo "gpu tests exit status: ${tests_rc}; benchmark exit status: ${bench_rc}; $(( $(date +%s) - start ))s"
cat /tmp/loopformer_bench.txt
