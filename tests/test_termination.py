"""A sweep agent's SIGTERM stops a 2-process DDP run (CPU, gloo) promptly with a checkpoint, leaving no process
behind; a rank that dies ends the run at once, in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from loopformer.cli import command as cli
from loopformer.runs import stopping as termination
from loopformer.sweep.metrics_file import metrics_file_flag
from tests.helpers import child_pids, process_alive

ROOT = Path(__file__).resolve().parents[1]


def _start_ddp_run(data_dir, tmp_path):
    """A 2-process CPU DDP training run that evaluates every 2 steps; returns once it has evaluated once."""
    metrics = tmp_path / "metrics.jsonl"
    log = tmp_path / "run.log"
    env = dict(os.environ, WANDB_MODE="disabled")
    cmd = [
        str(Path(sys.executable).parent / "loopformer"),
        "fit",
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        f"--data.data_paths={data_dir}",
        "--data.global_batch_size=16",
        "--data.eval_batch_size=40",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_steps=100000",
        "--trainer.val_check_interval=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        metrics_file_flag(str(metrics)),
    ]
    with open(log, "w") as out:
        launcher = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):  # the run config, then an evaluation
        if launcher.poll() is not None or time.time() > deadline:
            _kill_all(launcher)
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(0.2)
    return launcher, log


def _kill_all(launcher):
    for pid in [launcher.pid, *child_pids(launcher.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigterm_to_the_launcher_stops_every_rank_within_30s(sudoku4_dir, tmp_path):
    launcher, log = _start_ddp_run(sudoku4_dir, tmp_path)
    try:
        workers = child_pids(launcher.pid)
        assert workers, "expected the DDP launcher to have started rank 1"
        # The metrics file begins with the run config a sweep report reads, written once (rank 0).
        records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        assert [i for i, r in enumerate(records) if "_config" in r] == [0]
        config = records[0]["_config"]
        assert [s["repeat"] for s in config["model"]["arch"]["stages"]] == [3, 2, 1]  # configs/quickstart.yaml
        assert config["compute/blocks_per_act_step"] == 6 * config["model"]["arch"]["outer_cycles"]
        assert "val/exact_accuracy" in records[1]
        launcher.send_signal(signal.SIGTERM)
        start = time.time()
        code = launcher.wait(timeout=30)
        while any(process_alive(w) for w in workers) and time.time() - start < 30:
            time.sleep(0.1)
        assert not [w for w in workers if process_alive(w)], "a DDP worker outlived the launcher"
        assert time.time() - start < 20  # well before the agent's SIGKILL and without the watchdog's 25 s
        assert code == 128 + signal.SIGTERM, log.read_text()[-3000:]
        # Every rank agreed on one step and a resumable checkpoint was written there
        (last,) = list(tmp_path.rglob("last.ckpt"))
        assert "stopping on SIGTERM at step " in log.read_text() and str(last) in log.read_text()
        checkpoint = torch.load(last, weights_only=True)
        assert len(checkpoint["loopformer"]["per_rank"]) == 2 and checkpoint["global_step"] > 0
    finally:
        _kill_all(launcher)


def test_a_rank_that_dies_makes_the_others_exit(sudoku4_dir, tmp_path):
    launcher, log = _start_ddp_run(sudoku4_dir, tmp_path)
    try:
        (worker,) = child_pids(launcher.pid)
        os.kill(worker, signal.SIGKILL)  # rank 1 dies without a word
        start = time.time()
        code = launcher.wait(timeout=60)
        assert code == 1 and time.time() - start < 10
        text = log.read_text()
        errors = [line for line in text.splitlines() if line.startswith("loopformer: error:")]
        assert errors == [
            f"loopformer: error: local rank 1 (pid {worker}) ended during the run (killed by SIGKILL); its log is "
            "above." + (" Stopping the other ranks." if errors and errors[0].endswith("ranks.") else "")
        ], text[-3000:]
        assert "Traceback" not in text, text[-3000:]
    finally:
        _kill_all(launcher)


def test_an_error_while_stopping_is_a_stopped_run_and_any_other_error_is_raised(monkeypatch):
    """A peer that left mid-collective after the SIGTERM makes rank 0's collective fail ("connection reset by
    peer"); that run was stopped, so it exits 128 + SIGTERM like any stopped run. Without a SIGTERM the error is
    a crash and propagates."""

    def collective_fails(args=None):
        raise RuntimeError("Read error: Connection reset by peer")

    monkeypatch.setattr(cli, "LoopformerCLI", collective_fails)
    with pytest.raises(RuntimeError, match="Connection reset"):
        cli.main(["fit"])
    monkeypatch.setattr(termination._stop_requested, "is_set", lambda: True)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["fit"])
    assert stopped.value.code == 128 + signal.SIGTERM
