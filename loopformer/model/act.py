"""Adaptive computation time around the looped core, with deep supervision across training steps.

A carry holds, for every row of the batch, the latent states, the number of ACT steps taken, whether the
row halted at the last step, and the example it is working on. Each call takes one ACT step: rows that
halted last time take the incoming example and restart from the initial states.

A step is split in two so that the second part compiles whole (``compile_step``): ``step_controls`` does, eagerly,
what would break a graph or vary within a run (the puzzle-table rows, a grad leaf in training; exploration's random
draws; ``halt_max_steps`` and the halting mode, as device tensors), and ``act_step`` is the rest: tensor operations
only, the same graph at every step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from loopformer.kernels.dispatch import AttentionChoice
from loopformer.model.config import LoopTransformerConfig
from loopformer.model.core import LoopedCore, States
from loopformer.model.puzzle_embedding import SparsePuzzleEmbedding

Batch = dict[str, torch.Tensor]
# Where the sign-SGD puzzle-embedding table sits in the state dict of LoopTransformer (``inner.puzzle_emb``).
PUZZLE_TABLE_KEY = "inner.puzzle_emb.weights"
PUZZLE_EMB_PREFIX = "inner.puzzle_emb."
# torch.compile's backend for compile_step: inductor generates the kernels; tests swap in "aot_eager" where only
# dynamo's verdicts (graphs, breaks, recompilations) matter, which do not depend on the backend.
COMPILE_BACKEND = "inductor"


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


@dataclass
class StepControls:
    """What an ACT step takes from outside the compilable part."""

    puzzle_rows: Optional[torch.Tensor]  # [B, E] float32: the puzzle table's rows of the step's examples
    min_halt_steps: Optional[torch.Tensor]  # [B] int32, training with ACT: exploration's minimum steps (0: none)
    halt_max_steps: torch.Tensor  # [] int32 on the device
    halts_adaptively: torch.Tensor  # [] bool on the device: a row may halt on its Q head


class LoopTransformer(nn.Module):
    """The looped transformer with ACT halting: ``carry, outputs = model(carry, batch)``."""

    def __init__(self, config: LoopTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = LoopedCore(config)
        self._limits: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # device tensors of the halting limits
        self._step: Callable[..., Any] = self.act_step  # compile_step replaces it

    def compile_step(self, mode: Optional[str] = None, backend: Optional[str] = None) -> None:
        """Compile ``act_step`` (the core, heads and carry update) with ``torch.compile``; the weights stay where
        they are, so checkpoints keep their keys. ``mode="reduce-overhead"`` replays CUDA graphs."""
        self._step = CompiledStep(self.act_step, mode, backend)

    def initial_carry(self, batch: Batch) -> ACTCarry:
        """Every row starts halted, so the first step loads the batch and the initial states."""
        B = batch["inputs"].shape[0]
        device = batch["inputs"].device
        if not self.training and self.config.arch.puzzle_emb_ndim > 0:
            self.inner.puzzle_emb.warn_unknown(batch["puzzle_identifiers"])  # once per batch, not per step
        return ACTCarry(
            states=self.inner.empty_states(B, device),
            steps=torch.zeros(B, dtype=torch.int32, device=device),
            halted=torch.ones(B, dtype=torch.bool, device=device),
            current_data={k: torch.zeros_like(v) for k, v in batch.items()},
        )

    @property
    def attention(self) -> AttentionChoice:
        """The network's one attention setting (configured, then resolved by the run: ``ResolveAttention``)."""
        return self.inner.attention

    @property
    def puzzle_table(self) -> Optional[SparsePuzzleEmbedding]:
        """The sign-SGD puzzle-embedding table (``PUZZLE_TABLE_KEY``), or None without puzzle embeddings."""
        return getattr(self.inner, "puzzle_emb", None)

    @property
    def halts_adaptively(self) -> bool:
        """Whether a row may halt before ``halt_max_steps`` (on its Q head) in the current mode: in training unless
        ``act_enabled`` is false, in evaluation only with ``act_inference``."""
        halting = self.config.halting
        return halting.max_steps > 1 and (halting.in_training if self.training else halting.in_evaluation)

    def forward(self, carry: ACTCarry, batch: Batch) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        return self._step(carry, batch, self.step_controls(carry, batch))

    def step_controls(self, carry: ACTCarry, batch: Batch) -> StepControls:
        """The eager part of a step: table rows (a grad leaf in training), exploration's draws, the limits."""
        halting = self.config.halting
        halted_B = carry.halted
        rows = None
        if self.config.arch.puzzle_emb_ndim > 0:
            ids_B = torch.where(halted_B, batch["puzzle_identifiers"], carry.current_data["puzzle_identifiers"])
            rows = self.inner.puzzle_emb.rows(ids_B)
        min_halt_steps = None
        if self.training and halting.in_training and halting.max_steps > 1:
            explore_B = torch.rand(halted_B.shape, device=halted_B.device) < halting.exploration_prob
            drawn_B = torch.randint(2, halting.max_steps + 1, halted_B.shape, dtype=torch.int32, device=halted_B.device)
            min_halt_steps = explore_B * drawn_B
        key = (halting.max_steps, self.halts_adaptively, halted_B.device)
        if key not in self._limits:
            self._limits[key] = (
                torch.full((), halting.max_steps, dtype=torch.int32, device=halted_B.device),
                torch.full((), self.halts_adaptively, dtype=torch.bool, device=halted_B.device),
            )
        return StepControls(rows, min_halt_steps, *self._limits[key])

    def act_step(
        self, carry: ACTCarry, batch: Batch, controls: StepControls
    ) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        """The compilable part of a step: tensor operations only, whatever rows halt or which limits apply."""
        no_ACT_continue = self.config.halting.no_ACT_continue
        states = self.inner.reset_states(carry.halted, carry.states)
        steps = torch.where(carry.halted, 0, carry.steps)
        data = {
            k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
            for k, v in carry.current_data.items()
        }
        # DIS: a step's id is its ACT step count, from 0
        embeds_steps = self.config.supervision_steps and (self.training or self.config.eval_step_embedding)
        step_ids = steps if embeds_steps else None
        rows = controls.puzzle_rows
        new_states, logits, q_halt, q_continue = self.inner(
            states, data["inputs"], data["puzzle_identifiers"], step_ids, rows
        )
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        with torch.no_grad():
            steps = steps + 1
            is_last_step = steps >= controls.halt_max_steps
            wants_halt = (q_halt > 0) if no_ACT_continue else (q_halt > q_continue)
            halted = is_last_step | (controls.halts_adaptively & wants_halt)
            if controls.min_halt_steps is not None:  # training with ACT: exploration and Q bootstrapping
                halted = halted & (steps >= controls.min_halt_steps)
                if not no_ACT_continue:
                    # Bootstrapped target from the next step's Q, taken from the new carry (as in HRM).
                    _, _, next_halt, next_continue = self.inner(
                        new_states, data["inputs"], data["puzzle_identifiers"], None, rows
                    )
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_halt, torch.maximum(next_halt, next_continue))
                    )
        return ACTCarry(new_states, steps, halted, data), outputs


class CompiledStep:
    """``torch.compile`` of a step function. With CUDA graphs (modes ``reduce-overhead`` and ``max-autotune``) each
    call starts a new graph step and returns copies: a replay overwrites the previous call's outputs, which the
    carry and the metrics still hold."""

    def __init__(self, fn: Callable[..., Any], mode: Optional[str], backend: Optional[str] = None) -> None:
        self.cudagraphs = self.graphs_wanted = mode in ("reduce-overhead", "max-autotune")
        self.original, self.backend = fn, backend or COMPILE_BACKEND
        self.fn = torch.compile(fn, backend=self.backend, mode=None if mode == "default" else mode)
        self.graphs_failed: Optional[str] = None  # why CUDA graphs were given up, when they were
        self._ran = False

    def __call__(self, *args: Any) -> Any:
        if not self.cudagraphs:
            return self.fn(*args)
        try:
            torch.compiler.cudagraph_mark_step_begin()
            out = clone_tensors(self.fn(*args))
        except Exception as e:  # noqa: BLE001 - at the first calls, a capture failure: go on without graphs
            if self._ran:
                raise
            self.give_up_graphs(e)
            return self.fn(*args)
        self._ran = True
        return out

    def give_up_graphs(self, error: BaseException) -> None:
        """Compile again without CUDA graphs (the step stays compiled) and say why, once. A step is a pure function
        of its inputs, so the failed call is simply run again; an error that is not about graphs comes back from
        that second call."""
        message = str(error).strip()
        reason = f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"
        self.cudagraphs, self.graphs_failed = False, reason
        self.fn = torch.compile(self.original, backend=self.backend)
        warnings.warn(
            f"loopformer: CUDA graphs could not be captured ({reason}); the step runs compiled without them "
            "(model.runtime.compile_mode: default).",
            stacklevel=3,
        )


def clone_tensors(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, ACTCarry):
        return ACTCarry.from_dict(clone_tensors(value.to_dict()))
    if isinstance(value, dict):
        return {k: clone_tensors(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(clone_tensors(v) for v in value)
    return value
