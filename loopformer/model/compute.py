"""What one ACT step costs, counted from the shapes: block applications and forward FLOPs.

A multiply-add counts 2 FLOPs; only matrix products are counted (norms, RoPE, activations and the residual sums
are a few FLOPs per element, under 1% here). Per example, with S tokens (puzzle prefix included), width C,
SwiGLU inner size I (``swiglu_inner_size``) and vocabulary V:

================================  ====================================================================
block with attention              ``8 S C^2`` (QKV and output projections) + ``4 S^2 C`` (scores and
                                  their product with V) + ``6 S C I`` (SwiGLU; ``conv_swiglu`` adds
                                  ``4 S I`` for its kernel-2 depthwise convolution)
block with the sequence MLP       ``6 C S I_S`` (SwiGLU across the sequence, ``I_S`` its inner size for
                                  width S) + ``6 S C I``
heads, once per ACT step          ``2 S C V`` (LM head, over every token) + ``4 C`` (Q head)
ACT step                          blocks per ACT step x block + heads
================================  ====================================================================

Blocks per ACT step: ``outer_cycles x sum over stages of repeat x layers of the stage's module``; those with
gradient are the passes after ``no_grad_cycles``, the last one counting only each stage's ``grad_last``
applications. A puzzle's cost is its ACT steps (``val/steps``) x the step's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from loopformer.model.config import LoopTransformerConfig
from loopformer.model.layers import swiglu_inner_size


@dataclass(frozen=True)
class ComputeCost:
    block_flops: int
    """Forward FLOPs of one block application, per example."""
    blocks_per_act_step: int
    """Block applications per ACT step (all outer cycles)."""
    grad_blocks_per_act_step: int
    """Of those, the ones run with gradient."""
    head_flops: int
    """Forward FLOPs of the LM and Q heads, per example and ACT step."""
    flops_per_act_step: int
    """Forward FLOPs of one ACT step, per example."""

    def as_config(self) -> dict[str, int]:
        """The run config fields (``compute/<name>``)."""
        return {f"compute/{k}": v for k, v in asdict(self).items()}


def block_flops(config: LoopTransformerConfig) -> int:
    arch = config.arch
    S, C = config.total_seq_len, arch.hidden_size
    inner = swiglu_inner_size(C, arch.expansion)
    mlp = 6 * S * C * inner
    if arch.mlp_type == "conv_swiglu":
        mlp += 2 * 2 * S * inner  # the depthwise convolution: kernel 2, one multiply-add per tap
    if arch.mixer == "attention":
        return 8 * S * C * C + 4 * S * S * C + mlp
    return 6 * C * S * swiglu_inner_size(S, arch.expansion) + mlp


def compute_cost(config: LoopTransformerConfig) -> ComputeCost:
    blocks = block_flops(config)
    C = config.arch.hidden_size
    heads = 2 * config.total_seq_len * C * config.model_vocab_size + 4 * C
    return ComputeCost(
        block_flops=blocks,
        blocks_per_act_step=config.arch.effective_depth,
        grad_blocks_per_act_step=config.arch.grad_depth,
        head_flops=heads,
        flops_per_act_step=config.arch.effective_depth * blocks + heads,
    )
