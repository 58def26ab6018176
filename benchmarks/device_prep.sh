#!/usr/bin/env bash
# Before a lent GPU machine is asked for: what benchmarks/gpu_check.sh needs there and should not spend device time
# on, in ./.device (git ignores it; the device tool carries it when its call names `.device` in carry):
#   .device/wheels   the packages `loopformer fit` needs that the GPU image lacks (jsonargparse with its signature
#                    extras, at the versions installed here; the image has torch, triton, lightning, numpy, PyYAML,
#                    pytest), for Python 3.12
#   .device/sudoku9  a generated 9x9 Sudoku set for benchmarks/fit_backends.py (about 15 s here per 500 puzzles)
# wandb is not carried: the GPU check runs without a logger. Then, through the device tool:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".device"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
mkdir -p .device/wheels
# the versions installed here, which the tests ran with
pins=$("$PYTHON" -c "import importlib.metadata as m; print(*(f'{n}=={m.version(n)}' for n in
      ('jsonargparse', 'docstring_parser', 'typeshed_client')))")
rm -f .device/wheels/*.whl  # one version of each: two would stop the install there
# shellcheck disable=SC2086
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .device/wheels $pins
if [ ! -f .device/sudoku9/train/dataset.json ]; then
    "$PYTHON" -m loopformer.cli data build sudoku-gen .device/sudoku9 --size 9 --num-train 500 --num-test 32 --seed 0
fi
du -sh .device
