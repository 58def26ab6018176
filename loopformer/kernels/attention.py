"""Fused non-causal attention straight from the packed QKV projection, RoPE inside the kernel.

Shape legend: B batch, S sequence, H heads, D head dim (32, 64 or 128), HALF = D / 2.

``qkv_BS3HD`` is the output of the QKV projection viewed as ``[B, S, 3H, D]`` (q heads, then k, then v).
The forward reads it once, rotates q and k in float32 with the ``[S, D]`` cos/sin tables (half-split
layout, as the reference models), rounds them to the input dtype as the reference does before SDPA, and
runs a FlashAttention-2 style online softmax; it writes ``o_BSHD`` (ready for the output projection)
and the natural-log log-sum-exp ``lse_BHS`` (float32). The backward recomputes the probabilities from q,
k and lse, and writes the gradient of the packed tensor directly, RoPE's transpose included, each element
exactly once (no atomics). Short sequences (every key in one tile: the Sudoku shape) take one kernel
that writes dq, dk and dv in one pass; longer ones take three: the softmax-backward row term delta, then
dk and dv, then dq. Tile sizes come from ``TILES`` per GPU family (see the comment there).

Every head dim is handled as two halves because the rotation pairs element i with i + D/2.

Registered as ``torch.ops.loopformer.packed_attention`` with fake and autograd registrations, so
``torch.compile`` keeps it in the graph. ``packed_attention_reference`` is the pure PyTorch reference.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # macOS, or an environment without triton
    HAVE_TRITON = False

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
SUPPORTED_HEAD_DIMS = (32, 64, 128)


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_usable(device: torch.device) -> bool:
    """Compiled on a CUDA device, or anywhere under Triton's interpreter."""
    return HAVE_TRITON and (device.type == "cuda" or interpreter_enabled())


# ---------------------------------------------------------------------------------------------------
def rope_tables(head_dim: int, positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cos/sin tables ``[positions, head_dim]`` in float32, in the half-split layout of the reference models
    (what the kernel and the reference path take)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs_SD2 = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    emb_SD = torch.cat((freqs_SD2, freqs_SD2), dim=-1)
    return emb_SD.cos(), emb_SD.sin()


def apply_rope(x_BSHD: torch.Tensor, cos_SD: torch.Tensor, sin_SD: torch.Tensor) -> torch.Tensor:
    """RoPE (half-split layout): rotate in the tables' dtype (float32), return in the input dtype."""
    x = x_BSHD.to(cos_SD.dtype)
    lo, hi = x.chunk(2, dim=-1)
    out = x * cos_SD.unsqueeze(-2) + torch.cat((-hi, lo), dim=-1) * sin_SD.unsqueeze(-2)
    return out.to(x_BSHD.dtype)


def packed_attention_reference(
    qkv_BS3HD: torch.Tensor,
    cos_SD: Optional[torch.Tensor],
    sin_SD: Optional[torch.Tensor],
    num_heads: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The PyTorch attention path (and the kernel's reference): RoPE in float32, rounded to the input dtype, then
    SDPA, with dropout on the attention weights when ``dropout_p`` > 0; returns ``[B, S, H, D]``."""
    q, k, v = qkv_BS3HD.split(num_heads, dim=2)
    if cos_SD is not None:
        S = qkv_BS3HD.shape[1]
        q, k = apply_rope(q, cos_SD[:S], sin_SD[:S]), apply_rope(k, cos_SD[:S], sin_SD[:S])
    o_BHSD = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p
    )
    return o_BHSD.transpose(1, 2)


# ---------------------------------------------------------------------------------------------------
if HAVE_TRITON:

    @triton.jit
    def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        # UPCAST: Triton's CPU interpreter multiplies bfloat16 tiles wrongly; products of bfloat16 values
        # are exact in float32 and the GPU accumulates in float32, so upcasting computes the same thing.
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        return tl.dot(a, b, input_precision=PRECISION)

    @triton.jit
    def _load_halves(base, rows, row_stride, mask, HALF: tl.constexpr):
        offs_d = tl.arange(0, HALF)
        ptrs = base + rows[:, None] * row_stride + offs_d[None, :]
        lo = tl.load(ptrs, mask=mask[:, None], other=0.0)
        hi = tl.load(ptrs + HALF, mask=mask[:, None], other=0.0)
        return lo, hi

    @triton.jit
    def _store_halves(base, rows, row_stride, mask, lo, hi, HALF: tl.constexpr):
        offs_d = tl.arange(0, HALF)
        ptrs = base + rows[:, None] * row_stride + offs_d[None, :]
        tl.store(ptrs, lo.to(base.dtype.element_ty), mask=mask[:, None])
        tl.store(ptrs + HALF, hi.to(base.dtype.element_ty), mask=mask[:, None])

    @triton.jit
    def _rope_halves(lo, hi, COS, SIN, rows, mask, HALF: tl.constexpr):
        """Rotate in float32 (the tables' dtype) and round back to the input dtype."""
        offs_d = tl.arange(0, HALF)
        c = tl.load(COS + rows[:, None] * (2 * HALF) + offs_d[None, :], mask=mask[:, None], other=0.0)
        s = tl.load(SIN + rows[:, None] * (2 * HALF) + offs_d[None, :], mask=mask[:, None], other=0.0)
        lo32 = lo.to(tl.float32)
        hi32 = hi.to(tl.float32)
        new_lo = (lo32 * c - hi32 * s).to(lo.dtype)
        new_hi = (hi32 * c + lo32 * s).to(hi.dtype)
        return new_lo, new_hi

    @triton.jit
    def _rope_halves_transposed(dlo, dhi, COS, SIN, rows, mask, HALF: tl.constexpr):
        """Gradient through the rotation: its transpose (float32 in, float32 out)."""
        offs_d = tl.arange(0, HALF)
        c = tl.load(COS + rows[:, None] * (2 * HALF) + offs_d[None, :], mask=mask[:, None], other=0.0)
        s = tl.load(SIN + rows[:, None] * (2 * HALF) + offs_d[None, :], mask=mask[:, None], other=0.0)
        return dlo * c + dhi * s, dhi * c - dlo * s

    @triton.jit
    def _program_rows(S, H, BLOCK: tl.constexpr):
        """This program's batch b and head h (grid axis 1: b * H + h) and its BLOCK rows along the sequence
        (grid axis 0), with the mask of those inside S."""
        pid_rows = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        rows = pid_rows * BLOCK + tl.arange(0, BLOCK)
        return pid_bh, b, h, rows, rows < S

    @triton.jit
    def _load_head(base, head, head_stride, rows, row_stride, mask, COS, SIN, ROPE: tl.constexpr, HALF: tl.constexpr):
        """Rows of one head of the packed tensor (q heads 0..H-1, k H..2H-1, v 2H..3H-1) as two halves,
        rotated when ROPE."""
        lo, hi = _load_halves(base + head * head_stride, rows, row_stride, mask, HALF)
        if ROPE:
            lo, hi = _rope_halves(lo, hi, COS, SIN, rows, mask, HALF)
        return lo, hi

    @triton.jit
    def _load_lse2(LSE, pid_bh, S, rows, mask):
        """The forward's log-sum-exp of these rows in base 2 (the kernels' exponentials are exp2)."""
        return tl.load(LSE + pid_bh * S + rows, mask=mask, other=0.0) * 1.4426950408889634

    @triton.jit
    def _attn_fwd_kernel(
        QKV, COS, SIN, OUT, LSE,
        stride_qkv_b, stride_qkv_s, stride_qkv_h,
        stride_o_b, stride_o_s, stride_o_h,
        S, H, scale_log2,
        HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        pid_bh, b, h, offs_m, mask_m = _program_rows(S, H, BLOCK_M)
        base = QKV + b * stride_qkv_b
        q_lo, q_hi = _load_head(base, h, stride_qkv_h, offs_m, stride_qkv_s, mask_m, COS, SIN, ROPE, HALF)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc_lo = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        acc_hi = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        for start_n in range(0, S, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < S
            k_lo, k_hi = _load_head(base, H + h, stride_qkv_h, offs_n, stride_qkv_s, mask_n, COS, SIN, ROPE, HALF)
            qk = _dot(q_lo, tl.trans(k_lo), PRECISION, UPCAST)
            qk += _dot(q_hi, tl.trans(k_hi), PRECISION, UPCAST)
            qk = tl.where(mask_n[None, :], qk * scale_log2, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v_lo, v_hi = _load_head(base, 2 * H + h, stride_qkv_h, offs_n, stride_qkv_s, mask_n, COS, SIN, False, HALF)
            p_v = p.to(v_lo.dtype)
            acc_lo = acc_lo * alpha[:, None] + _dot(p_v, v_lo, PRECISION, UPCAST)
            acc_hi = acc_hi * alpha[:, None] + _dot(p_v, v_hi, PRECISION, UPCAST)
            m_i = m_new

        out = OUT + b * stride_o_b + h * stride_o_h
        _store_halves(out, offs_m, stride_o_s, mask_m, acc_lo / l_i[:, None], acc_hi / l_i[:, None], HALF)
        tl.store(LSE + pid_bh * S + offs_m, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, mask=mask_m)

    @triton.jit
    def _probs_and_dprobs(
        q_lo, q_hi, k_lo, k_hi, v_lo, v_hi, do_lo, do_hi, lse2, mask_m, mask_n, scale_log2,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """Recompute a [BLOCK_M, BLOCK_N] tile of the probabilities P and of dP = dO V^T, both float32.

        The softmax backward then needs dS = P * (dP - delta). Padded rows and columns of P are zeroed:
        their q or k rows were loaded as zeros, which would otherwise give them a probability of exp(-lse).
        """
        qk = _dot(q_lo, tl.trans(k_lo), PRECISION, UPCAST)
        qk += _dot(q_hi, tl.trans(k_hi), PRECISION, UPCAST)
        p = tl.math.exp2(qk * scale_log2 - lse2[:, None])
        p = tl.where(mask_m[:, None] & mask_n[None, :], p, 0.0)
        dp = _dot(do_lo, tl.trans(v_lo), PRECISION, UPCAST)
        dp += _dot(do_hi, tl.trans(v_hi), PRECISION, UPCAST)
        return p, dp

    @triton.jit
    def _attn_bwd_delta_kernel(
        OUT, DO, DELTA,
        stride_o_b, stride_o_s, stride_o_h,
        stride_do_b, stride_do_s, stride_do_h,
        S, H,
        D: tl.constexpr, BLOCK_M: tl.constexpr,
    ):  # fmt: skip
        """delta[b, h, i] = sum_d dO[b, i, h, d] * O[b, i, h, d] in float32: the softmax-backward row term."""
        pid_bh, b, h, offs_m, mask_m = _program_rows(S, H, BLOCK_M)
        offs_d = tl.arange(0, D)
        o = tl.load(
            OUT + b * stride_o_b + h * stride_o_h + offs_m[:, None] * stride_o_s + offs_d[None, :],
            mask=mask_m[:, None], other=0.0,
        )  # fmt: skip
        do = tl.load(
            DO + b * stride_do_b + h * stride_do_h + offs_m[:, None] * stride_do_s + offs_d[None, :],
            mask=mask_m[:, None], other=0.0,
        )  # fmt: skip
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(DELTA + pid_bh * S + offs_m, delta, mask=mask_m)

    @triton.jit
    def _attn_bwd_dkdv_kernel(
        QKV, COS, SIN, DO, LSE, DELTA, DQKV,
        stride_qkv_b, stride_qkv_s, stride_qkv_h,
        stride_do_b, stride_do_s, stride_do_h,
        S, H, sm_scale,
        HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr, ONE_PASS: tl.constexpr,
    ):  # fmt: skip
        """dK and dV of BLOCK_N keys, looping over every query block.

        ONE_PASS (S <= BLOCK_N, one program per batch and head, the Sudoku shape): the program holds every
        key, so it also writes dQ, complete for each query block as soon as it is computed (no atomics, no
        dQ kernel), and takes the row term delta = dO . O from the tile as sum_j P_ij dP_ij (equal in exact
        arithmetic), so neither O nor a delta kernel is needed.
        """
        scale_log2 = sm_scale * 1.4426950408889634
        pid_bh, b, h, offs_n, mask_n = _program_rows(S, H, BLOCK_N)
        base = QKV + b * stride_qkv_b
        k_lo, k_hi = _load_head(base, H + h, stride_qkv_h, offs_n, stride_qkv_s, mask_n, COS, SIN, ROPE, HALF)
        v_lo, v_hi = _load_head(base, 2 * H + h, stride_qkv_h, offs_n, stride_qkv_s, mask_n, COS, SIN, False, HALF)

        dk_lo = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        dk_hi = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        dv_lo = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        dv_hi = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        for start_m in range(0, S, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            mask_m = offs_m < S
            q_lo, q_hi = _load_head(base, h, stride_qkv_h, offs_m, stride_qkv_s, mask_m, COS, SIN, ROPE, HALF)
            do_lo, do_hi = _load_halves(DO + b * stride_do_b + h * stride_do_h, offs_m, stride_do_s, mask_m, HALF)
            lse2 = _load_lse2(LSE, pid_bh, S, offs_m, mask_m)
            p, dp = _probs_and_dprobs(
                q_lo, q_hi, k_lo, k_hi, v_lo, v_hi, do_lo, do_hi, lse2, mask_m, mask_n, scale_log2, PRECISION, UPCAST
            )
            if ONE_PASS:
                delta = tl.sum(p * dp, 1)
            else:
                delta = tl.load(DELTA + pid_bh * S + offs_m, mask=mask_m, other=0.0)
            ds = p * (dp - delta[:, None])
            p_c = p.to(do_lo.dtype)
            dv_lo += _dot(tl.trans(p_c), do_lo, PRECISION, UPCAST)
            dv_hi += _dot(tl.trans(p_c), do_hi, PRECISION, UPCAST)
            ds = ds.to(q_lo.dtype)
            dk_lo += _dot(tl.trans(ds), q_lo, PRECISION, UPCAST)
            dk_hi += _dot(tl.trans(ds), q_hi, PRECISION, UPCAST)
            if ONE_PASS:
                dq_lo = _dot(ds, k_lo, PRECISION, UPCAST) * sm_scale
                dq_hi = _dot(ds, k_hi, PRECISION, UPCAST) * sm_scale
                if ROPE:
                    dq_lo, dq_hi = _rope_halves_transposed(dq_lo, dq_hi, COS, SIN, offs_m, mask_m, HALF)
                q_out = DQKV + b * stride_qkv_b + h * stride_qkv_h
                _store_halves(q_out, offs_m, stride_qkv_s, mask_m, dq_lo, dq_hi, HALF)

        dk_lo = dk_lo * sm_scale
        dk_hi = dk_hi * sm_scale
        if ROPE:
            dk_lo, dk_hi = _rope_halves_transposed(dk_lo, dk_hi, COS, SIN, offs_n, mask_n, HALF)
        out = DQKV + b * stride_qkv_b
        _store_halves(out + (H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, dk_lo, dk_hi, HALF)
        _store_halves(out + (2 * H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, dv_lo, dv_hi, HALF)

    @triton.jit
    def _attn_bwd_dq_kernel(
        QKV, COS, SIN, DO, LSE, DELTA, DQKV,
        stride_qkv_b, stride_qkv_s, stride_qkv_h,
        stride_do_b, stride_do_s, stride_do_h,
        S, H, sm_scale,
        HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        scale_log2 = sm_scale * 1.4426950408889634
        pid_bh, b, h, offs_m, mask_m = _program_rows(S, H, BLOCK_M)
        base = QKV + b * stride_qkv_b
        q_lo, q_hi = _load_head(base, h, stride_qkv_h, offs_m, stride_qkv_s, mask_m, COS, SIN, ROPE, HALF)
        do_lo, do_hi = _load_halves(DO + b * stride_do_b + h * stride_do_h, offs_m, stride_do_s, mask_m, HALF)
        lse2 = _load_lse2(LSE, pid_bh, S, offs_m, mask_m)
        delta = tl.load(DELTA + pid_bh * S + offs_m, mask=mask_m, other=0.0)

        dq_lo = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        dq_hi = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        for start_n in range(0, S, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < S
            k_lo, k_hi = _load_head(base, H + h, stride_qkv_h, offs_n, stride_qkv_s, mask_n, COS, SIN, ROPE, HALF)
            v_lo, v_hi = _load_head(base, 2 * H + h, stride_qkv_h, offs_n, stride_qkv_s, mask_n, COS, SIN, False, HALF)
            p, dp = _probs_and_dprobs(
                q_lo, q_hi, k_lo, k_hi, v_lo, v_hi, do_lo, do_hi, lse2, mask_m, mask_n, scale_log2, PRECISION, UPCAST
            )
            ds = (p * (dp - delta[:, None])).to(k_lo.dtype)
            dq_lo += _dot(ds, k_lo, PRECISION, UPCAST)
            dq_hi += _dot(ds, k_hi, PRECISION, UPCAST)

        dq_lo = dq_lo * sm_scale
        dq_hi = dq_hi * sm_scale
        if ROPE:
            dq_lo, dq_hi = _rope_halves_transposed(dq_lo, dq_hi, COS, SIN, offs_m, mask_m, HALF)
        _store_halves(DQKV + b * stride_qkv_b + h * stride_qkv_h, offs_m, stride_qkv_s, mask_m, dq_lo, dq_hi, HALF)


# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tiles:
    """Launch parameters of one kernel: tile rows (queries) and columns (keys), warps, pipeline stages."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2


# Tiles per GPU family, input precision and head dim, chosen by `python benchmarks/compile_report.py
# --search` from ahead-of-time compiles (no GPU needed): among the candidates that ptxas compiles without
# spilling registers and within the family's shared memory, the one using tensor cores (wgmma on Hopper),
# with 2 pipeline stages, the largest tile and the fewest registers -- a rule, not a timing
# (registers, spills and shared memory per entry in BENCHMARKS.md; the sm80 16-bit D=64/128 rows were
# searched on sm_80 alone and then checked on sm_86); `benchmarks/tune_attention.py` times
# the candidates on a GPU. Hopper ("sm90") reads the matmul operands from shared memory (wgmma); Ampere and
# Ada ("sm80": A100, and the 99 KiB shared memory of sm_86/sm_89 cards) hold them in registers (mma.sync),
# where the backward fits far smaller tiles. "one_pass" (the one-kernel backward, used for S <= its block_n)
# is there only where a tile holding 128 keys compiles without spills on every architecture of the family,
# for both 16-bit dtypes (D=64); float32, D=128 and D=32 take the three-kernel backward. Entries must fit
# under Triton 3.6 (torch 2.11) as well as the newest: ptxas allocates differently, so the sm90 D=128
# dK/dV tile is the one that fits both (BENCHMARKS.md, "Triton versions").
TILES: dict[tuple[str, str, int], dict[str, Tiles]] = {
    ("sm80", "16-bit", 32): {"fwd": Tiles(128, 128, 8, 2), "dkdv": Tiles(32, 64, 8, 2), "dq": Tiles(128, 64, 8, 2)},
    ("sm80", "16-bit", 64): {
        "fwd": Tiles(128, 64, 8, 2),
        "dkdv": Tiles(32, 32, 4, 2),
        "dq": Tiles(128, 32, 8, 2),
        "one_pass": Tiles(16, 128, 8, 2),
    },
    ("sm80", "16-bit", 128): {"fwd": Tiles(128, 32, 8, 2), "dkdv": Tiles(32, 32, 8, 2), "dq": Tiles(32, 64, 8, 2)},
    ("sm80", "fp32", 32): {"fwd": Tiles(64, 64, 8, 2), "dkdv": Tiles(32, 32, 8, 2), "dq": Tiles(64, 64, 8, 2)},
    ("sm80", "fp32", 64): {"fwd": Tiles(64, 64, 8, 2), "dkdv": Tiles(32, 64, 8, 1), "dq": Tiles(32, 64, 8, 2)},
    ("sm80", "fp32", 128): {
        "fwd": Tiles(32, 32, 8, 2),
        "dkdv": Tiles(32, 32, 8, 1),
        "dq": Tiles(32, 64, 8, 1),
    },  # dkdv: 16 B spill on sm_86, nothing fits
    ("sm90", "16-bit", 32): {"fwd": Tiles(128, 128, 8, 2), "dkdv": Tiles(128, 64, 8, 2), "dq": Tiles(128, 128, 8, 2)},
    ("sm90", "16-bit", 64): {
        "fwd": Tiles(128, 128, 8, 2),
        "dkdv": Tiles(128, 64, 8, 2),
        "dq": Tiles(128, 128, 8, 2),
        "one_pass": Tiles(16, 128, 8, 2),
    },
    ("sm90", "16-bit", 128): {"fwd": Tiles(128, 128, 8, 2), "dkdv": Tiles(32, 32, 8, 2), "dq": Tiles(64, 128, 8, 2)},
    ("sm90", "fp32", 32): {"fwd": Tiles(64, 64, 8, 2), "dkdv": Tiles(32, 32, 8, 2), "dq": Tiles(64, 64, 8, 2)},
    ("sm90", "fp32", 64): {"fwd": Tiles(64, 64, 8, 2), "dkdv": Tiles(64, 32, 8, 1), "dq": Tiles(32, 64, 8, 2)},
    ("sm90", "fp32", 128): {"fwd": Tiles(32, 32, 8, 2), "dkdv": Tiles(32, 32, 8, 1), "dq": Tiles(32, 32, 8, 2)},
}
DELTA_BLOCK_M = 64


def family_of(arch: int) -> str:
    """The TILES family of compute capability ``arch`` (80 for 8.0): 'sm90' from Hopper on, else 'sm80'."""
    return "sm90" if arch >= 90 else "sm80"


def gpu_family(device: torch.device) -> str:
    """The TILES family of ``device``; 'sm80' under the interpreter."""
    if device.type != "cuda":
        return "sm80"
    major, minor = _capability(device.index if device.index is not None else torch.cuda.current_device())
    return family_of(10 * major + minor)


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def tiles_for(kernel: str, head_dim: int, dtype: torch.dtype, family: str) -> Optional[Tiles]:
    """The TILES entry of ``kernel``; None for "one_pass" where no tile serves it (that backward then
    always takes three kernels)."""
    precision = "fp32" if dtype == torch.float32 else "16-bit"
    entry = TILES[(family, precision, head_dim)]
    return entry.get(kernel) if kernel == "one_pass" else entry[kernel]


@dataclass
class KernelLaunch:
    """One kernel with its grid and arguments: run it, or compile it without running (compile_report)."""

    name: str
    kernel: Any
    grid: tuple[int, int]
    args: tuple
    meta: dict

    def run(self) -> Any:
        """Launch; returns Triton's compiled kernel (registers, spills, ...) when compiled for a GPU."""
        return self.kernel[self.grid](*self.args, **self.meta)


def _check(qkv: torch.Tensor, num_heads: int) -> tuple[int, int, int, int]:
    if not HAVE_TRITON:
        raise RuntimeError("the Triton attention kernel needs the `triton` package; use attention_backend: sdpa.")
    if qkv.ndim != 4 or qkv.shape[2] != 3 * num_heads:
        raise ValueError(f"packed attention expects qkv of shape [B, S, 3*{num_heads}, D], got {tuple(qkv.shape)}.")
    B, S, _, D = qkv.shape
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"the Triton attention kernel supports head dims {SUPPORTED_HEAD_DIMS}, got {D}.")
    if qkv.stride(-1) != 1:
        raise ValueError("packed attention expects qkv with a contiguous last dimension.")
    return B, S, num_heads, D


def _precision(dtype: torch.dtype) -> str:
    # float32 inputs: exact fp32 products (tf32 would lose 10 bits against the reference path).
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and interpreter_enabled()


def _rope_tables(qkv: torch.Tensor, cos, sin, S: int):  # noqa: ANN001
    if cos is None:
        return False, qkv, qkv  # unused pointers
    return True, cos[:S].contiguous().float(), sin[:S].contiguous().float()


def _meta(
    kernel: str, D: int, dtype: torch.dtype, rope: bool, family: str, tiles: Optional[dict[str, Tiles]], **flags: bool
) -> dict:
    t = (tiles or {}).get(kernel) or tiles_for(kernel, D, dtype, family)
    return dict(
        HALF=D // 2, BLOCK_M=t.block_m, BLOCK_N=t.block_n, ROPE=rope, PRECISION=_precision(dtype),
        UPCAST=_upcast(dtype), num_warps=t.num_warps, num_stages=t.num_stages, **flags,
    )  # fmt: skip


def one_pass_tiles(
    S: int, D: int, dtype: torch.dtype, family: str, tiles: Optional[dict[str, Tiles]] = None,
    one_pass: Optional[bool] = None,
) -> Optional[Tiles]:  # fmt: skip
    """The tiles of the one-pass backward if it serves this call, else None (three kernels).

    ``one_pass`` None: wherever the table has a one-pass tile whose ``block_n`` covers S; True: required
    (an error where none covers S); False: never.
    """
    if one_pass is False:
        return None
    t = (tiles or {}).get("one_pass") or tiles_for("one_pass", D, dtype, family)
    if t is not None and S <= t.block_n:
        return t
    if one_pass:
        raise ValueError(
            f"the one-pass attention backward needs a tile of at least S={S} keys; "
            f"{'none is set' if t is None else f'it has {t.block_n}'} ({family}, {dtype}, head dim {D})."
        )
    return None


def forward_launches(
    qkv: torch.Tensor, cos, sin, num_heads: int, o: torch.Tensor, lse: torch.Tensor,  # noqa: ANN001
    tiles: Optional[dict[str, Tiles]] = None, family: Optional[str] = None,
) -> list[KernelLaunch]:  # fmt: skip
    """The forward kernel writing ``o [B, S, H, D]`` and ``lse [B, H, S]``.

    ``tiles`` overrides TILES per kernel name; ``family`` overrides the GPU family read from the device.
    """
    B, S, H, D = _check(qkv, num_heads)
    rope, cos, sin = _rope_tables(qkv, cos, sin, S)
    meta = _meta("fwd", D, qkv.dtype, rope, family or gpu_family(qkv.device), tiles)
    args = (
        qkv, cos, sin, o, lse,
        qkv.stride(0), qkv.stride(1), qkv.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        S, H, LOG2E / math.sqrt(D),
    )  # fmt: skip
    return [KernelLaunch("fwd", _attn_fwd_kernel, (triton.cdiv(S, meta["BLOCK_M"]), B * H), args, meta)]


def backward_launches(
    grad_o: torch.Tensor, qkv: torch.Tensor, cos, sin, o: torch.Tensor, lse: torch.Tensor,  # noqa: ANN001
    num_heads: int, dqkv: torch.Tensor, tiles: Optional[dict[str, Tiles]] = None, family: Optional[str] = None,
    one_pass: Optional[bool] = None,
) -> list[KernelLaunch]:  # fmt: skip
    """The kernels writing ``dqkv``: the one-pass kernel where one serves S (see one_pass_tiles), else delta,
    then dK/dV and dQ, each writing its own part. Overrides as forward_launches."""
    B, S, H, D = _check(qkv, num_heads)
    rope, cos, sin = _rope_tables(qkv, cos, sin, S)
    family = family or gpu_family(qkv.device)
    one = one_pass_tiles(S, D, qkv.dtype, family, tiles, one_pass)
    delta = lse if one is not None else torch.empty_like(lse)  # the one-pass kernel does not read it
    args = (
        qkv, cos, sin, grad_o, lse, delta, dqkv,
        qkv.stride(0), qkv.stride(1), qkv.stride(2),
        grad_o.stride(0), grad_o.stride(1), grad_o.stride(2),
        S, H, 1.0 / math.sqrt(D),
    )  # fmt: skip
    if one is not None:
        meta = _meta("one_pass", D, qkv.dtype, rope, family, {"one_pass": one}, ONE_PASS=True)
        return [KernelLaunch("one_pass", _attn_bwd_dkdv_kernel, (1, B * H), args, meta)]
    delta_args = (
        o, grad_o, delta,
        o.stride(0), o.stride(1), o.stride(2),
        grad_o.stride(0), grad_o.stride(1), grad_o.stride(2),
        S, H,
    )  # fmt: skip
    dkdv = _meta("dkdv", D, qkv.dtype, rope, family, tiles, ONE_PASS=False)
    dq = _meta("dq", D, qkv.dtype, rope, family, tiles)
    return [
        KernelLaunch(
            "delta", _attn_bwd_delta_kernel, (triton.cdiv(S, DELTA_BLOCK_M), B * H), delta_args,
            dict(D=D, BLOCK_M=DELTA_BLOCK_M),
        ),
        KernelLaunch("dkdv", _attn_bwd_dkdv_kernel, (triton.cdiv(S, dkdv["BLOCK_N"]), B * H), args, dkdv),
        KernelLaunch("dq", _attn_bwd_dq_kernel, (triton.cdiv(S, dq["BLOCK_M"]), B * H), args, dq),
    ]  # fmt: skip


def attention_forward(
    qkv: torch.Tensor,
    cos: Optional[torch.Tensor],
    sin: Optional[torch.Tensor],
    num_heads: int,
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
    tiles: Optional[dict[str, Tiles]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel; returns ``(o [B, S, H, D], lse [B, H, S] float32)``."""
    B, S, H, D = _check(qkv, num_heads)
    o = out if out is not None else torch.empty((B, S, H, D), dtype=qkv.dtype, device=qkv.device)
    lse = lse if lse is not None else torch.empty((B, H, S), dtype=torch.float32, device=qkv.device)
    for launch in forward_launches(qkv, cos, sin, H, o, lse, tiles):
        launch.run()
    return o, lse


def attention_backward(
    grad_o: torch.Tensor,
    qkv: torch.Tensor,
    cos: Optional[torch.Tensor],
    sin: Optional[torch.Tensor],
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    out: Optional[torch.Tensor] = None,
    tiles: Optional[dict[str, Tiles]] = None,
    one_pass: Optional[bool] = None,
) -> torch.Tensor:
    """Launch the backward kernels; returns the gradient of the packed ``qkv``."""
    grad_o = grad_o.contiguous()
    dqkv = out if out is not None else torch.empty_like(qkv)
    for launch in backward_launches(grad_o, qkv, cos, sin, o, lse, num_heads, dqkv, tiles, one_pass=one_pass):
        launch.run()
    return dqkv


# ---------------------------------------------------------------------------------------------------
@torch.library.custom_op("loopformer::packed_attention", mutates_args=())
def _packed_attention_op(
    qkv: torch.Tensor, cos: Optional[torch.Tensor], sin: Optional[torch.Tensor], num_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_forward(qkv.contiguous(), cos, sin, num_heads)


@_packed_attention_op.register_fake
def _(qkv, cos, sin, num_heads):
    B, S, _, D = qkv.shape
    return qkv.new_empty((B, S, num_heads, D)), qkv.new_empty((B, num_heads, S), dtype=torch.float32)


@torch.library.custom_op("loopformer::packed_attention_backward", mutates_args=())
def _packed_attention_backward_op(
    grad_o: torch.Tensor,
    qkv: torch.Tensor,
    cos: Optional[torch.Tensor],
    sin: Optional[torch.Tensor],
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
) -> torch.Tensor:
    return attention_backward(grad_o, qkv.contiguous(), cos, sin, o, lse, num_heads)


@_packed_attention_backward_op.register_fake
def _(grad_o, qkv, cos, sin, o, lse, num_heads):
    return torch.empty_like(qkv)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (torch.library signature)
    qkv, cos, sin, num_heads = inputs
    o, lse = output
    ctx.save_for_backward(qkv, cos, sin, o, lse)
    ctx.num_heads = num_heads
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_o, grad_lse):  # noqa: ANN001 (torch.library signature)
    qkv, cos, sin, o, lse = ctx.saved_tensors
    dqkv = _packed_attention_backward_op(grad_o, qkv, cos, sin, o, lse, ctx.num_heads)
    return dqkv, None, None, None


_packed_attention_op.register_autograd(_backward, setup_context=_setup_context)


def packed_attention(
    qkv_BS3HD: torch.Tensor, cos_SD: Optional[torch.Tensor], sin_SD: Optional[torch.Tensor], num_heads: int
) -> torch.Tensor:
    """Fused attention on the packed projection: ``[B, S, 3H, D] -> [B, S, H, D]``."""
    if cos_SD is not None:
        S = qkv_BS3HD.shape[1]
        cos_SD, sin_SD = cos_SD[:S], sin_SD[:S]
    o, _ = torch.ops.loopformer.packed_attention(qkv_BS3HD, cos_SD, sin_SD, num_heads)
    return o
