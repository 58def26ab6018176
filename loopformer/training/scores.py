"""Training scores over the rows that halted since the last logging interval, summed on the device, so that no step
waits to learn whether any row halted."""

from __future__ import annotations

from typing import Any

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


def logs_written_this_batch(trainer: Any) -> bool:  # noqa: ANN401 (a Lightning Trainer)
    """Lightning writes this training batch's logs (every ``log_every_n_steps`` batches that step the optimizer, as
    its LearningRateMonitor asks): the end of a logging interval. ``global_step % log_every_n_steps`` is not it
    where a batch makes several optimizer steps (DIS's ``mask`` method)."""
    return getattr(trainer._logger_connector, "should_update_logs", True)
