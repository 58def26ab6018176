"""EMA: the average of the trainable weights (not the puzzle-embedding table), used for validation and
stored as the checkpoint's weights, with the raw weights kept for resuming."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from loopformer.cli import LoopformerCLI
from loopformer.ema import EMA, WeightEMA
from tests.helpers import tiny_fit_args

ROOT = Path(__file__).resolve().parents[1]


def test_update_is_the_exponential_average_and_swaps_are_exact():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    ema = WeightEMA(net, rate=0.9)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.shadow["0.weight"], 0.9 * w0 + 0.1 * (w0 + 1.0))
    raw = net[0].weight.detach().clone()
    ema.swap_in()
    assert torch.equal(net[0].weight, ema.shadow["0.weight"])
    ema.swap_out()
    assert torch.equal(net[0].weight, raw)
    with pytest.raises(ValueError, match="model.ema.rate"):
        WeightEMA(net, rate=1.0)


class WeightSpy(L.Callback):
    def __init__(self):
        self.in_validation = []
        self.in_training = []

    def on_validation_batch_start(self, trainer, pl_module, *args):
        self.in_validation.append(pl_module.net.inner.lm_head.weight.detach().clone())

    def on_train_batch_start(self, trainer, pl_module, *args):
        self.in_training.append(pl_module.net.inner.lm_head.weight.detach().clone())


def test_validation_and_checkpoints_use_the_average(sudoku4_dir, tmp_path):
    spy = WeightSpy()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    cli = LoopformerCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=16",
            "--data.eval_batch_size=40",
            "--model.arch.hidden_size=32",
            "--model.arch.puzzle_emb_ndim=32",
            "--model.train.act.halt_max_steps=2",
            "--model.ema.enabled=true",
            "--model.ema.rate=0.9",
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=4",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        trainer_defaults={"callbacks": [spy, ckpt]},
    )
    ema = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EMA)).average
    assert torch.equal(spy.in_validation[0], ema.shadow["inner.lm_head.weight"])
    assert not torch.equal(spy.in_validation[0], cli.model.net.inner.lm_head.weight)  # raw restored after
    assert "inner.puzzle_emb.weights" not in ema.shadow
    state = torch.load(next((tmp_path / "ckpt").glob("*.ckpt")), weights_only=True)
    raw = state["loopformer"]["raw_state_dict"]
    assert torch.equal(state["state_dict"]["net.inner.lm_head.weight"], ema.shadow["inner.lm_head.weight"])
    assert torch.equal(raw["net.inner.lm_head.weight"], cli.model.net.inner.lm_head.weight)
    assert torch.equal(state["state_dict"]["net.inner.puzzle_emb.weights"], raw["net.inner.puzzle_emb.weights"])


def _validate(checkpoint, tmp_path, spy, *flags):
    LoopformerCLI(
        args=["validate", f"--ckpt_path={checkpoint}", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
              f"--trainer.default_root_dir={tmp_path}", *flags],
        trainer_defaults={"callbacks": [spy]},
    )  # fmt: skip


def test_validating_a_checkpoint_without_ema_reads_its_raw_weights(sudoku4_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    fit = tiny_fit_args(sudoku4_dir, tmp_path / "fit", "--model.train.act.halt_max_steps=2", "--model.ema.enabled=true",
                        "--model.ema.rate=0.9", "--trainer.max_steps=3", "--trainer.limit_val_batches=0")  # fmt: skip
    LoopformerCLI(args=fit)
    checkpoint = tmp_path / "fit" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    averaged = state["state_dict"]["net.inner.lm_head.weight"]
    raw = state["loopformer"]["raw_state_dict"]["net.inner.lm_head.weight"]
    assert not torch.equal(averaged, raw)

    with_ema, without_ema = WeightSpy(), WeightSpy()
    _validate(checkpoint, tmp_path / "ema", with_ema)  # the checkpoint's own setting: the average
    assert "raw weights" not in caplog.text
    _validate(checkpoint, tmp_path / "raw", without_ema, "--model.ema.enabled=false")
    assert torch.equal(with_ema.in_validation[0], averaged)
    assert torch.equal(without_ema.in_validation[0], raw)
    assert "model.ema.enabled=false: evaluating the checkpoint's raw weights, not their moving average." in caplog.text
