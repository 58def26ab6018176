"""benchmarks/gpu_check.sh on a machine without a CUDA GPU: it says so and fails, before running anything."""

import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_it_stops_with_a_message(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    assert "gpu_check: no CUDA device visible" in proc.stdout
    assert "gpu tests exit status" not in proc.stdout
