"""The compute a run spends, reported with stable names so that a sweep compares schedules at equal compute.

From the config (``model.compute.compute_cost``), logged as run config fields at the start of fit:
``compute/block_flops``, ``compute/blocks_per_act_step``, ``compute/grad_blocks_per_act_step``,
``compute/head_flops``, ``compute/flops_per_act_step``, ``compute/train_flops_per_step`` (forward + backward of one
optimizer step, all processes: ``training/budget.py``). At every evaluation of fit: ``compute/train_flops``, the
training FLOPs behind the weights evaluated (steps x train_flops_per_step). At every evaluation (the module asks
``evaluation_metrics``): ``<prefix>/blocks_per_puzzle`` and ``<prefix>/flops_per_puzzle`` (from the mean ACT steps
used), ``<prefix>/best_exact_accuracy`` and ``<prefix>/seconds_to_best`` (training wall time, evaluations excluded,
when it was first reached). At every logging interval of training: ``train/samples_per_second`` (over the interval,
all ranks) and ``train/peak_memory_gb`` (``torch.cuda.max_memory_allocated`` on a GPU, the process's peak resident
memory on the CPU).
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Optional

import lightning as L
import torch

from loopformer.model.compute import ComputeCost, compute_cost
from loopformer.training.scores import logs_written_this_batch

TRAIN_FLOPS = "compute/train_flops"  # logged with every evaluation of fit: training FLOPs spent so far
TRAIN_FLOPS_PER_STEP = "compute/train_flops_per_step"  # a run config field (training/budget.py counts it)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class ComputeReport(L.Callback):
    def __init__(self) -> None:
        self.cost: Optional[ComputeCost] = None
        self.training_seconds = 0.0  # wall time of training so far, evaluations excluded
        self._since: Optional[float] = None  # start of the running stretch of training
        self._samples = 0
        self._interval_start: Optional[float] = None
        self._interval_training = 0.0
        self.best: Optional[float] = None
        self.seconds_to_best: Optional[float] = None

    def cost_of(self, pl_module: L.LightningModule) -> ComputeCost:
        if self.cost is None:
            self.cost = compute_cost(pl_module.net.config)
        return self.cost

    # -- training: the clock and the throughput ------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fields = {**self.cost_of(pl_module).as_config(), TRAIN_FLOPS_PER_STEP: pl_module.train_flops_per_step()}
        for logger in trainer.loggers:
            logger.log_hyperparams(fields)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.perf_counter()
        self._interval_start, self._interval_training, self._samples = self._since, 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._samples += batch["inputs"].shape[0] * trainer.world_size
        if not logs_written_this_batch(trainer) or self._interval_start is None:
            return
        now = time.perf_counter()
        seconds = self._interval_training + (now - self._interval_start)
        pl_module.log("train/samples_per_second", self._samples / max(seconds, 1e-9), on_step=True, on_epoch=False)
        pl_module.log("train/peak_memory_gb", peak_memory_gb(pl_module.device), on_step=True, on_epoch=False)
        self._interval_start, self._interval_training, self._samples = now, 0.0, 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._since is not None:
            now = time.perf_counter()
            self.training_seconds += now - self._since
            self._interval_training += now - self._interval_start
            self._since = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._since is None and self._interval_start is not None:
            self._since = self._interval_start = time.perf_counter()

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluation_metrics(
        self, pl_module: L.LightningModule, prefix: str, metrics: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The compute behind an evaluation's metrics, and the best exact accuracy so far with when it came."""
        cost = self.cost_of(pl_module)
        steps = metrics[f"{prefix}/steps"].double()
        out = {
            f"{prefix}/blocks_per_puzzle": (steps * cost.blocks_per_act_step).float(),
            f"{prefix}/flops_per_puzzle": (steps * cost.flops_per_act_step).float(),
        }
        exact = float(metrics[f"{prefix}/exact_accuracy"])
        if pl_module.trainer.state.fn == "fit":  # the training compute behind these weights
            spent = pl_module.global_step * pl_module.train_flops_per_step()
            out[TRAIN_FLOPS] = torch.tensor(float(spent), dtype=torch.float64)
        if prefix == "val" and pl_module.trainer.state.fn == "fit":
            if self.best is None or exact > self.best:
                self.best, self.seconds_to_best = exact, self.training_seconds
            out[f"{prefix}/best_exact_accuracy"] = torch.tensor(self.best)
            out[f"{prefix}/seconds_to_best"] = torch.tensor(self.seconds_to_best)
        return out

    def state_dict(self) -> dict:
        return {"training_seconds": self.training_seconds, "best": self.best, "seconds_to_best": self.seconds_to_best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.training_seconds = state_dict.get("training_seconds", 0.0)
        self.best, self.seconds_to_best = state_dict.get("best"), state_dict.get("seconds_to_best")
