"""Building blocks shared by every state module.

Shape legend: B batch, S sequence (puzzle prefix + tokens), H heads, D head dim, C hidden size.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from loopformer.kernels.attention import packed_attention, packed_attention_reference, rope_tables
from loopformer.kernels.dispatch import AttentionChoice

CosSin = tuple[torch.Tensor, torch.Tensor]


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Truncated normal whose *resulting* standard deviation is ``std`` (JAX/Flax convention).

    ``nn.init.trunc_normal_`` truncates a N(0, std) without correcting the variance it loses; the
    reference codebases compensate, and initial states and weights must match their statistics.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        normal_cdf_lo = 0.5 * (1 + math.erf(lower / math.sqrt(2)))
        normal_cdf_hi = 0.5 * (1 + math.erf(upper / math.sqrt(2)))
        mass = normal_cdf_hi - normal_cdf_lo
        pdf_lo = math.exp(-0.5 * lower**2) / math.sqrt(2 * math.pi)
        pdf_hi = math.exp(-0.5 * upper**2) / math.sqrt(2 * math.pi)
        truncated_var = 1 - (upper * pdf_hi - lower * pdf_lo) / mass - ((pdf_lo - pdf_hi) / mass) ** 2
        scale = std / math.sqrt(truncated_var)
        # Inverse-CDF sampling on [cdf(lower), cdf(upper)], written with erfinv on [-1, 1].
        tensor.uniform_(2 * normal_cdf_lo - 1, 2 * normal_cdf_hi - 1).erfinv_().mul_(math.sqrt(2) * scale)
        return tensor.clamp_(lower * scale, upper * scale)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a weight, computed in float32 and returned in the input dtype."""
    x32 = x.to(torch.float32)
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


def swiglu_inner_size(hidden: int, expansion: float) -> int:
    """``round(expansion * hidden * 2/3)`` rounded up to a multiple of 256, as the reference models size it."""
    inner = round(expansion * hidden * 2 / 3)
    return -(-inner // 256) * 256


class CastedLinear(nn.Module):
    """Linear layer without bias by default, weights kept in float32 and cast to the input dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        # Truncated LeCun normal: std = 1/sqrt(fan_in).
        self.weight = nn.Parameter(trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Embedding table in float32, looked up and cast to ``cast_to``."""

    def __init__(self, num_embeddings: int, dim: int, init_std: float, cast_to: torch.dtype) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.weight = nn.Parameter(trunc_normal_(torch.empty(num_embeddings, dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """cos/sin tables ``[S, D]`` in float32 (the half-split layout of the reference models)."""

    def __init__(self, head_dim: int, max_positions: int, theta: float) -> None:
        super().__init__()
        cos_SD, sin_SD = rope_tables(head_dim, max_positions, theta)
        self.register_buffer("cos", cos_SD, persistent=False)
        self.register_buffer("sin", sin_SD, persistent=False)

    def forward(self) -> CosSin:
        return self.cos, self.sin


class Attention(nn.Module):
    """Non-causal multi-head attention from one packed QKV projection, RoPE on q and k.

    ``choice`` (the network's one ``kernels.dispatch.AttentionChoice``) says per call which implementation runs: the
    fused kernel (``kernels.attention.packed_attention``) or the PyTorch path (``packed_attention_reference``).
    """

    def __init__(self, hidden: int, num_heads: int, choice: AttentionChoice, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout  # on the attention weights, in training
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.choice = choice
        self.qkv_proj = CastedLinear(hidden, 3 * hidden)
        self.o_proj = CastedLinear(hidden, hidden)

    def forward(self, x_BSC: torch.Tensor, cos_sin: Optional[CosSin]) -> torch.Tensor:
        B, S, C = x_BSC.shape
        qkv_BS3HD = self.qkv_proj(x_BSC).view(B, S, 3 * self.num_heads, self.head_dim)
        dropout = self.dropout if self.training else 0.0
        cos, sin = cos_sin if cos_sin is not None else (None, None)
        if self.choice.implementation(x_BSC.device, self.head_dim, dropout) == "triton":
            o_BSHD = packed_attention(qkv_BS3HD, cos, sin, self.num_heads)
        else:
            o_BSHD = packed_attention_reference(qkv_BS3HD, cos, sin, self.num_heads, dropout)
        return self.o_proj(o_BSHD.reshape(B, S, C))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, expansion: float) -> None:
        super().__init__()
        inner = swiglu_inner_size(hidden, expansion)
        self.gate_up_proj = CastedLinear(hidden, 2 * inner)
        self.down_proj = CastedLinear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class ConvSwiGLU(nn.Module):
    """VirtualRecursiveNetwork's SwiGLU with local mixing: ``down(silu(dwconv(silu(gate) * up)))``, the depthwise
    1-D convolution (kernel 2, padding 1, bias, its output cut to the sequence length) run along the sequence.

    VRN runs the convolution in its weight's dtype (float32) and keeps that dtype for the rest of the block; here
    its output returns to the input dtype, so with bfloat16 activations the numbers differ by rounding (equal in
    float32)."""

    KERNEL = 2

    def __init__(self, hidden: int, expansion: float) -> None:
        super().__init__()
        inner = swiglu_inner_size(hidden, expansion)
        self.gate_up_proj = CastedLinear(hidden, 2 * inner)
        self.dwconv = nn.Conv1d(inner, inner, self.KERNEL, padding=self.KERNEL // 2, groups=inner, bias=True)
        self.down_proj = CastedLinear(inner, hidden)

    def forward(self, x_BSC: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x_BSC).chunk(2, dim=-1)
        h_BIS = (F.silu(gate) * up).transpose(1, 2).to(self.dwconv.weight.dtype)
        h_BIS = F.silu(self.dwconv(h_BIS)[..., : x_BSC.shape[1]])
        return self.down_proj(h_BIS.transpose(1, 2).to(x_BSC.dtype))
