"""ACT training with deep supervision (HRM, TRM): each batch takes one ACT step from the carry the previous batch
left; rows that halted take new puzzles. The step itself (forward, heads, loss) is ``model.training_step``."""

from __future__ import annotations

from typing import Any

import torch

from loopformer.batch import Batch
from loopformer.model import ACTCarry


class ACTTraining:
    automatic_optimization = True

    def training_step(self, module: Any, batch: Batch) -> torch.Tensor:
        if module.carry is None or module.carry.steps.shape[0] != batch["inputs"].shape[0]:
            module.carry = module.net.initial_carry(batch)
        elif module.carry.steps.device != batch["inputs"].device:  # restored from a checkpoint on the CPU
            module.carry = ACTCarry.from_dict(module.carry.to_dict(), device=batch["inputs"].device)
        module.carry, loss_sum, sums = module.act_training_step(module.carry, batch)
        batch_size = batch["inputs"].shape[0]
        # Summed over rows, divided by the batch size; DDP's gradient mean makes it the global batch size.
        loss = loss_sum / batch_size
        module.nonfinite.observe(module.global_step, "train/loss", loss)
        # The losses are averaged over ranks (equal batch sizes): the global batch's loss, whatever the rank count.
        lm_loss = sums["lm_loss"] if module.train_config.loss_head == "cross_entropy" else sums["lm_loss"] / batch_size
        losses = {"train/loss": loss.detach(), "train/lm_loss": lm_loss}
        module.log_dict(losses, on_step=True, on_epoch=False, sync_dist=True, batch_size=batch_size)
        module.log_scores(sums, batch_size)
        return loss.float()
