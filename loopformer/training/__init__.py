"""Training algorithms: how one batch trains the network. The LightningModule wires Lightning to the algorithm the
run chose (``training_algorithm``, the one place it is chosen) and owns what every algorithm shares: the network,
the ACT carry kept across batches, logging, the non-finite watch and the puzzle table's optimizer step.

An algorithm has ``automatic_optimization`` (whether Lightning steps the optimizer, once per batch) and
``training_step(module, batch)``, which returns the loss for Lightning to backpropagate, or None when it stepped
the optimizer itself. ``act.ACTTraining``: one ACT step per batch with deep supervision across batches (HRM, TRM).
``dis.DISTraining``: Deep Improvement Supervision, several supervised steps from the initial states per batch
(VirtualRecursiveNetwork).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

import torch

from loopformer.batch import Batch
from loopformer.training.config import TrainConfig


class TrainingAlgorithm(Protocol):
    automatic_optimization: bool

    def training_step(self, module: Any, batch: Batch) -> Optional[torch.Tensor]: ...


def training_algorithm(train: TrainConfig) -> TrainingAlgorithm:
    """The algorithm ``train.algorithm`` names."""
    from loopformer.training.act import ACTTraining
    from loopformer.training.dis import DISTraining

    return DISTraining(train) if train.algorithm == "dis" else ACTTraining()
