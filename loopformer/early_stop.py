"""Stop a run once it has clearly learned: the monitored metric at or above a threshold at several evaluations in a
row (one lucky evaluation is not enough). The quickstart uses it, so a newcomer waits minutes, not ten."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from loopformer.evaluation import HEADLINE_METRIC


class StopWhenLearned(L.Callback):
    def __init__(self, monitor: str = HEADLINE_METRIC, threshold: float = 0.99, times: int = 2) -> None:
        """
        Args:
            monitor: Metric logged at each evaluation.
            threshold: Value at or above which an evaluation counts.
            times: Evaluations in a row that must count before training stops.
        """
        if times < 1:
            raise ValueError(f"StopWhenLearned: times must be >= 1, got {times}.")
        self.monitor, self.threshold, self.times = monitor, threshold, times
        self.streak = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])  # reduced over ranks: every rank decides alike
        self.streak = self.streak + 1 if value >= self.threshold else 0
        if self.streak >= self.times:
            trainer.should_stop = True
            rank_zero_info(
                f"{self.monitor} >= {self.threshold:g} at {self.times} evaluations in a row: stopping at step "
                f"{trainer.global_step} (learned)."
            )

    def state_dict(self) -> dict:
        return {"streak": self.streak}

    def load_state_dict(self, state_dict: dict) -> None:
        self.streak = state_dict.get("streak", 0)
