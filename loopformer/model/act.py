"""Adaptive computation time around the looped core, with deep supervision across training steps.

A carry holds, for every row of the batch, the latent states, the number of ACT steps taken, whether the
row halted at the last step, and the example it is working on. Each call takes one ACT step: rows that
halted last time take the incoming example and restart from the initial states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loopformer.model.config import LoopTransformerConfig
from loopformer.model.core import LoopedCore, States

Batch = dict[str, torch.Tensor]
# Where the sign-SGD puzzle-embedding table sits in the state dict of LoopTransformer (``inner.puzzle_emb``).
PUZZLE_TABLE_KEY = "inner.puzzle_emb.weights"
PUZZLE_EMB_PREFIX = "inner.puzzle_emb."


@dataclass
class ACTCarry:
    states: States
    steps: torch.Tensor  # [B] int32
    halted: torch.Tensor  # [B] bool
    current_data: Batch

    def to_dict(self) -> dict:
        return {
            "states": dict(self.states),
            "steps": self.steps,
            "halted": self.halted,
            "current_data": dict(self.current_data),
        }

    @classmethod
    def from_dict(cls, d: dict, device: torch.device | str | None = None) -> ACTCarry:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device) if device is not None else t

        return cls(
            states={k: move(v) for k, v in d["states"].items()},
            steps=move(d["steps"]),
            halted=move(d["halted"]),
            current_data={k: move(v) for k, v in d["current_data"].items()},
        )


class LoopTransformer(nn.Module):
    """The looped transformer with ACT halting: ``carry, outputs = model(carry, batch)``."""

    def __init__(self, config: LoopTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = LoopedCore(config)

    def initial_carry(self, batch: Batch) -> ACTCarry:
        """Every row starts halted, so the first step loads the batch and the initial states."""
        B = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return ACTCarry(
            states=self.inner.empty_states(B, device),
            steps=torch.zeros(B, dtype=torch.int32, device=device),
            halted=torch.ones(B, dtype=torch.bool, device=device),
            current_data={k: torch.zeros_like(v) for k, v in batch.items()},
        )

    @property
    def halts_adaptively(self) -> bool:
        """Whether a row may halt before ``halt_max_steps`` (on its Q head) in the current mode: in training unless
        ``act_enabled`` is false, in evaluation only with ``act_inference``."""
        cfg = self.config
        return cfg.halt_max_steps > 1 and (cfg.act_enabled if self.training else cfg.act_inference)

    def forward(self, carry: ACTCarry, batch: Batch) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        cfg = self.config
        states = self.inner.reset_states(carry.halted, carry.states)
        steps = torch.where(carry.halted, 0, carry.steps)
        data = {
            k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
            for k, v in carry.current_data.items()
        }
        step_ids = steps if cfg.dis_enabled else None  # DIS: a step's id is its ACT step count, from 0
        new_states, logits, q_halt, q_continue = self.inner(
            states, data["inputs"], data["puzzle_identifiers"], step_ids
        )
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        with torch.no_grad():
            steps = steps + 1
            is_last_step = steps >= cfg.halt_max_steps
            halted = is_last_step
            # act_enabled false: training runs every row to halt_max_steps, without exploration or Q bootstrapping.
            if self.halts_adaptively:
                halted = halted | ((q_halt > 0) if cfg.no_ACT_continue else (q_halt > q_continue))
            if self.training and cfg.act_enabled and cfg.halt_max_steps > 1:
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob
                min_halt_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_halt_steps)
                if not cfg.no_ACT_continue:
                    # Bootstrapped target from the next step's Q, taken from the new carry (as in HRM).
                    _, _, next_halt, next_continue = self.inner(new_states, data["inputs"], data["puzzle_identifiers"])
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_halt, torch.maximum(next_halt, next_continue))
                    )
        return ACTCarry(new_states, steps, halted, data), outputs
