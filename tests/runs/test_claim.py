"""One run per directory: a claim that a second run cannot take while the first lives, and that a dead holder
leaves to the next run."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loopformer.locks import is_held
from loopformer.runs.claim import Claim, ClaimedError, read_holder

ROOT = Path(__file__).resolve().parents[2]


def _hold_in_child(lock):
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from loopformer.runs.claim import Claim
            Claim({str(lock)!r}, "x").acquire()
            print("held", flush=True)
            time.sleep(600)
            """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_claim_is_refused_while_its_holder_lives_and_taken_over_after_it_died(tmp_path):
    lock = tmp_path / "run.lock"
    child = _hold_in_child(lock)
    try:
        with pytest.raises(ClaimedError) as refused:
            Claim(lock, f"run directory {tmp_path}").acquire()
        message = str(refused.value)
        assert message.startswith(f"run directory {tmp_path} is in use by another run (pid {child.pid} on ")
        assert socket.gethostname() in message and "started 20" in message
        assert is_held(lock)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not is_held(lock)
    claim = Claim(lock, "x").acquire()
    assert claim.previous is not None and claim.previous.pid == child.pid  # a holder that died: reported
    assert read_holder(lock).pid == os.getpid()
    claim.release()
    again = Claim(lock, "x").acquire()
    assert again.previous is None  # released cleanly: nothing to report
    again.release()


def test_a_second_fit_on_a_claimed_run_directory_fails_at_once_naming_the_holder(sudoku4_dir, tmp_path):
    loopformer = str(Path(sys.executable).parent / "loopformer")
    args = [
        "fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
        "--data.global_batch_size=16", "--trainer.max_steps=100000", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    first = subprocess.Popen([loopformer, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while read_holder(tmp_path / "run.lock") is None:
            if first.poll() is not None or time.time() > deadline:
                first.kill()
                raise AssertionError(first.communicate()[1][-3000:])
            time.sleep(0.2)
        start = time.time()
        second = subprocess.run([loopformer, *args], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        errors = [line for line in second.stderr.splitlines() if line.startswith("loopformer: error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
        assert f"run directory {tmp_path} is in use by another run (pid {first.pid} on" in errors[0]
        assert time.time() - start < 60
        assert first.poll() is None  # the first run goes on
        assert not (tmp_path / "config.yaml").exists() or "pid" not in (tmp_path / "config.yaml").read_text()
    finally:
        first.kill()
        first.wait()


def test_a_run_removes_the_partial_files_a_killed_write_left_with_a_notice(sudoku4_dir, tmp_path, caplog):
    import logging

    from loopformer.cli import LoopformerCLI

    caplog.set_level(logging.INFO)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended: the writer of the partial file below
    partial = tmp_path / "checkpoints" / f".last.ckpt.{socket.gethostname().split('.')[0]}-{pid}.abc.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 200_000)
    LoopformerCLI(
        args=[
            "fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=16", "--model.arch.hidden_size=32", "--model.arch.puzzle_emb_ndim=32",
            "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
            "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
        ]
    )  # fmt: skip
    assert not partial.exists()
    assert f"removed 1 partial file(s) left by an interrupted write in {partial.parent}" in caplog.text
