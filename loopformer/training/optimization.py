"""Optimisation of the network: its settings, the optimizer of the weights (AdamW, Adam-atan2 or Muon with AdamW;
``optimizers.py``), sign-SGD on the puzzle-embedding table, and the HRM/TRM learning-rate schedule (linear
warmup, then cosine decay to ``lr_min_ratio``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal, Optional, get_args

import torch
from torch import nn

from loopformer.errors import ConfigError

OptimizerName = Literal["adamw", "adam_atan2", "adam_atan2_vrn", "muon"]


@dataclass
class OptimConfig:
    """How the network is optimised: ``--model.optim.<field>`` on the command line."""

    optimizer: OptimizerName = "adamw"
    """adamw; adam_atan2 (what HRM/TRM train with: no epsilon, scale invariant); adam_atan2_vrn (the Adam-atan2
    VirtualRecursiveNetwork trains with by default: adam-atan2-pytorch's, its update scaled by 1.27); or muon (Muon
    on the weight matrices, Adam on embeddings, heads and biases, as VirtualRecursiveNetwork's muon does)."""
    lr: float = 1e-4
    """Peak learning rate of the network weights (with muon: of the AdamW part)."""
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
    muon_lr: float = 0.002
    """muon: peak learning rate of the Muon part (VirtualRecursiveNetwork's default)."""
    muon_weight_decay: float = 0.01
    """muon: weight decay of the Muon part."""
    muon_momentum: float = 0.95
    """muon: momentum (Nesterov) of the Muon part."""

    def __post_init__(self) -> None:
        if self.optimizer not in get_args(OptimizerName):
            raise ConfigError(
                f"model.optim.optimizer={self.optimizer!r}; expected one of {', '.join(get_args(OptimizerName))}."
            )
        for key in ("lr", "puzzle_emb_lr", "muon_lr", "weight_decay", "puzzle_emb_weight_decay", "muon_weight_decay"):
            if not getattr(self, key) >= 0:  # NaN fails too
                raise ConfigError(f"model.optim.{key} must be >= 0, got {getattr(self, key)}.")
        for key in ("beta1", "beta2", "muon_momentum"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"model.optim.{key} must lie in [0, 1), got {getattr(self, key)}.")
        if not 0 <= self.lr_min_ratio <= 1:
            raise ConfigError(
                f"model.optim.lr_min_ratio (the final learning rate as a fraction of the peak) must lie in [0, 1], "
                f"got {self.lr_min_ratio}."
            )
        if self.lr_warmup_steps < 0:
            raise ConfigError(f"model.optim.lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}.")


def warmup_cosine(step: int, warmup_steps: int, total_steps: float, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if not math.isfinite(total_steps) or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_change(config: OptimConfig, planned: float, now: float, step: int) -> Optional[str]:
    """What a resumed run whose warmup-cosine schedule spans other steps than its checkpoint's run planned (another
    ``trainer.max_steps`` or budget) changes, as a line; None where it spans the same."""
    if planned == now:
        return None

    def lr(total: float) -> float:
        return config.lr * warmup_cosine(step + 1, config.lr_warmup_steps, total, config.lr_min_ratio)

    def steps(total: float) -> str:
        return f"{total:.0f} steps" if math.isfinite(total) else "no step limit"

    jump = f" (learning rate {lr(planned):.3g} -> {lr(now):.3g})" if f"{lr(planned):.3g}" != f"{lr(now):.3g}" else ""
    return (
        f"learning-rate schedule: over {steps(now)}, where the checkpoint's run planned {steps(planned)}: from step "
        f"{step} it follows the new one{jump}."
    )


def optim_changes(stored: Optional[dict[str, Any]], config: OptimConfig) -> list[str]:
    """The settings of ``config`` that differ from ``stored`` (a checkpoint's ``optim`` hyperparameters), as
    ``name old -> new``; fields a checkpoint does not record are left out."""
    if not stored:
        return []
    changes = []
    for field in fields(OptimConfig):
        old, new = stored.get(field.name), getattr(config, field.name)
        if isinstance(new, (int, float)) and isinstance(old, str):
            try:
                old = type(new)(old)  # "3e-3", as YAML 1.1 reads it
            except ValueError:
                pass
        if old is not None and old != new:
            number = isinstance(new, float) and isinstance(old, (int, float))
            changes.append(f"{field.name} {old:g} -> {new:g}" if number else f"{field.name} {old} -> {new}")
    return changes


def apply_optim_settings(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    net: nn.Module,
    config: OptimConfig,
) -> None:
    """A restored optimizer takes ``config``'s hyperparameters (peak learning rates, weight decays, betas,
    momentum), its state (moment estimates, momentum buffers) kept: those of an optimizer built from ``config``,
    group by group, the peak learning rates as the schedule's base."""
    reference = build_optimizer(net, config)  # for its groups' settings only
    if len(reference.param_groups) != len(optimizer.param_groups):
        raise ConfigError("the optimizer's parameter groups differ from the checkpoint's; start from its weights "
                          "with --model.init_from instead")  # fmt: skip
    for i, (group, settings) in enumerate(zip(optimizer.param_groups, reference.param_groups, strict=True)):
        for key, value in settings.items():
            if key == "params":
                continue
            if key == "lr":
                group["initial_lr"] = scheduler.base_lrs[i] = value
            elif key != "initial_lr":
                group[key] = value


def muon_parameters(net: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the weights Muon updates, the rest), split as VirtualRecursiveNetwork splits them: every weight of two
    dimensions or more (the blocks' matrices, a convolution's filters, DIS's step embedding) but the token and
    position embeddings and the heads; those and every bias go to Adam."""
    inner = net.inner
    adam_only = {id(p) for name in ("embed_tokens", "embed_pos", "lm_head", "q_head") if hasattr(inner, name)
                 for p in getattr(inner, name).parameters()}  # fmt: skip
    muon, other = [], []
    for p in net.parameters():
        (muon if p.ndim >= 2 and id(p) not in adam_only else other).append(p)
    return muon, other


def build_optimizer(net: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    betas = (config.beta1, config.beta2)
    if config.optimizer in ("adam_atan2", "adam_atan2_vrn"):
        from loopformer.training.optimizers import AdamAtan2, AdamAtan2VRN

        optimizer = AdamAtan2 if config.optimizer == "adam_atan2" else AdamAtan2VRN
        return optimizer(net.parameters(), lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    if config.optimizer == "muon":
        from loopformer.training.optimizers import MuonWithAdamW

        muon, other = muon_parameters(net)
        muon_args = dict(lr=config.muon_lr, weight_decay=config.muon_weight_decay, momentum=config.muon_momentum)
        adamw_args = dict(lr=config.lr, betas=betas, weight_decay=config.weight_decay)
        return MuonWithAdamW(muon, other, muon_args, adamw_args)
    return torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=betas)


def configure_optimizers(net: nn.Module, config: OptimConfig, total_steps: float) -> dict[str, Any]:
    """The chosen optimizer over the network's parameters, stepped per optimizer step on the warmup-cosine
    schedule (every param group's peak scaled by the same multiplier).

    The puzzle-embedding table is not a parameter: ``puzzle_embedding_step`` updates it."""
    optimizer = build_optimizer(net, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        # Multiplier for the (step + 1)-th update, as the reference trainers count steps from 1.
        optimizer,
        lambda step: warmup_cosine(step + 1, config.lr_warmup_steps, float(total_steps), config.lr_min_ratio),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def schedule_multiplier(optimizer: torch.optim.Optimizer) -> float:
    """The factor the learning-rate schedule applies at this step: every param group's peak is scaled by it."""
    group = optimizer.param_groups[0]
    return group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0


def puzzle_embedding_step(
    net: nn.Module, optimizer: torch.optim.Optimizer, config: OptimConfig, all_gather: Optional[Callable]
) -> None:
    """The puzzle embeddings follow AdamW in the same optimizer step with their own rule, on the same
    schedule: the multiplier AdamW just used."""
    table = net.puzzle_table
    if table is None:
        return
    table.sign_sgd_step(
        config.puzzle_emb_lr * schedule_multiplier(optimizer), config.puzzle_emb_weight_decay, all_gather
    )
