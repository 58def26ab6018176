"""benchmarks/bench_dataloader.py --smoke: every table prints both sides with numbers."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dataloader.py"
NUM = r"[\d.,]+"


def test_smoke_run_prints_both_sides_of_every_table():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for label in ("after an epoch boundary", "after a resume mid-epoch"):
        assert re.search(rf"^\| {label} \| 50 \| {NUM} \| {NUM} \(measured {NUM} at 50, x1\) \|$", out, re.M), label
    assert re.search(
        rf"^packing, whole global batches drawn and collated: {NUM} examples/s \(before: {NUM}\)$", out, re.M
    )
    for label in (r"prefetch 2 \(default\)", "prefetch 0"):
        assert re.search(rf"^\| {label} \| {NUM} \| {NUM}% \|$", out, re.M), label
