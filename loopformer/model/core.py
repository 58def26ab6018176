"""The looped core: input embedding, named latent states, the stage schedule, and the output heads.

Shape legend: B batch, L tokens, P puzzle-prefix tokens, S = P + L, C hidden size, V vocabulary.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from loopformer.kernels.dispatch import AttentionChoice
from loopformer.model.blocks import StateModule
from loopformer.model.config import LoopTransformerConfig, StageSpec
from loopformer.model.layers import CastedEmbedding, CastedLinear, CosSin, RotaryEmbedding, trunc_normal_
from loopformer.model.puzzle_embedding import SparsePuzzleEmbedding

States = dict[str, torch.Tensor]


class LoopedCore(nn.Module):
    """One ACT step: run the schedule ``outer_cycles`` times from the given states, read out logits and Q."""

    def __init__(self, config: LoopTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.arch = arch = config.arch
        self.forward_dtype = getattr(torch, config.runtime.forward_dtype)
        self.prefix_len = arch.prefix_len
        C = arch.hidden_size
        self.embed_scale = math.sqrt(C)
        embed_init_std = 1.0 / self.embed_scale

        self.embed_tokens = CastedEmbedding(config.model_vocab_size, C, embed_init_std, self.forward_dtype)
        self.lm_head = CastedLinear(C, config.model_vocab_size)
        if config.supervision_steps:
            # DIS: one learned embedding per supervision step, added to every token's input (N(0, 1) init, as VRN).
            self.step_emb = nn.Embedding(config.supervision_steps, C)
        self.q_head = CastedLinear(C, 2, bias=True)
        if arch.puzzle_emb_ndim > 0:
            # Zero-initialised, one row per puzzle identifier, updated by sign-SGD (not AdamW).
            self.puzzle_emb = SparsePuzzleEmbedding(config.num_puzzle_identifiers, arch.puzzle_emb_ndim)
        if arch.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(arch.head_dim, config.total_seq_len, arch.rope_theta)
        elif arch.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(config.total_seq_len, C, embed_init_std, self.forward_dtype)

        # The one attention setting of every layer: the configured backend, then what the run resolved.
        self.attention = AttentionChoice(config.runtime.attention_backend)
        self.state_modules = nn.ModuleDict()
        for spec in arch.states:
            if spec.share_weights_with is None:
                self.state_modules[spec.name] = StateModule(config, spec.layers, self.attention)
            self.register_buffer(f"init_{spec.name}", trunc_normal_(torch.empty(C, dtype=self.forward_dtype), std=1.0))
        self._owner = {}
        for spec in arch.states:
            self._owner[spec.name] = (
                spec.name if spec.share_weights_with is None else self._owner[spec.share_weights_with]
            )

        # Q head starts near "never halt" so that early training runs the full number of steps.
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

    # ------------------------------------------------------------------------------------------------
    def module_for(self, state: str) -> StateModule:
        return self.state_modules[self._owner[state]]

    def initial_state(self, name: str) -> torch.Tensor:
        return getattr(self, f"init_{name}")

    def empty_states(self, batch_size: int, device: torch.device) -> States:
        shape = (batch_size, self.config.total_seq_len, self.arch.hidden_size)
        return {s.name: torch.zeros(shape, dtype=self.forward_dtype, device=device) for s in self.arch.states}

    def reset_states(self, reset_B: torch.Tensor, states: States) -> States:
        mask = reset_B.view(-1, 1, 1)
        return {name: torch.where(mask, self.initial_state(name), z) for name, z in states.items()}

    def input_embeddings(
        self, inputs_BL: torch.Tensor, puzzle_ids_B: torch.Tensor, puzzle_rows_BE: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``puzzle_rows_BE``: the table's rows of ``puzzle_ids_B`` when already looked up (the ACT step does, outside
        its compiled part); read from the table otherwise."""
        emb_BSC = self.embed_tokens(inputs_BL.to(torch.int32))
        if self.arch.puzzle_emb_ndim > 0:
            if puzzle_rows_BE is None:
                puzzle_rows_BE = self.puzzle_emb.rows(puzzle_ids_B.to(torch.int32))
            puzzle_BE = puzzle_rows_BE.to(self.forward_dtype)
            pad = self.prefix_len * self.arch.hidden_size - puzzle_BE.shape[-1]
            if pad > 0:
                puzzle_BE = F.pad(puzzle_BE, (0, pad))
            emb_BSC = torch.cat((puzzle_BE.view(-1, self.prefix_len, self.arch.hidden_size), emb_BSC), dim=-2)
        if self.arch.pos_encodings == "learned":
            # 1/sqrt(2) keeps the variance of the sum of two unit-variance embeddings.
            emb_BSC = 0.707106781 * (emb_BSC + self.embed_pos.weight.to(self.forward_dtype))
        return self.embed_scale * emb_BSC

    # ------------------------------------------------------------------------------------------------
    def _injection(self, stage: StageSpec, states: States, x_BSC: torch.Tensor) -> Optional[torch.Tensor]:
        terms = ([x_BSC] if stage.include_inputs else []) + [states[s] for s in stage.sources]
        if not terms:
            return None
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def run_schedule(
        self, states: States, x_BSC: torch.Tensor, cos_sin: Optional[CosSin], last_cycle: bool = False
    ) -> None:
        """One pass over all stages, updating ``states`` in place (the dict, not the tensors). In the last cycle a
        stage's applications before its ``grad_last`` run without gradient."""
        use_checkpoint = self.config.runtime.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for stage in self.arch.stages:
            module = self.module_for(stage.target)
            first_with_grad = stage.repeat - stage.grad_applications() if last_cycle else 0
            for r in range(stage.repeat):
                with torch.no_grad() if r < first_with_grad else nullcontext():
                    injection = self._injection(stage, states, x_BSC)
                    if use_checkpoint and r >= first_with_grad:
                        states[stage.target] = checkpoint(
                            module, states[stage.target], injection, cos_sin, use_reentrant=False
                        )
                    else:
                        states[stage.target] = module(states[stage.target], injection, cos_sin)

    def forward(
        self,
        states: States,
        inputs_BL: torch.Tensor,
        puzzle_ids_B: torch.Tensor,
        step_ids_B: Optional[torch.Tensor] = None,
        puzzle_rows_BE: Optional[torch.Tensor] = None,
    ) -> tuple[States, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (detached new states, logits [B, L, V], q_halt [B], q_continue [B]); Q in float32.
        ``step_ids_B``: DIS's supervision step of each row (its ACT step count before this step).
        ``puzzle_rows_BE``: the puzzle table's rows of ``puzzle_ids_B``, if already looked up."""
        cos_sin = self.rotary_emb() if self.arch.pos_encodings == "rope" else None
        x_BSC = self.input_embeddings(inputs_BL, puzzle_ids_B, puzzle_rows_BE)
        if self.config.supervision_steps and step_ids_B is not None:
            # VRN adds the float32 embedding (promoting bfloat16 activations); here it joins in the forward dtype.
            # Steps past the trained ones (a deeper evaluation, e.g. a depth curve) reuse the last step's embedding.
            ids_B = step_ids_B.long().clamp_max(self.config.supervision_steps - 1)
            x_BSC = x_BSC + self.step_emb(ids_B).to(x_BSC.dtype).unsqueeze(1)
        states = dict(states)
        no_grad_cycles = self.arch.resolved_no_grad_cycles
        last = self.arch.outer_cycles - 1
        for cycle in range(self.arch.outer_cycles):
            with torch.no_grad() if cycle < no_grad_cycles else nullcontext():
                self.run_schedule(states, x_BSC, cos_sin, last_cycle=cycle == last)

        logits_BLV = self.lm_head(states[self.arch.readout_state])[:, self.prefix_len :]
        q_B2 = self.q_head(states[self.arch.resolved_halt_state][:, 0]).to(torch.float32)
        new_states = {name: z.detach() for name, z in states.items()}
        return new_states, logits_BLV, q_B2[..., 0], q_B2[..., 1]
