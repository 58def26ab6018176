"""Training measured in FLOPs (model.budget): the formula, the step it ends at for schedules of different depth, the
evaluation cadence, and compute/train_flops at every evaluation."""

import math

import pytest

from loopformer.cli import LoopformerCLI
from loopformer.errors import ConfigError
from loopformer.model.compute import ComputeCost
from loopformer.training.budget import BudgetConfig, step_counts, train_flops_per_example
from loopformer.training.config import TrainConfig
from tests.helpers import ROOT, tiny_fit_args

COST = ComputeCost(block_flops=100, blocks_per_act_step=18, grad_blocks_per_act_step=6, head_flops=10,
                   flops_per_act_step=18 * 100 + 10)  # fmt: skip


def test_training_flops_count_a_backward_as_twice_the_forward_of_what_has_gradient():
    assert train_flops_per_example(COST, TrainConfig()) == 1810 + 2 * (600 + 10)
    q_bootstrap = TrainConfig(act={"no_ACT_continue": False})
    assert train_flops_per_example(COST, q_bootstrap) == 1810 + 2 * 610 + 1810  # one more forward, no gradient
    assert train_flops_per_example(COST, TrainConfig(algorithm="dis")) == 1810 + 2 * 610  # mask: per supervision step
    dis_loss = TrainConfig(algorithm="dis", dis={"loss_method": "loss", "max_steps": 4})
    assert train_flops_per_example(COST, dis_loss) == 4 * (1810 + 2 * 610)  # one backward through all 4


def test_step_counts_and_bad_budgets():
    counts = step_counts(BudgetConfig(train_flops=1000, eval_every_flops=300), flops_per_step=300)
    assert (counts.max_steps, counts.eval_every_steps) == (4, 1)  # ceil(1000/300): 3.33 reports, not a whole number
    counts = step_counts(BudgetConfig(train_flops=1000, eval_every_flops=250), flops_per_step=300)
    assert (counts.max_steps, counts.eval_every_steps) == (4, 1)  # 4 whole reports: 4 intervals of round(0.83)=1
    counts = step_counts(BudgetConfig(train_flops=10e9, eval_every_flops=1e9), flops_per_step=3e7)
    assert (counts.max_steps, counts.eval_every_steps) == (330, 33)  # 10 reports exactly, the last one ends it
    assert step_counts(BudgetConfig(eval_every_flops=1000), 300).eval_every_steps == 3
    assert step_counts(BudgetConfig(train_flops=1000), 300).max_steps == 4
    counts = step_counts(BudgetConfig(train_flops=3600, eval_every_flops=1100), 100, steps_per_batch=6)
    assert (counts.max_steps, counts.eval_every_steps) == (36, 12)  # whole batches of 6 steps: 2 per evaluation
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="model.budget.train_flops="):
            BudgetConfig(train_flops=bad)


def _fit(data, root, *flags):
    args = tiny_fit_args(data, root, "--trainer.max_steps=1000", "--model.train.act.halt_max_steps=2", *flags)
    return LoopformerCLI(args=[*args, "--data.eval_batch_size=40"])


def test_the_budget_ends_training_at_equal_compute_for_schedules_of_different_depth(sudoku4_dir, tmp_path, caplog):
    from loopformer.model.compute import compute_cost
    from loopformer.training.budget import TrainingBudget

    caplog.set_level("INFO")
    budget, every_flops = 2.4e9, 7.4e8
    shallow = ["--model.arch.stages.0.repeat=1", "--model.arch.stages.1.repeat=1"]
    steps = {}
    for name, flags in (("default", []), ("shallow", shallow)):
        cli = _fit(sudoku4_dir, tmp_path / name, f"--model.budget.train_flops={budget}",
                   f"--model.budget.eval_every_flops={every_flops}", *flags)  # fmt: skip
        (counts,) = [c.counts for c in cli.trainer.callbacks if isinstance(c, TrainingBudget)]
        model = cli.model
        per_step = train_flops_per_example(compute_cost(model.net.config), model.train_config) * 16
        assert counts.flops_per_step == per_step
        steps[name] = cli.trainer.global_step
        assert steps[name] == math.ceil(budget / per_step) and (steps[name] - 1) * per_step < budget
        every = max(1, round(every_flops / per_step))
        evaluations = [int(line.split()[3]) for line in caplog.messages if line.startswith("val at step")]
        assert evaluations == [every * k for k in range(1, steps[name] // every + 1)], name
        assert float(cli.trainer.callback_metrics["compute/train_flops"]) == evaluations[-1] * per_step
        assert (
            f"model.budget: {per_step:.4g} training FLOPs per step (16 examples); budget 2.4e+09 FLOPs = "
            f"{steps[name]} steps (in place of trainer.max_steps=1000)" in caplog.text
        )  # the limit given with the budget has no effect, and the line says so
        caplog.clear()
    assert steps["shallow"] > steps["default"] >= 4  # the deeper schedule gets fewer steps of the same budget


def test_accumulated_batches_count_in_the_compute_of_a_step_and_in_the_evaluation_cadence(
    sudoku4_dir, tmp_path, caplog
):
    """With trainer.accumulate_grad_batches=2 an optimizer step takes two batches: twice the FLOPs of one, and an
    evaluation every k steps is one every 2k batches (Lightning counts val_check_interval in batches)."""
    from loopformer.model.compute import compute_cost
    from loopformer.training.budget import TrainingBudget

    caplog.set_level("INFO")
    cli = _fit(sudoku4_dir, tmp_path / "acc", "--trainer.accumulate_grad_batches=2", "--model.budget.train_flops=2.4e9",
               "--model.budget.eval_every_flops=7.4e8")  # fmt: skip
    per_step = train_flops_per_example(compute_cost(cli.model.net.config), cli.model.train_config) * 16 * 2
    (counts,) = [c.counts for c in cli.trainer.callbacks if isinstance(c, TrainingBudget)]
    assert counts.flops_per_step == per_step and cli.trainer.global_step == math.ceil(2.4e9 / per_step)
    every = max(1, round(7.4e8 / per_step))
    evaluations = [int(line.split()[3]) for line in caplog.messages if line.startswith("val at step")]
    assert evaluations == [every * k for k in range(1, cli.trainer.global_step // every + 1)]
    assert float(cli.trainer.callback_metrics["compute/train_flops"]) == evaluations[-1] * per_step
    assert "training FLOPs per step (32 examples)" in caplog.text


def test_dis_batches_of_several_optimizer_steps_evaluate_at_the_budgeted_steps(sudoku4_dir, tmp_path, caplog):
    """DIS's mask method takes an optimizer step per supervision step, several per batch, and Lightning evaluates
    between batches: the budget's interval in steps was used as a count of batches, so a DIS run evaluated max_steps
    times less often than budgeted (a short run not at all)."""
    from loopformer.training.budget import TrainingBudget

    def fit(root, *flags):
        args = tiny_fit_args(sudoku4_dir, root, "--model.arch.puzzle_emb_len=1", "--model.arch.num_heads=2",
                             "--model.train.dis.max_steps=3", "--data.eval_batch_size=40", *flags)  # fmt: skip
        args[3:3] = ["--model", str(ROOT / "configs/vrn/loop_transformer_dis.yaml")]
        return LoopformerCLI(args=args)

    probe = fit(tmp_path / "probe", "--model.budget.train_flops=1", "--trainer.limit_val_batches=0")
    (counts,) = [c.counts for c in probe.trainer.callbacks if isinstance(c, TrainingBudget)]
    assert probe.trainer.global_step == 3  # one batch: three supervision steps, an optimizer step each
    per_batch = 3 * counts.flops_per_step
    caplog.set_level("INFO")
    cli = fit(tmp_path / "run", f"--model.budget.train_flops={6 * per_batch}",
              f"--model.budget.eval_every_flops={2 * per_batch}")  # fmt: skip
    evaluations = [int(line.split()[3]) for line in caplog.messages if line.startswith("val at step")]
    assert evaluations == [6, 12, 18] and cli.trainer.global_step == 18  # every 2 batches, 3 reports
    assert "an evaluation every" in caplog.text and "= 6 steps" in caplog.text
