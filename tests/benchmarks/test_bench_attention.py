"""benchmarks/bench_attention.py --smoke in the interpreter: every table, every row, numbers in each cell."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loopformer.kernels import attention as attn

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_attention.py"
pytestmark = pytest.mark.skipif(not attn.HAVE_TRITON, reason="triton is not installed")
NUM = r"[\d.]+"


def test_smoke_run_prints_every_table():
    env = {**os.environ, "TRITON_INTERPRET": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for S in (97, 144):  # one-pass and three-kernel backward
        for impl in ("fused", "reference"):
            # peak memory is measured on CUDA only: NaN here, beside the size of qkv
            assert re.search(rf"^\| {S} \| 1x8 \| {impl} \| {NUM} \| {NUM} \| .* \| nan \({NUM}\) \|$", out, re.M), (
                S,
                impl,
            )
        assert re.search(rf"^\| {S} \| {NUM}x \| {NUM}x \|$", out, re.M), S
    # the goal at the Sudoku length, judged on the speed-up the table prints (S = 916 is not in the smoke run)
    speedup = float(re.search(rf"^\| 97 \| {NUM}x \| ({NUM})x \|$", out, re.M).group(1))
    goal = re.search(rf"^goal at S = 97: fwd\+bwd >= 2.0x the reference path: ({NUM})x, (met|NOT met)$", out, re.M)
    assert goal and abs(float(goal.group(1)) - speedup) <= 0.01 and (goal.group(2) == "met") == (speedup >= 2)
    assert "goal at S = 144" not in out
    # the backward both ways at the Sudoku length
    assert re.search(rf"^\| 97 \| 1x8 \| {NUM} \| {NUM} \| {NUM}x \|$", out, re.M)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_it_says_so():
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "needs a CUDA GPU" in proc.stderr
