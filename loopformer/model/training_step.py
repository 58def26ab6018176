"""One ACT training step as one function: the step (core, heads, carry update), its loss and metric sums.

With ``compile`` the whole of it is one ``torch.compile`` graph, forward and backward: no graph break and no
recompilation from step to step (rows halting, puzzles replaced), because everything that would vary or break
is done before it, eagerly, by ``LoopTransformer.step_controls``.
"""

from __future__ import annotations

from typing import Optional

import torch

from loopformer.model.act import ACTCarry, Batch, CompiledStep, LoopTransformer, StepControls
from loopformer.model.losses import act_loss, cross_entropy_loss


class ACTTrainingStep:
    """``carry, loss_sum, sums = step(carry, batch)``: the loss summed over rows (the caller divides by the batch
    size) and the metric sums of ``act_loss`` (or of ``cross_entropy_loss`` with its row-summed ``steps``)."""

    def __init__(self, net: LoopTransformer, loss_type: str, loss_head: str) -> None:
        self.net = net
        self.loss_type, self.loss_head = loss_type, loss_head
        self._fn = self.step

    def compile(self, mode: Optional[str] = None, backend: Optional[str] = None) -> None:
        self._fn = CompiledStep(self.step, mode, backend)

    def __call__(self, carry: ACTCarry, batch: Batch) -> tuple[ACTCarry, torch.Tensor, dict[str, torch.Tensor]]:
        return self._fn(carry, batch, self.net.step_controls(carry, batch))

    def step(
        self, carry: ACTCarry, batch: Batch, controls: StepControls
    ) -> tuple[ACTCarry, torch.Tensor, dict[str, torch.Tensor]]:
        carry, outputs = self.net.act_step(carry, batch, controls)
        labels = carry.current_data["labels"]
        if self.loss_head == "cross_entropy":
            # VRN's head: the batch's token-mean loss (the caller's 1 / batch size is VRN's trainer's own scaling).
            loss, sums = cross_entropy_loss(outputs, labels, self.loss_type)
            sums["steps"] = carry.steps.sum()
            return carry, loss, sums
        loss, sums = act_loss(outputs, labels, carry.halted, carry.steps, self.loss_type)
        return carry, loss, sums
