"""benchmarks/bench_step.py --smoke: the table it prints, on any machine."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_step.py"


def test_smoke_run_prints_the_table():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| variant | samples/s | ms/step (median) | spread ms | peak GB | loss at last step |" in proc.stdout
    row = re.search(r"\| sdpa, eager \| (\d+) \| ([\d.]+) \| ([\d.]+) \| nan \| ([\d.]+) \|", proc.stdout)
    assert row, proc.stdout
    assert int(row.group(1)) > 0 and float(row.group(2)) > 0 and 0 < float(row.group(4)) < 10
    assert "losses agree within 0.00%" in proc.stdout  # one variant: trivially
