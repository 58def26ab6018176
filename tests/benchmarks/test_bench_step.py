"""benchmarks/bench_step.py --smoke: eager and compiled side by side, the table and the ratio it prints."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_step.py"
ROW = r"\| sdpa, {} \| ([\d.]+) \| ([\d.]+)-([\d.]+) \| (\d+) \| nan \| ([\d.]+) \|"


def test_smoke_run_prints_both_sides_and_the_ratio():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "2 interleaved rounds of 2 steps per variant after 1 warm-up" in out
    assert "| variant (attention, compile mode) | ms/step (median) | spread ms (min-max) |" in out
    rows = {mode: re.search(ROW.format(mode), out) for mode in ("eager", "compiled")}
    assert all(rows.values()), out
    for row in rows.values():
        median, low, high, samples = float(row.group(1)), float(row.group(2)), float(row.group(3)), int(row.group(4))
        assert 0 < low <= median <= high and samples > 0
    # the same model, seed and batches: the same last loss, and the ratio is of the two medians printed
    assert rows["eager"].group(5) == rows["compiled"].group(5) and 0 < float(rows["eager"].group(5)) < 10
    ratio = float(re.search(r"sdpa, compiled vs sdpa, eager: ([\d.]+)x", out).group(1))
    assert abs(ratio - float(rows["eager"].group(1)) / float(rows["compiled"].group(1))) < 0.02


def test_a_warm_up_budget_leaves_out_the_later_variants_and_sigterm_still_prints_the_rounds(tmp_path):
    command = [sys.executable, str(SCRIPT), "--shape", "smoke", "--rounds", "1000000", "--steps-per-round", "1",
               "--warmup", "1", "--warmup-budget-s", "0.001"]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        lines = []
        for line in proc.stdout:  # the eager variant warms up; then rounds until the SIGTERM
            lines.append(line)
            if line.startswith("  round 3: sdpa, eager "):
                proc.send_signal(signal.SIGTERM)
                break
        out = "".join(lines) + proc.stdout.read()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    assert "  sdpa, compiled: left out (warm-up budget of 0 s spent)" in out
    assert re.search(r"^stopped \(SIGTERM\) after \d+ s: the rounds measured so far$", out, re.M), out
    row = re.search(ROW.format("eager"), out)
    assert row and 0 < float(row.group(2)) <= float(row.group(1)) <= float(row.group(3)), out
    assert "sdpa, compiled |" not in out and "vs sdpa, eager" not in out  # nothing for what was never measured


def test_the_gpu_report_judges_the_goals_on_the_ratios_it_prints(capsys):
    from types import SimpleNamespace

    from benchmarks.bench_step import SHAPES, report

    def variant(backend, mode, name, seconds):
        return SimpleNamespace(backend=backend, mode=mode, name=name, samples=[seconds], peak_gb=1.0, loss=2.0)

    report([variant("triton", None, "triton, eager", 0.030), variant("sdpa", None, "sdpa, eager", 0.033),
            variant("triton", "reduce-overhead", "triton, compiled + CUDA graphs", 0.020),
            variant("triton", "default", "triton, compiled", 0.025)], SHAPES["recipe"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "triton, compiled + CUDA graphs vs triton, eager: 1.50x (goal >= 2x: NOT met)" in lines
    assert "triton, compiled vs triton, eager: 1.20x" in lines  # no goal for it
    assert "triton vs sdpa, eager: 1.10x (goal > 1x: met)" in lines
