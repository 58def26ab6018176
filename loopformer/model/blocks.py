"""Post-norm transformer block and the per-state module (a stack of blocks)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from loopformer.kernels.dispatch import AttentionChoice
from loopformer.model.config import LoopTransformerConfig
from loopformer.model.layers import Attention, ConvSwiGLU, CosSin, SwiGLU, rms_norm


class Block(nn.Module):
    """``x = norm(x + mix(x)); x = norm(x + swiglu(x))``; ``mix`` is attention or TRM's MLP across the sequence."""

    def __init__(self, config: LoopTransformerConfig, attention: AttentionChoice) -> None:
        super().__init__()
        arch = config.arch
        self.mixer = arch.mixer
        if arch.mixer == "attention":
            self.self_attn = Attention(arch.hidden_size, arch.num_heads, attention, arch.dropout)
        else:
            self.mlp_t = SwiGLU(config.total_seq_len, arch.expansion)
        mlp = ConvSwiGLU if arch.mlp_type == "conv_swiglu" else SwiGLU
        self.mlp = mlp(arch.hidden_size, arch.expansion)
        # On both residual branches, as VRN applies it (nn.Dropout is the identity outside training).
        self.dropout = nn.Dropout(arch.dropout) if arch.dropout > 0 else nn.Identity()
        self.eps = arch.rms_norm_eps

    def forward(self, x_BSC: torch.Tensor, cos_sin: Optional[CosSin]) -> torch.Tensor:
        if self.mixer == "attention":
            x_BSC = rms_norm(x_BSC + self.dropout(self.self_attn(x_BSC, cos_sin)), self.eps)
        else:
            # TRM's mlp_t: mixes along the sequence and normalises over it (transposed), as published.
            x_BCS = x_BSC.transpose(1, 2)
            x_BSC = rms_norm(x_BCS + self.dropout(self.mlp_t(x_BCS)), self.eps).transpose(1, 2)
        return rms_norm(x_BSC + self.dropout(self.mlp(x_BSC)), self.eps)


class StateModule(nn.Module):
    """The blocks that update one state: ``blocks(state + injection)``."""

    def __init__(self, config: LoopTransformerConfig, num_layers: int, attention: AttentionChoice) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(config, attention) for _ in range(num_layers))

    def forward(
        self, state_BSC: torch.Tensor, injection_BSC: Optional[torch.Tensor], cos_sin: Optional[CosSin]
    ) -> torch.Tensor:
        x = state_BSC if injection_BSC is None else state_BSC + injection_BSC
        for layer in self.layers:
            x = layer(x, cos_sin)
        return x
