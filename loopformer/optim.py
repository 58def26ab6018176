"""Optimisation of the network: its settings, AdamW on the weights, sign-SGD on the puzzle-embedding table, and
the HRM/TRM learning-rate schedule (linear warmup, then cosine decay to ``lr_min_ratio``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn


@dataclass
class OptimConfig:
    """How the network is optimised: ``--model.optim.<field>`` on the command line."""

    lr: float = 1e-4
    """Peak learning rate of the network weights."""
    lr_min_ratio: float = 1.0
    """Final learning rate of the cosine decay, as a fraction of the peak."""
    lr_warmup_steps: int = 2000
    """Optimizer steps of linear warmup."""
    weight_decay: float = 0.1
    """AdamW weight decay of the network weights."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    puzzle_emb_lr: float = 1e-2
    """Peak learning rate of the puzzle embeddings (sign-SGD, on the same schedule)."""
    puzzle_emb_weight_decay: float = 0.1
    """Weight decay of the puzzle embeddings."""


def warmup_cosine(step: int, warmup_steps: int, total_steps: float, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if not math.isfinite(total_steps) or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def configure_optimizers(net: nn.Module, config: OptimConfig, total_steps: float) -> dict[str, Any]:
    """AdamW over the network's parameters, stepped per optimizer step on the warmup-cosine schedule.

    The puzzle-embedding table is not a parameter: ``puzzle_embedding_step`` updates it."""
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        # Multiplier for the (step + 1)-th update, as the reference trainers count steps from 1.
        optimizer,
        lambda step: warmup_cosine(step + 1, config.lr_warmup_steps, float(total_steps), config.lr_min_ratio),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def puzzle_embedding_step(
    net: nn.Module, optimizer: torch.optim.Optimizer, config: OptimConfig, all_gather: Optional[Callable]
) -> None:
    """The puzzle embeddings follow AdamW in the same optimizer step with their own rule, on the same
    schedule: the multiplier AdamW just used."""
    table = getattr(net.inner, "puzzle_emb", None)
    if table is None:
        return
    multiplier = optimizer.param_groups[0]["lr"] / config.lr if config.lr else 1.0
    table.sign_sgd_step(config.puzzle_emb_lr * multiplier, config.puzzle_emb_weight_decay, all_gather)
