"""benchmarks/tune_attention.py: the table it prints (smoke run in the interpreter) and its refusals."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loopformer.kernels import attention as attn

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tune_attention.py"
pytestmark = pytest.mark.skipif(not attn.HAVE_TRITON, reason="triton is not installed")


def _run(*args, interpret: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": interpret}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600)


def test_smoke_run_prints_one_row_per_kernel():
    proc = _run("--smoke", "--heads", "2", interpret="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(
        r"^\| 17 \| (fwd|one_pass|dkdv|dq) \| (\d+x\d+ w\d s\d) \| [\d.]+ \| - \| \d+x\d+ w\d+ s\d \| [\d.]+ \| - \| "
        r"[\d.]+x \| 3 \|$",
        proc.stdout,
        re.M,
    )
    expected = {k: attn.tiles_for(k, 64, torch.bfloat16, "sm80") for k in ("fwd", "one_pass", "dkdv", "dq")}
    assert [k for k, _ in rows] == ["fwd", "one_pass", "dkdv", "dq"]
    for kernel, tiles in rows:  # the TILES column is this family's table entry
        t = expected[kernel]
        assert tiles == f"{t.block_m}x{t.block_n} w{t.num_warps} s{t.num_stages}"
    assert re.search(r"^\| 17 \| delta \| - \| [\d.]+ \| - \| - \| [\d.]+ \| - \| 1.00x \| 1 \|$", proc.stdout, re.M)
    # the backward both ways: the three kernels summed against the one-pass kernel
    assert re.search(
        r"^S=17 backward, three kernels: [\d.]+ ms with TILES, [\d.]+ ms fastest; one pass: [\d.]+ ms",
        proc.stdout,
        re.M,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_it_says_so():
    proc = _run(interpret="0")
    assert proc.returncode != 0
    assert "none is visible" in proc.stderr
