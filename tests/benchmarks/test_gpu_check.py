"""benchmarks/gpu_check.sh: without a CUDA GPU it says so and stops; its parts, their outputs under $OUT and the
time budget, checked with a stand-in python that plays a GPU machine (its ``PYTHON`` variable)."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import environment_without

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$1" in
  -) cat > /dev/null; echo "GPU: Stand-in H100" ;;
  -c) exit 0 ;;
  *benchmarks/bench_attention.py) echo "attention table"; exit 3 ;;
  *) echo "ran $*" ;;
esac
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_it_stops_with_a_message(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    assert "gpu_check: no CUDA device visible" in proc.stdout
    assert "summary" not in proc.stdout and "==" not in proc.stdout


def run_stand_in(tmp_path, *parts, budget=None):
    python = tmp_path / "python3"
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHON=str(python), OUT=str(out), CALLS=str(tmp_path / "calls"))
    if budget is not None:
        env["GPU_CHECK_BUDGET_S"] = str(budget)
    proc = subprocess.run(["bash", str(SCRIPT), *parts], capture_output=True, text=True, timeout=60, env=env)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return proc, out, calls


def test_an_unknown_part_is_named_and_nothing_runs(tmp_path):
    proc, out, calls = run_stand_in(tmp_path, "doctor", "benchmark")
    assert proc.returncode == 2
    assert proc.stdout.strip() == (
        "gpu_check: unknown part 'benchmark'; the parts are: doctor tests attention fit step tune"
    )
    assert calls == [] and list(out.iterdir()) == []


def test_the_parts_asked_for_run_in_order_each_into_its_file_with_a_summary(tmp_path):
    proc, out, calls = run_stand_in(tmp_path, "attention", "doctor", "fit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GPU: Stand-in H100" in proc.stdout
    ran = [call for call in calls if call not in ("-",) and not call.startswith("-c")]
    assert ran[0] == "benchmarks/bench_attention.py"
    assert ran[1] == "-m loopformer.cli doctor --no-compile"
    assert ran[2].startswith("benchmarks/fit_backends.py") and ran[2].endswith("--timeout-s 110")
    assert ("--data .device/sudoku9" in ran[2]) == (SCRIPT.parents[1] / ".device/sudoku9/train/dataset.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["attention.txt", "doctor.txt", "fit.txt", "summary.txt"]
    assert (out / "attention.txt").read_text() == "attention table\n"
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in summary] == ["attention: exit 3", "doctor: exit 0", "fit: exit 0"]
    assert proc.stdout.index("==== attention") < proc.stdout.index("==== doctor") < proc.stdout.index("==== summary")


def test_a_part_whose_limit_does_not_fit_the_budget_is_left_out_with_its_command(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tests.txt").write_text("an older run's output\n")
    proc, out, calls = run_stand_in(tmp_path, budget=100)  # every part: limits 60 150 50 230 170 45
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["doctor", "tests", "attention", "fit", "step", "tune"]
    assert summary[0].startswith("doctor: exit 0") and summary[2].startswith("attention: exit 3")
    assert summary[1].startswith("tests: left out (") and summary[1].endswith("bash benchmarks/gpu_check.sh tests")
    assert summary[3].endswith("bash benchmarks/gpu_check.sh fit") and "left out" in summary[4]
    assert summary[5].startswith("tune: exit 0")
    assert not (out / "tests.txt").exists() and not any("pytest" in call for call in calls)
    assert "an older run's output" not in proc.stdout


HELP_OF_EACH_SCRIPT = """
import runpy, sys
sys.path.insert(0, "benchmarks")  # as running a script puts its folder first
for script in ("bench_attention.py", "bench_step.py", "tune_attention.py", "fit_backends.py"):
    sys.argv = [script, "--help"]
    try:
        runpy.run_path("benchmarks/" + script, run_name="__main__")
    except SystemExit as e:
        assert e.code == 0, (script, e.code)
"""


def test_the_parts_before_fit_need_nothing_the_gpu_image_lacks(tmp_path):
    """The lent GPU machines have torch, triton, lightning and pytest but not jsonargparse, wandb or sweeps (only
    `fit` gets jsonargparse, from device_prep.sh's wheels): the doctor, the gpu tests' collection and the benchmark
    scripts' imports must work without them."""
    repo = SCRIPT.parents[1]
    env = environment_without({"jsonargparse", "wandb", "sweeps"}, tmp_path)
    env.pop("TRITON_INTERPRET", None)

    def run(*args):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180, env=env, cwd=repo)

    blocked = run("-c", "import jsonargparse")
    assert blocked.returncode == 1 and "No module named 'jsonargparse'" in blocked.stderr
    doctor = run("-m", "loopformer.cli", "doctor", "--no-compile")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert re.search(r"^verdict: ", doctor.stdout, re.M), doctor.stdout
    collected = run("-m", "pytest", "--co", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/kernels",
                    "tests/model/test_cuda_graphs.py")  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-3000:]
    count = int(re.search(r"(\d+)/\d+ tests collected", collected.stdout).group(1))
    assert count >= 30 and "test_cuda_graph_training_steps_agree_with_eager_ones" in collected.stdout
    # each script as gpu_check runs it (every import at its top), asked for --help: one process for the four
    helped = run("-c", HELP_OF_EACH_SCRIPT)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert helped.stdout.count("usage: ") == 4 and "fit_backends.py [-h]" in helped.stdout, helped.stdout
