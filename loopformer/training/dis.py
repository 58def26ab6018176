"""Deep Improvement Supervision (VirtualRecursiveNetwork): ``model.train.dis.max_steps`` supervised steps per batch from the
initial states, step s toward its own target (the ``mask`` method: linear masked targets, an optimizer step per
supervision step, optionally weighted by (s + 1) / steps; the ``loss`` method: one optimizer step on the
improvement loss over all steps). VRN's own loop starts from ``torch.empty`` states it never resets, an upstream bug
not reproduced here."""

from __future__ import annotations

from typing import Any

import torch

from loopformer.batch import Batch
from loopformer.model.losses import cross_entropy_loss, dis_improvement_loss, dis_target
from loopformer.training.config import TrainConfig


class DISTraining:
    automatic_optimization = False  # several optimizer steps per batch: the algorithm steps the optimizer itself

    def __init__(self, train: TrainConfig) -> None:
        self.dis, self.loss_type = train.dis, train.loss_type

    def training_step(self, module: Any, batch: Batch) -> None:
        dis, mask_token_id = self.dis, module.net.config.mask_token_id
        optimizer, scheduler = module.optimizers(), module.lr_schedulers()
        steps, batch_size = dis.max_steps, batch["inputs"].shape[0]
        labels = batch["labels"]
        mask_method = dis.loss_method == "mask"
        noise = torch.rand(labels.shape, device=labels.device) if mask_method else None  # one draw per batch
        carry = module.net.initial_carry(batch)
        losses, totals = [], {}
        for s in range(steps):
            target = dis_target(labels, batch["inputs"], s, steps, mask_token_id, noise) if mask_method else labels
            carry, outputs = module.net(carry, {**batch, "labels": target})
            loss, sums = cross_entropy_loss(outputs, target, self.loss_type, dis.mask_penalty_weight, mask_token_id)
            for k, v in sums.items():
                totals[k] = totals.get(k, 0) + v.float()
            if mask_method:
                weight = (s + 1) / steps if dis.step_weighting else 1.0
                _optimizer_step(module, optimizer, scheduler, loss * weight / batch_size)
            else:
                losses.append(loss)
        if not mask_method:
            _optimizer_step(module, optimizer, scheduler, dis_improvement_loss(losses) / batch_size)
        log = {
            "train/loss": totals["lm_loss"] / steps,
            "train/lm_loss": totals["lm_loss"] / steps,
            "train/mask_penalty": totals["mask_penalty"] / steps,
        }
        module.log_dict(log, on_step=True, on_epoch=False, sync_dist=True, batch_size=batch_size)
        module.log_scores(sums, batch_size)  # the last step's target is the labels: its scores are the run's


def _optimizer_step(module: Any, optimizer: Any, scheduler: Any, loss: torch.Tensor) -> None:
    module.nonfinite.observe(module.global_step, "train/loss", loss)
    optimizer.zero_grad()
    module.manual_backward(loss)
    optimizer.step()  # runs on_before_optimizer_step (the gradient check) and counts one global step
    scheduler.step()
    module.puzzle_table_step(optimizer.optimizer)
