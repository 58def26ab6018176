"""Training measured in compute: a run trains for a budget of training FLOPs and evaluates every so many, so that the
runs of a sweep whose schedules differ in depth are compared at equal training compute (each report after the same
compute, which is what hyperband's rungs then count), not at equal steps.

Training FLOPs, per example of a batch, counted as ``model/compute.py`` counts forward FLOPs, with a backward pass at
twice its forward:

=====================  =============================================================================================
ACT (one ACT step)     forward of the whole step (``flops_per_act_step``) + 2 x (the blocks with gradient + heads)
                       + one more forward without gradient when ``no_ACT_continue`` is false (Q bootstrapping)
DIS, method ``mask``   the same per supervision step; each supervision step is one optimizer step
DIS, method ``loss``   ``max_steps`` times that per optimizer step (one backward through every supervision step)
=====================  =============================================================================================

An optimizer step (``trainer.global_step``) costs that x ``data.global_batch_size`` (all processes). A training
step's compute is fixed by the schedule, so the run turns its budget into step counts once, at the start of fit
(``TrainingBudget``), and prints them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from loopformer.errors import ConfigError
from loopformer.model.compute import ComputeCost
from loopformer.training.config import TrainConfig


@dataclass
class BudgetConfig:
    """Training compute instead of step counts (``model.budget.*``): set both in a sweep whose schedules differ."""

    train_flops: Optional[float] = None
    """End training once this many training FLOPs are spent (forward + backward, all processes; see
    ``training/budget.py``); replaces trainer.max_steps and max_epochs. None: the trainer's own limits."""
    eval_every_flops: Optional[float] = None
    """Evaluate every this many training FLOPs; replaces trainer.val_check_interval and check_val_every_n_epoch.
    None: the trainer's own cadence."""

    def __post_init__(self) -> None:
        for name in ("train_flops", "eval_every_flops"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
                raise ConfigError(
                    f"model.budget.{name}={shown}: expected a number of FLOPs > 0 (e.g. 1.5e15), or null."
                )

    @property
    def enabled(self) -> bool:
        return self.train_flops is not None or self.eval_every_flops is not None


def train_flops_per_example(cost: ComputeCost, train: TrainConfig) -> int:
    """Training FLOPs of one optimizer step, per example of its batch (the table above)."""
    grad_blocks = cost.grad_blocks_per_act_step * cost.block_flops
    step = cost.flops_per_act_step + 2 * (grad_blocks + cost.head_flops)
    if train.algorithm == "dis":
        return step * (train.dis.max_steps if train.dis.loss_method == "loss" else 1)
    if not train.act.no_ACT_continue:
        step += cost.flops_per_act_step  # the next step's Q, without gradient
    return step


@dataclass(frozen=True)
class StepCounts:
    flops_per_step: int
    max_steps: Optional[int]
    eval_every_steps: Optional[int]

    def describe(self, budget: BudgetConfig, batch_size: int, replaced: Optional[dict[str, Any]] = None) -> str:
        """The line a run prints; ``replaced``: the trainer's settings the budget stands in for, named beside it (a
        ``--trainer.max_steps`` given with a budget has no effect, and the line says so)."""
        replaced = replaced or {}
        per_step = f"{self.flops_per_step:.4g} training FLOPs per step ({batch_size} examples)"
        parts = []
        if self.max_steps is not None:
            parts.append(
                f"budget {budget.train_flops:.4g} FLOPs = {self.max_steps} steps" + _instead(replaced, "max_steps")
            )
        if self.eval_every_steps is not None:
            parts.append(
                f"an evaluation every {budget.eval_every_flops:.4g} FLOPs = {self.eval_every_steps} steps"
                + _instead(replaced, "val_check_interval")
            )
        return f"model.budget: {per_step}; " + "; ".join(parts)


LIGHTNING_DEFAULTS = {"max_steps": -1, "val_check_interval": 1.0}  # no limit; once an epoch (a fraction)


def _instead(replaced: dict[str, Any], key: str) -> str:
    value, default = replaced.get(key), LIGHTNING_DEFAULTS[key]
    if value is None or (value == default and type(value) is type(default)):
        return ""
    return f" (in place of trainer.{key}={value})"


def step_counts(budget: BudgetConfig, flops_per_step: int, steps_per_batch: int = 1) -> StepCounts:
    """Steps between evaluations: the nearest whole number of batches, at least 1, so the k-th evaluation comes after
    k x ``eval_every_flops`` within k half batches (a relative error of at most 1 / (2 x batches per evaluation)).
    Steps for the budget: when it is a whole number of evaluation intervals (a sweep's 10 reports), that many
    intervals, so that every run reports the same number of times and its last report ends training; otherwise the
    batches that spend it (the last one may pass it by less than a batch). ``steps_per_batch``: the optimizer steps
    one batch makes (DIS's ``mask`` method: one per supervision step): Lightning evaluates between batches."""
    per_batch = flops_per_step * steps_per_batch
    every = max(1, round(budget.eval_every_flops / per_batch)) if budget.eval_every_flops is not None else None
    batches = None
    if budget.train_flops is not None:
        batches = math.ceil(budget.train_flops / per_batch)
        if every is not None:
            reports = budget.train_flops / budget.eval_every_flops
            if reports >= 1 and abs(reports - round(reports)) <= 1e-6 * reports:
                batches = round(reports) * every
    return StepCounts(
        flops_per_step,
        None if batches is None else batches * steps_per_batch,
        None if every is None else every * steps_per_batch,
    )


class TrainingBudget(L.Callback):
    """Sets the trainer's step limit and evaluation cadence from ``model.budget`` before fit starts its loops (after
    the data is prepared: the sequence length and vocabulary size come from it)."""

    def __init__(self, budget: BudgetConfig) -> None:
        self.budget = budget
        self.counts: Optional[StepCounts] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.fast_dev_run:  # a smoke test of a batch or a few: its own limits stand
            rank_zero_info("model.budget: not applied under trainer.fast_dev_run")
            return
        steps_per_batch = pl_module.train_config.optimizer_steps_per_batch
        self.counts = step_counts(self.budget, pl_module.train_flops_per_step(), steps_per_batch)
        replaced = {"max_steps": trainer.max_steps, "val_check_interval": trainer.val_check_interval}
        if self.counts.max_steps is not None:
            trainer.fit_loop.epoch_loop.max_steps = self.counts.max_steps
            trainer.fit_loop.max_epochs = -1  # the budget alone ends training
        if self.counts.eval_every_steps is not None:
            # counted in batches by Lightning: an optimizer step is accumulate_grad_batches of them, or a DIS batch
            # makes steps_per_batch steps
            batches = self.counts.eval_every_steps // steps_per_batch * max(1, int(trainer.accumulate_grad_batches))
            trainer.val_check_interval = batches
            trainer.check_val_every_n_epoch = None  # counted in steps across epochs
        rank_zero_info(self.counts.describe(self.budget, pl_module.examples_per_step(), replaced))
        units = None if self.counts.eval_every_steps is None else self.counts.eval_every_steps // steps_per_batch
        if units is not None and units < 20:
            unit, plural = ("step", "steps") if steps_per_batch == 1 else ("batch", "batches")
            of = "" if steps_per_batch == 1 else f" of {steps_per_batch} steps"
            rank_zero_warn(
                f"model.budget.eval_every_flops is {units} {unit if units == 1 else plural}{of} of this schedule: "
                f"evaluations come at equal compute only within {50 / units:.0f}% (a {unit}{of} is the unit); give "
                f"each evaluation at least 20 {plural} for comparisons within 2.5%."
            )
