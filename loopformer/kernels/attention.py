"""Fused non-causal attention straight from the packed QKV projection, RoPE inside the kernel.

Shape legend: B batch, S sequence, H heads, D head dim (32, 64 or 128), HALF = D / 2.

``qkv_BS3HD`` is the output of the QKV projection viewed as ``[B, S, 3H, D]`` (q heads, then k, then v).
The forward reads it once, rotates q and k in float32 with the ``[S, D]`` cos/sin tables (half-split
layout, as the reference models), rounds them to the input dtype as the reference does before SDPA, and
runs a FlashAttention-2 style online softmax; it writes ``o_BSHD`` (ready for the output projection)
and the natural-log log-sum-exp ``lse_BHS`` (float32). The backward recomputes the probabilities from q,
k and lse, and writes the gradient of the packed tensor directly, RoPE's transpose included: dq by one
kernel, dk and dv by another, each element exactly once (no atomics).

Every head dim is handled as two halves because the rotation pairs element i with i + D/2.

Registered as ``torch.ops.loopformer.packed_attention`` with fake and autograd registrations, so
``torch.compile`` keeps it in the graph. ``packed_attention_reference`` is the pure PyTorch reference.
"""

from __future__ import annotations

import math
import os
from typing import Optional

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
def packed_attention_reference(
    qkv_BS3HD: torch.Tensor, cos_SD: Optional[torch.Tensor], sin_SD: Optional[torch.Tensor], num_heads: int
) -> torch.Tensor:
    """RoPE in float32, rounded to the input dtype, then softmax attention; returns ``[B, S, H, D]``."""
    q, k, v = qkv_BS3HD.split(num_heads, dim=2)
    if cos_SD is not None:
        S = qkv_BS3HD.shape[1]
        cos, sin = cos_SD[:S].unsqueeze(-2), sin_SD[:S].unsqueeze(-2)

        def rope(x: torch.Tensor) -> torch.Tensor:
            x32 = x.to(cos.dtype)
            lo, hi = x32.chunk(2, dim=-1)
            return (x32 * cos + torch.cat((-hi, lo), dim=-1) * sin).to(x.dtype)

        q, k = rope(q), rope(k)
    o_BHSD = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
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
    def _attn_fwd_kernel(
        QKV, COS, SIN, OUT, LSE,
        stride_qkv_b, stride_qkv_s, stride_qkv_h,
        stride_o_b, stride_o_s, stride_o_h,
        S, H, scale_log2,
        HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < S
        base = QKV + b * stride_qkv_b
        q_lo, q_hi = _load_halves(base + h * stride_qkv_h, offs_m, stride_qkv_s, mask_m, HALF)
        if ROPE:
            q_lo, q_hi = _rope_halves(q_lo, q_hi, COS, SIN, offs_m, mask_m, HALF)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc_lo = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        acc_hi = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        for start_n in range(0, S, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < S
            k_lo, k_hi = _load_halves(base + (H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, HALF)
            if ROPE:
                k_lo, k_hi = _rope_halves(k_lo, k_hi, COS, SIN, offs_n, mask_n, HALF)
            qk = _dot(q_lo, tl.trans(k_lo), PRECISION, UPCAST)
            qk += _dot(q_hi, tl.trans(k_hi), PRECISION, UPCAST)
            qk = tl.where(mask_n[None, :], qk * scale_log2, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v_lo, v_hi = _load_halves(base + (2 * H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, HALF)
            p_v = p.to(v_lo.dtype)
            acc_lo = acc_lo * alpha[:, None] + _dot(p_v, v_lo, PRECISION, UPCAST)
            acc_hi = acc_hi * alpha[:, None] + _dot(p_v, v_hi, PRECISION, UPCAST)
            m_i = m_new

        acc_lo = acc_lo / l_i[:, None]
        acc_hi = acc_hi / l_i[:, None]
        offs_d = tl.arange(0, HALF)
        o_ptrs = OUT + b * stride_o_b + h * stride_o_h + offs_m[:, None] * stride_o_s + offs_d[None, :]
        tl.store(o_ptrs, acc_lo.to(OUT.dtype.element_ty), mask=mask_m[:, None])
        tl.store(o_ptrs + HALF, acc_hi.to(OUT.dtype.element_ty), mask=mask_m[:, None])
        tl.store(LSE + pid_bh * S + offs_m, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, mask=mask_m)

    @triton.jit
    def _attn_bwd_dkdv_kernel(
        QKV, COS, SIN, DO, LSE, DELTA, DQKV,
        stride_qkv_b, stride_qkv_s, stride_qkv_h,
        stride_do_b, stride_do_s, stride_do_h,
        S, H, sm_scale,
        HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        pid_n = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        scale_log2 = sm_scale * 1.4426950408889634
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < S
        base = QKV + b * stride_qkv_b
        k_lo, k_hi = _load_halves(base + (H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, HALF)
        if ROPE:
            k_lo, k_hi = _rope_halves(k_lo, k_hi, COS, SIN, offs_n, mask_n, HALF)
        v_lo, v_hi = _load_halves(base + (2 * H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, HALF)

        dk_lo = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        dk_hi = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        dv_lo = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        dv_hi = tl.zeros([BLOCK_N, HALF], dtype=tl.float32)
        for start_m in range(0, S, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            mask_m = offs_m < S
            q_lo, q_hi = _load_halves(base + h * stride_qkv_h, offs_m, stride_qkv_s, mask_m, HALF)
            if ROPE:
                q_lo, q_hi = _rope_halves(q_lo, q_hi, COS, SIN, offs_m, mask_m, HALF)
            qk = _dot(q_lo, tl.trans(k_lo), PRECISION, UPCAST)
            qk += _dot(q_hi, tl.trans(k_hi), PRECISION, UPCAST)
            lse2 = tl.load(LSE + pid_bh * S + offs_m, mask=mask_m, other=0.0) * 1.4426950408889634
            p = tl.math.exp2(qk * scale_log2 - lse2[:, None])
            p = tl.where(mask_m[:, None] & mask_n[None, :], p, 0.0)
            do_lo, do_hi = _load_halves(DO + b * stride_do_b + h * stride_do_h, offs_m, stride_do_s, mask_m, HALF)
            p_c = p.to(do_lo.dtype)
            dv_lo += _dot(tl.trans(p_c), do_lo, PRECISION, UPCAST)
            dv_hi += _dot(tl.trans(p_c), do_hi, PRECISION, UPCAST)
            dp = _dot(do_lo, tl.trans(v_lo), PRECISION, UPCAST)
            dp += _dot(do_hi, tl.trans(v_hi), PRECISION, UPCAST)
            delta = tl.load(DELTA + pid_bh * S + offs_m, mask=mask_m, other=0.0)
            ds = (p * (dp - delta[:, None])).to(q_lo.dtype)
            dk_lo += _dot(tl.trans(ds), q_lo, PRECISION, UPCAST)
            dk_hi += _dot(tl.trans(ds), q_hi, PRECISION, UPCAST)

        dk_lo = dk_lo * sm_scale
        dk_hi = dk_hi * sm_scale
        if ROPE:
            dk_lo, dk_hi = _rope_halves_transposed(dk_lo, dk_hi, COS, SIN, offs_n, mask_n, HALF)
        offs_d = tl.arange(0, HALF)
        out = DQKV + b * stride_qkv_b + offs_n[:, None] * stride_qkv_s + offs_d[None, :]
        k_out = out + (H + h) * stride_qkv_h
        v_out = out + (2 * H + h) * stride_qkv_h
        tl.store(k_out, dk_lo.to(DQKV.dtype.element_ty), mask=mask_n[:, None])
        tl.store(k_out + HALF, dk_hi.to(DQKV.dtype.element_ty), mask=mask_n[:, None])
        tl.store(v_out, dv_lo.to(DQKV.dtype.element_ty), mask=mask_n[:, None])
        tl.store(v_out + HALF, dv_hi.to(DQKV.dtype.element_ty), mask=mask_n[:, None])

    @triton.jit
    def _attn_bwd_dq_kernel(
        QKV, COS, SIN, DO, LSE, DELTA, DQKV,
        stride_qkv_b, stride_qkv_s, stride_qkv_h,
        stride_do_b, stride_do_s, stride_do_h,
        S, H, sm_scale,
        HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        scale_log2 = sm_scale * 1.4426950408889634
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < S
        base = QKV + b * stride_qkv_b
        q_lo, q_hi = _load_halves(base + h * stride_qkv_h, offs_m, stride_qkv_s, mask_m, HALF)
        if ROPE:
            q_lo, q_hi = _rope_halves(q_lo, q_hi, COS, SIN, offs_m, mask_m, HALF)
        do_lo, do_hi = _load_halves(DO + b * stride_do_b + h * stride_do_h, offs_m, stride_do_s, mask_m, HALF)
        lse2 = tl.load(LSE + pid_bh * S + offs_m, mask=mask_m, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + pid_bh * S + offs_m, mask=mask_m, other=0.0)

        dq_lo = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        dq_hi = tl.zeros([BLOCK_M, HALF], dtype=tl.float32)
        for start_n in range(0, S, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < S
            k_lo, k_hi = _load_halves(base + (H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, HALF)
            if ROPE:
                k_lo, k_hi = _rope_halves(k_lo, k_hi, COS, SIN, offs_n, mask_n, HALF)
            v_lo, v_hi = _load_halves(base + (2 * H + h) * stride_qkv_h, offs_n, stride_qkv_s, mask_n, HALF)
            qk = _dot(q_lo, tl.trans(k_lo), PRECISION, UPCAST)
            qk += _dot(q_hi, tl.trans(k_hi), PRECISION, UPCAST)
            p = tl.math.exp2(qk * scale_log2 - lse2[:, None])
            p = tl.where(mask_m[:, None] & mask_n[None, :], p, 0.0)
            dp = _dot(do_lo, tl.trans(v_lo), PRECISION, UPCAST)
            dp += _dot(do_hi, tl.trans(v_hi), PRECISION, UPCAST)
            ds = (p * (dp - delta[:, None])).to(k_lo.dtype)
            dq_lo += _dot(ds, k_lo, PRECISION, UPCAST)
            dq_hi += _dot(ds, k_hi, PRECISION, UPCAST)

        dq_lo = dq_lo * sm_scale
        dq_hi = dq_hi * sm_scale
        if ROPE:
            dq_lo, dq_hi = _rope_halves_transposed(dq_lo, dq_hi, COS, SIN, offs_m, mask_m, HALF)
        offs_d = tl.arange(0, HALF)
        q_out = DQKV + b * stride_qkv_b + h * stride_qkv_h + offs_m[:, None] * stride_qkv_s + offs_d[None, :]
        tl.store(q_out, dq_lo.to(DQKV.dtype.element_ty), mask=mask_m[:, None])
        tl.store(q_out + HALF, dq_hi.to(DQKV.dtype.element_ty), mask=mask_m[:, None])


# ---------------------------------------------------------------------------------------------------
def _blocks(head_dim: int) -> tuple[int, int]:
    # 64 x 64 tiles keep q, k, v and the fp32 accumulators in registers up to D = 64; D = 128 halves
    # the key tile. Not yet tuned on hardware (see BENCHMARKS.md).
    return (64, 64) if head_dim <= 64 else (64, 32)


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


def attention_forward(
    qkv: torch.Tensor,
    cos: Optional[torch.Tensor],
    sin: Optional[torch.Tensor],
    num_heads: int,
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel; returns ``(o [B, S, H, D], lse [B, H, S] float32)``."""
    B, S, H, D = _check(qkv, num_heads)
    o = out if out is not None else torch.empty((B, S, H, D), dtype=qkv.dtype, device=qkv.device)
    lse = lse if lse is not None else torch.empty((B, H, S), dtype=torch.float32, device=qkv.device)
    rope = cos is not None
    if rope:
        cos, sin = cos[:S].contiguous().float(), sin[:S].contiguous().float()
    else:
        cos = sin = qkv  # unused pointers
    block_m, block_n = _blocks(D)
    grid = (triton.cdiv(S, block_m), B * H)
    _attn_fwd_kernel[grid](
        qkv, cos, sin, o, lse,
        qkv.stride(0), qkv.stride(1), qkv.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        S, H, LOG2E / math.sqrt(D),
        HALF=D // 2, BLOCK_M=block_m, BLOCK_N=block_n, ROPE=rope, PRECISION=_precision(qkv.dtype),
        UPCAST=_upcast(qkv.dtype),
    )  # fmt: skip
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
) -> torch.Tensor:
    """Launch the backward kernels; returns the gradient of the packed ``qkv``."""
    B, S, H, D = _check(qkv, num_heads)
    grad_o = grad_o.contiguous()
    dqkv = out if out is not None else torch.empty_like(qkv)
    # delta_i = sum_d dO_id * O_id, the softmax-backward row term, in float32: [B, H, S].
    delta = (grad_o.float() * o.float()).sum(-1).transpose(1, 2).contiguous()
    rope = cos is not None
    if rope:
        cos, sin = cos[:S].contiguous().float(), sin[:S].contiguous().float()
    else:
        cos = sin = qkv
    block_m, block_n = _blocks(D)
    common = dict(
        HALF=D // 2,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        ROPE=rope,
        PRECISION=_precision(qkv.dtype),
        UPCAST=_upcast(qkv.dtype),
    )
    args = (
        qkv, cos, sin, grad_o, lse, delta, dqkv,
        qkv.stride(0), qkv.stride(1), qkv.stride(2),
        grad_o.stride(0), grad_o.stride(1), grad_o.stride(2),
        S, H, 1.0 / math.sqrt(D),
    )  # fmt: skip
    _attn_bwd_dkdv_kernel[(triton.cdiv(S, block_n), B * H)](*args, **common)
    _attn_bwd_dq_kernel[(triton.cdiv(S, block_m), B * H)](*args, **common)
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
