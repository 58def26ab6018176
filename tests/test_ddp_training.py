"""Data-parallel training is the same computation: 2 CPU processes (DDP, gloo) with half of each global
batch give the losses and weights of 1 process with the whole batch."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


class SaveTablePerRank(L.Callback):
    """Writes every rank's puzzle-embedding table after every step (the subprocess imports it from tests/)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.path.mkdir(parents=True, exist_ok=True)
        table = pl_module.net.inner.puzzle_emb.weights.detach().cpu()
        torch.save(table, self.path / f"rank{trainer.global_rank}-step{trainer.global_step}.pt")


def _train(data_dir, root: Path, devices: int, stop_at: int = 4, *extra: str) -> tuple[list[float], dict]:
    """``max_steps`` 4 (the schedule plans for 4), interrupted after ``stop_at`` steps with a checkpoint there."""
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(root / "ckpt"), "every_n_train_steps": stop_at, "filename": "final"},
    }
    tables = {"class_path": "tests.test_ddp_training.SaveTablePerRank", "init_args": {"path": str(root / "tables")}}
    stop = {"class_path": "tests.test_resume.StopAt", "init_args": {"step": stop_at}}
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root)}}
    cmd = [
        str(Path(sys.executable).parent / "loopformer"),
        "fit",
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        f"--data.data_paths={data_dir}",
        "--data.global_batch_size=32",  # 3 steps per epoch: 4 steps cross an epoch boundary
        "--model.arch.hidden_size=32",
        "--model.arch.puzzle_emb_ndim=32",
        "--model.train.act.halt_max_steps=3",
        "--model.train.act.halt_exploration_prob=0.0",  # exploration draws per-rank random numbers
        "--model.optim.lr_warmup_steps=1",
        "--trainer.max_steps=4",
        "--trainer.limit_val_batches=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        f"--trainer.logger={json.dumps(logger)}",
        f"--trainer.callbacks=[{json.dumps(checkpoint)}, {json.dumps(tables)}, {json.dumps(stop)}]",
        f"--trainer.default_root_dir={root}",
        *extra,
    ]
    proc = subprocess.run(
        cmd,
        env=dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT)),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "is deprecated" not in proc.stderr, proc.stderr[-3000:]  # Lightning's all_gather, once per rank
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    state = torch.load(root / "ckpt" / "final.ckpt", weights_only=True)["state_dict"]
    return losses, state


def _with_eight_puzzle_identifiers(src: Path, dst: Path) -> Path:
    """The Sudoku fixture with 8 puzzle identifiers, so that the ranks update different embedding rows."""
    from loopformer.data.format import load_split, save_split

    for split in ("train", "test"):
        meta, sets = load_split(src / split)
        s = sets["all"]
        s.puzzle_identifiers = (np.arange(s.puzzle_identifiers.size) % 8).astype(np.int32)
        s.inputs, s.labels = np.asarray(s.inputs), np.asarray(s.labels)
        meta.num_puzzle_identifiers = 8
        save_split(dst / split, meta, {"all": s})
    return dst


def test_two_processes_with_half_batches_match_one_process(sudoku4_dir, tmp_path):
    data = _with_eight_puzzle_identifiers(sudoku4_dir, tmp_path / "data")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    losses_1, weights_1 = _train(data, tmp_path / "one", 1)
    losses_2, weights_2 = _train(data, tmp_path / "two", 2)
    assert len(losses_1) == len(losses_2) == 4
    for a, b in zip(losses_1, losses_2, strict=True):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (losses_1, losses_2)
    assert weights_1.keys() == weights_2.keys()
    for k in weights_1:
        torch.testing.assert_close(weights_2[k], weights_1[k], atol=1e-5, rtol=1e-4, msg=k)
    # sign-SGD on rows gathered from both ranks: the table equals the single process's exactly
    table = weights_1["net.inner.puzzle_emb.weights"]
    assert (table.abs().sum(-1) > 0).sum() == 8 and torch.equal(weights_2["net.inner.puzzle_emb.weights"], table)
    for step in range(1, 5):  # after every step, both ranks hold the same table
        rank0 = torch.load(tmp_path / "two" / "tables" / f"rank0-step{step}.pt")
        rank1 = torch.load(tmp_path / "two" / "tables" / f"rank1-step{step}.pt")
        assert torch.equal(rank0, rank1), step


@pytest.mark.slow  # run by .ci/run; the default suite stays under 15 minutes
def test_two_processes_resume_mid_run_bitwise(sudoku4_dir, tmp_path):
    """2 ranks: 4 steps straight equal 2 steps, a checkpoint, and 2 more (across an epoch boundary: 3 per epoch)."""
    for name in ("straight", "first", "second"):
        (tmp_path / name).mkdir()
    _, straight = _train(sudoku4_dir, tmp_path / "straight", 2, 4, "--data.prefetch=0")
    _train(sudoku4_dir, tmp_path / "first", 2, 2)
    _, resumed = _train(
        sudoku4_dir, tmp_path / "second", 2, 4, f"--ckpt_path={tmp_path / 'first' / 'ckpt' / 'final.ckpt'}"
    )
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
