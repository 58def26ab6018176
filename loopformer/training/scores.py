"""Training scores over the rows that halted since the last logging interval, summed on the device, so that no step
waits to learn whether any row halted."""

from __future__ import annotations

import torch

SCORE_KEYS = ("count", "exact_accuracy", "accuracy", "q_halt_accuracy", "steps")


class IntervalScores:
    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add a step's score sums; returns the interval's means as ``train/<score>``."""
        for k in SCORE_KEYS:
            if k in sums:
                self.sums[k] = self.sums.get(k, 0) + sums[k].detach().float()
        count = self.sums["count"].clamp_min(1)
        return {f"train/{k}": v / count for k, v in self.sums.items() if k != "count"}

    def reset(self) -> None:
        self.sums = {}
