"""SIGTERM and SIGINT during fit write a checkpoint every rank agrees on, which resumes bit for bit; a time-based
last.ckpt bounds what a kill -9 can lose."""

import json
import logging
import signal
from pathlib import Path

import pytest
import torch

from loopformer.cli import LoopformerCLI
from loopformer.cli import command as cli
from loopformer.runs import stopping

ROOT = Path(__file__).resolve().parents[2]


def _args(data_dir, root, max_steps, *extra):
    return [
        "fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={data_dir}",
        "--data.global_batch_size=16", "--model.arch.hidden_size=32", "--model.arch.puzzle_emb_ndim=32",
        "--model.train.act.halt_max_steps=3", "--model.train.act.halt_exploration_prob=0.5", "--model.optim.lr_warmup_steps=2",
        f"--trainer.max_steps={max_steps}", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        "--trainer.logger=false", f"--trainer.default_root_dir={root}", *extra,
    ]  # fmt: skip


def _signal_at(step, signum):
    spec = {"class_path": "tests.runs.signal_at_step.SignalAtStep", "init_args": {"step": step, "signum": signum}}
    return f"--trainer.callbacks+={json.dumps(spec)}"


@pytest.fixture(autouse=True)
def _fresh_stop_state(monkeypatch):
    monkeypatch.setattr(stopping, "_stop_signal", None)
    monkeypatch.setattr(stopping, "_stop_requested", type(stopping._stop_requested)())


def test_sigterm_writes_a_checkpoint_that_resumes_bitwise(sudoku4_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    whole = LoopformerCLI(args=_args(sudoku4_dir, tmp_path / "whole", 8))
    expected = {k: v.clone() for k, v in whole.model.net.state_dict().items()}

    with pytest.raises(SystemExit) as stopped:
        cli.main(_args(sudoku4_dir, tmp_path / "stopped", 8, _signal_at(4, signal.SIGTERM)))
    assert stopped.value.code == 128 + signal.SIGTERM
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert f"stopping on SIGTERM at step 5: {last} written in " in caplog.text
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 5  # the step during which the signal came, completed and saved
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]  # no partial file

    resumed = LoopformerCLI(args=_args(sudoku4_dir, tmp_path / "stopped", 8, f"--ckpt_path={last}"))
    got = resumed.model.net.state_dict()
    assert resumed.trainer.global_step == 8
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_sigint_stops_with_a_checkpoint_and_exit_code_130(sudoku4_dir, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        cli.main(_args(sudoku4_dir, tmp_path, 50, _signal_at(2, signal.SIGINT)))
    assert stopped.value.code == 128 + signal.SIGINT
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_a_signal_with_checkpointing_off_still_stops_cleanly(sudoku4_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit) as stopped:
        cli.main(
            _args(sudoku4_dir, tmp_path, 50, _signal_at(1, signal.SIGTERM), "--trainer.enable_checkpointing=false")
        )
    assert stopped.value.code == 143
    assert "stopping on SIGTERM at step 2 (checkpointing is off: nothing saved)" in caplog.text
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("every_minutes", [1e-6, 0.0])
def test_last_ckpt_is_written_on_a_timer_whatever_the_evaluation_interval(sudoku4_dir, tmp_path, every_minutes):
    LoopformerCLI(args=_args(sudoku4_dir, tmp_path, 6, f"--last_checkpoint.every_minutes={every_minutes}",
                             "--last_checkpoint.at_end=false"))  # fmt: skip
    last = tmp_path / "checkpoints" / "last.ckpt"
    if every_minutes:
        assert torch.load(last, weights_only=True)["global_step"] == 6  # rewritten after every step here
    else:
        assert not last.exists()
    assert [p.name for p in tmp_path.rglob("*.ckpt")] == (["last.ckpt"] if every_minutes else [])


def test_every_run_that_checkpoints_ends_with_its_final_state_in_last_ckpt(sudoku4_dir, tmp_path):
    LoopformerCLI(args=_args(sudoku4_dir, tmp_path / "a", 5, "--last_checkpoint.every_minutes=0"))
    assert torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=True)["global_step"] == 5
    LoopformerCLI(args=_args(sudoku4_dir, tmp_path / "b", 5, "--last_checkpoint.every_minutes=0",
                             "--trainer.enable_checkpointing=false"))  # fmt: skip
    assert not list((tmp_path / "b").rglob("*.ckpt"))


def test_with_on_signal_off_lightnings_own_handling_stops_the_run_without_a_checkpoint(sudoku4_dir, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        cli.main(_args(sudoku4_dir, tmp_path, 50, _signal_at(1, signal.SIGTERM), "--last_checkpoint.on_signal=false"))
    assert stopped.value.code == 143
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
