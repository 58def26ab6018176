"""The non-finite guard without a per-step sync: each training step records, on the device, whether its loss or
gradient norm is finite; the host reads the record where it syncs anyway (the logging interval), before any
checkpoint is written, and when training ends. The error names the first bad step and value, and no checkpoint is
written after it, so the last one on disk is good."""

from __future__ import annotations

from typing import Any, Optional

import torch

KEYS = ("train/loss", "train/grad_norm")


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient: training stops, naming the step that produced it."""


class NonFiniteWatch:
    def __init__(self) -> None:
        self.first_step: Optional[torch.Tensor] = None  # -1 while every step was finite
        self.which: Optional[torch.Tensor] = None
        self.value: Optional[torch.Tensor] = None

    def observe(self, step: int, key: str, value: torch.Tensor) -> None:
        """Record ``value`` of training step ``step`` (no sync: tensor operations only)."""
        value = value.detach().float().reshape(-1)
        if self.first_step is None:
            self.first_step = torch.full((), -1, dtype=torch.long, device=value.device)
            self.which = torch.full((), -1, dtype=torch.long, device=value.device)
            self.value = torch.zeros((), device=value.device)
        fresh = (~torch.isfinite(value).all()) & (self.first_step < 0)
        bad_value = value[torch.argmin(torch.isfinite(value).to(torch.int8))]  # a non-finite entry if there is one
        self.first_step = torch.where(fresh, torch.full_like(self.first_step, step), self.first_step)
        self.which = torch.where(fresh, torch.full_like(self.which, KEYS.index(key)), self.which)
        self.value = torch.where(fresh, bad_value, self.value)

    def check(self, strategy: Any = None, world_size: int = 1) -> None:
        """Raise ``NonFiniteError`` if any rank saw a non-finite value (a sync; a collective with several ranks, so
        every rank must call it at the same point)."""
        if self.first_step is None:
            return
        record = torch.stack([self.first_step.float(), self.which.float(), self.value])
        if world_size > 1:
            gathered = strategy.all_gather(record).reshape(world_size, 3)
            bad = gathered[gathered[:, 0] >= 0]
            record = bad[bad[:, 0].argmin()] if bad.shape[0] else gathered[0]
        step, which, value = record.tolist()
        if step < 0:
            return
        raise NonFiniteError(
            f"training stopped at step {int(step)}: {KEYS[int(which)]} = {value} is not finite. The last checkpoint "
            "written before this step is intact; lower model.optim.lr, check the data, or resume from it with "
            "--ckpt_path."
        )
