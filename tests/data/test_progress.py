"""The data builders' progress bars appear on a terminal only: a log file or a pipe gets the summary line, not
thousands of carriage-return updates."""

import subprocess
import sys


def test_building_into_a_pipe_writes_no_progress_bar(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "loopformer.cli", "data", "build", "sudoku-gen", str(tmp_path / "d"), "--num-train",
         "300", "--num-test", "20"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr + done.stdout and "it/s" not in done.stderr and "puzzle/s" not in done.stderr
    assert done.stdout.startswith("4x4 sudoku -> train: 300, test: 20")
