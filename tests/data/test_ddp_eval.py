"""Evaluation over 2 CPU processes (DDP, gloo) visits every test example once and reports exactly the
metrics of a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopformer.cli import LoopformerCLI
from loopformer.sweep.metrics_file import metrics_file_flag
from tests.helpers import tiny_fit_args


@pytest.fixture(scope="module")
def checkpoint(sudoku4_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_eval")
    extra = ["--model.train.act.halt_max_steps=3", "--trainer.max_steps=30", "--trainer.limit_val_batches=0"]
    cli = LoopformerCLI(args=tiny_fit_args(sudoku4_dir, tmp, *extra))
    path = tmp / "model.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


def _validate(ckpt, data_dir, devices, tmp_path):
    metrics = tmp_path / f"metrics-{devices}.jsonl"
    env = dict(os.environ, WANDB_MODE="disabled")
    cmd = [
        str(Path(sys.executable).parent / "loopformer"),
        "validate",
        f"--data.data_paths={data_dir}",
        "--data.eval_batch_size=16",  # 40 examples: the last global batch has 8, all on rank 0
        f"--ckpt_path={ckpt}",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        metrics_file_flag(str(metrics)),
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sync_dist" not in proc.stderr, proc.stderr[-3000:]  # the metrics are gathered: no advice to sync them
    lines = metrics.read_text().splitlines()
    assert len(lines) == 1  # one report per evaluation, from rank 0 only
    return json.loads(lines[0])


def test_two_process_evaluation_equals_one_process(checkpoint, sudoku4_dir, tmp_path):
    single = _validate(checkpoint, sudoku4_dir, 1, tmp_path)
    double = _validate(checkpoint, sudoku4_dir, 2, tmp_path)
    assert single["val/count"] == double["val/count"] == 40
    for key, value in single.items():
        assert double[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
