"""Compute accounting: the cost of a block and an ACT step from the shapes, and what a run reports with it."""

import pytest
import yaml

from loopformer.cli import LoopformerCLI
from loopformer.model.compute import compute_cost
from loopformer.training.config import network_config_from_flat
from tests.helpers import tiny_fit_args


def test_the_quickstart_block_and_act_step_by_hand():
    cfg = network_config_from_flat(
        vocab_size=6,
        seq_len=16,
        hidden_size=64,
        num_heads=4,
        expansion=2.0,
        puzzle_emb_ndim=64,
        pos_encodings="learned",
        halt_max_steps=8,
    )  # fmt: skip  -- the quickstart: S = 16 + 1 prefix token, SwiGLU inner 256
    S, C, inner, V = 17, 64, 256, 6
    block = 8 * S * C * C + 4 * S * S * C + 6 * S * C * inner
    cost = compute_cost(cfg)
    assert cost.block_flops == block == 2_302_208
    assert (cost.blocks_per_act_step, cost.grad_blocks_per_act_step) == (18, 6)
    assert cost.head_flops == 2 * S * C * V + 4 * C
    assert cost.flops_per_act_step == 18 * block + cost.head_flops


def test_the_sequence_mlp_block_and_shared_modules():
    cfg = network_config_from_flat(
        vocab_size=11,
        seq_len=81,
        hidden_size=512,
        num_heads=8,
        puzzle_emb_ndim=512,
        puzzle_emb_len=16,
        mixer="mlp",
        states=[{"name": "z_H", "layers": 2}, {"name": "z_L", "layers": 2, "share_weights_with": "z_H"}],
        stages=[
            {"target": "z_L", "sources": ["z_H"], "include_inputs": True, "repeat": 6},
            {"target": "z_H", "sources": ["z_L"]},
        ],
    )  # fmt: skip  -- TRM's Sudoku recipe (mlp_t): S = 97, inner sizes 512 (width 97) and 1536 (width 512)
    S, C = 97, 512
    cost = compute_cost(cfg)
    assert cost.block_flops == 6 * C * S * 512 + 6 * S * C * 1536
    assert cost.blocks_per_act_step == 3 * (6 + 1) * 2 and cost.grad_blocks_per_act_step == 14


def test_a_run_reports_its_compute(sudoku4_dir, tmp_path):
    args = tiny_fit_args(
        sudoku4_dir, tmp_path, "--data.eval_batch_size=40", "--model.train.act.halt_max_steps=3",
        "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=2",
    )  # fmt: skip
    args = [a for a in args if a != "--trainer.logger=false"]
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}
    cli = LoopformerCLI(args=args, trainer_defaults={"logger": logger})
    cost = compute_cost(cli.model.net.config)
    m = cli.trainer.callback_metrics
    steps = m["val/steps"].item()
    assert m["val/blocks_per_puzzle"].item() == pytest.approx(steps * cost.blocks_per_act_step)
    assert m["val/flops_per_puzzle"].item() == pytest.approx(steps * cost.flops_per_act_step, rel=1e-6)
    assert m["val/best_exact_accuracy"].item() >= m["val/exact_accuracy"].item()
    assert 0 < m["val/seconds_to_best"].item() < 120
    assert m["train/samples_per_second"].item() > 0 and 0.05 < m["train/peak_memory_gb"].item() < 24
    hparams = yaml.safe_load(next(tmp_path.glob("lightning_logs/version_*/hparams.yaml")).read_text())
    assert hparams["compute/flops_per_act_step"] == cost.flops_per_act_step
    assert hparams["compute/blocks_per_act_step"] == 18
