"""benchmarks/fit_backends.py: the real `loopformer fit` per attention backend, as the GPU check runs it there
(no wandb, no sweeps on the GPU image); the command it builds parses; the verdicts it prints."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.fit_backends import RECIPE, comparison, fit_command, table
from tests.helpers import environment_without

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "fit_backends.py"


def test_smoke_fit_runs_without_wandb_and_a_failed_backend_does_not_stop_the_other(tmp_path):
    env = environment_without({"wandb", "sweeps"}, tmp_path)  # the GPU image has neither
    command = [sys.executable, str(SCRIPT), "--smoke", "--backends", "triton", "sdpa"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]  # triton cannot run the quickstart
    row = re.search(r"^\| sdpa \| sdpa \(attention_backend: sdpa\) \| ([\d.]+) \| (\d+) \| nan \| ([\d.]+) \| "
                    r"([\d.]+) \| (\d+) \|$", proc.stdout, re.M)  # fmt: skip
    assert row, proc.stdout
    ms, samples, first, last = float(row.group(1)), int(row.group(2)), float(row.group(3)), float(row.group(4))
    assert ms > 0 and abs(samples - 16 / ms * 1000) <= 0.02 * samples  # ms is printed to 0.1
    assert 0.5 < first < 5 and 0 < last < first  # 4x4 Sudoku's 5 classes: ln 5 = 1.6 at the start, then it learns
    assert "| triton |" not in proc.stdout and "fused kernel vs SDPA" not in proc.stdout  # nothing to compare
    failed = proc.stdout.split("the triton run failed (exit 2); its output ends:\n")[1]
    assert "model.runtime.attention_backend=triton supports head dims (32, 64, 128)" in failed
    assert list(tmp_path.iterdir()) == [tmp_path / "sitecustomize.py"]  # no run directory or data left behind


def test_a_fit_that_outlasts_its_time_is_reported_not_waited_for(tmp_path):
    command = [sys.executable, str(SCRIPT), "--smoke", "--timeout-s", "1"]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=environment_without(set(), tmp_path)
    )
    assert proc.returncode == 1 and "the sdpa run failed (not done in 1 s); its output ends:" in proc.stdout


def test_the_recipe_command_it_builds_parses_to_what_it_means(tmp_path):
    args = type("Args", (), {"batch": 192, "steps": 200, "warmup": 20})()
    command = fit_command(RECIPE, tmp_path / "sudoku9", "triton", args, tmp_path / "triton.json")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(command + ["--print_config"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = proc.stdout
    assert "  precision: bf16-mixed\n" in config and "  max_steps: 200\n" in config
    assert "  global_batch_size: 192\n" in config and "    attention_backend: triton\n" in config
    assert "    forward_dtype: bfloat16\n" in config and "  logger: false\n" in config
    # the recipe's ModelCheckpoint replaced: the clock is the one callback given, and nothing is saved
    assert re.findall(r"^  - class_path: (\S+)", config, re.M) == ["benchmarks.fit_backends.StepClock"]
    assert "  enable_checkpointing: false\n" in config


def result(backend, seconds, losses):
    return {"backend": backend, "attention": backend, "timed_seconds": seconds, "timed_steps": 100,
            "peak_gb": 1.5, "losses": losses, "wall_s": 30.0}  # fmt: skip


def test_comparison_says_faster_and_agree_or_not():
    same = [2.0] + [1.0] * 30
    lines = comparison([result("triton", 2.0, same), result("sdpa", 3.0, [2.01] + [1.01] * 30)], tail=20, rtol=0.02)
    assert lines[0] == "training step, fused kernel vs SDPA: 1.50x (faster)"
    assert lines[1] == ("losses: step 1 differ by 4.98e-03, the last 20 steps' means by 9.90e-03 (relative; "
                        "tolerance 0.02): agree")  # fmt: skip
    lines = comparison([result("triton", 3.0, same), result("sdpa", 2.0, [2.0] + [1.1] * 30)], tail=20, rtol=0.02)
    assert lines[0] == "training step, fused kernel vs SDPA: 0.67x (NOT faster)" and lines[1].endswith("DISAGREE")
    assert comparison([result("sdpa", 2.0, same)], tail=20, rtol=0.02) == []


def test_table_rows_are_per_step_times_and_mean_losses():
    rows = table([result("triton", 2.0, [2.0] + [1.0] * 30)], batch=192, tail=20)
    assert rows[2] == "| triton | triton | 20.0 | 9600 | 1.50 | 2.0000 | 1.0000 | 30 |"
    assert json.dumps(rows)  # plain strings
