"""A runtime self-check before the fused attention kernel is trusted on a device.

The kernels are tested in Triton's interpreter and compiled for sm_80/sm_90 ahead of time, but a device is only
trusted once the kernel has run there: the first time a process would use it for a (device capability, dtype,
head dim, sequence-length bucket), it runs forward and backward on a small random input of that shape family
and compares them with the PyTorch reference (RoPE + SDPA) on the same device, with the kernel tests' rule:
the kernel's error against float64 may be at most twice PyTorch's own error in the kernel's dtype, plus a
per-dtype floor (``TOLERANCE_FLOOR``). A compile error, an out-of-resources error or any other exception
counts as a failure, with its message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from loopformer.kernels import attention as attn

# Per-dtype floor, relative to the largest reference value: about two ulps of the dtype. The kernel rounds
# the unnormalised probabilities (and dS in the backward) to the input dtype before its matrix products, as
# FlashAttention does on tensor cores, while PyTorch's CPU bf16/fp16 attention keeps them in float32; so the
# kernel's error is 3-4x the CPU reference's (measured: bf16 output 0.012-0.018, dqkv 0.018-0.030).
TOLERANCE_FLOOR = {torch.float32: 1e-5, torch.float16: 2.5e-3, torch.bfloat16: 2e-2}
CHECK_BATCH, CHECK_HEADS = 2, 2
LONGEST_CHECK = 300  # longer sequences are checked at this length: the same (three-kernel) path, in milliseconds

# (forward, backward) of the fused path: (qkv, cos, sin, H) -> (o, lse); (grad_o, qkv, cos, sin, o, lse, H) -> dqkv
Kernel = tuple[Callable, Callable]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str  # the measured errors, or the exception


def shape_key(device: torch.device, dtype: torch.dtype, head_dim: int, seq_len: int) -> tuple:
    """What a verdict holds for: the device's capability, the dtype, the head dim and the backward path that
    the sequence length takes (one kernel up to the one-pass tile, three beyond)."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else ("interpreter",)
    family = attn.gpu_family(device)
    one_pass = attn.one_pass_tiles(seq_len, head_dim, dtype, family) is not None
    return (device.type, tuple(capability), str(dtype), head_dim, "one_pass" if one_pass else "three_kernels")


def max_errors(
    qkv: torch.Tensor, cos: Optional[torch.Tensor], sin: Optional[torch.Tensor], grad_o: torch.Tensor, num_heads: int,
    got_o: torch.Tensor, got_dqkv: torch.Tensor,
) -> list[tuple[str, float, float]]:  # fmt: skip
    """(name, error, bound) of the output and of dqkv against the float64 reference on the same device."""

    def reference(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        x = qkv.detach().to(dtype).requires_grad_()
        c, s = (cos.double(), sin.double()) if cos is not None and dtype == torch.float64 else (cos, sin)
        o = attn.packed_attention_reference(x, c, s, num_heads)
        (o * grad_o.to(dtype)).sum().backward()
        return o.detach().double(), x.grad.double()

    o64, d64 = reference(torch.float64)
    o_low, d_low = (o64, d64) if qkv.dtype == torch.float32 else reference(qkv.dtype)
    out = []
    for name, got, ref, low in (("output", got_o, o64, o_low), ("dqkv", got_dqkv, d64, d_low)):
        err = (got.double() - ref).abs().max().item()
        bound = 2 * (low - ref).abs().max().item() + TOLERANCE_FLOOR[qkv.dtype] * max(1.0, ref.abs().max().item())
        out.append((name, err, bound))
    return out


def run_check(
    device: torch.device, dtype: torch.dtype, head_dim: int, seq_len: int, rope: bool = True,
    kernel: Optional[Kernel] = None,
) -> Verdict:  # fmt: skip
    """Forward and backward of ``kernel`` (the fused one by default) against the reference, on ``device``."""
    forward, backward = kernel or (attn.attention_forward, attn.attention_backward)
    S, H, D = min(seq_len, LONGEST_CHECK), CHECK_HEADS, head_dim
    g = torch.Generator(device="cpu").manual_seed(0)
    qkv = torch.randn(CHECK_BATCH, S, 3 * H, D, generator=g).to(device=device, dtype=dtype)
    grad_o = torch.randn(CHECK_BATCH, S, H, D, generator=g).to(device=device, dtype=dtype)
    cos = sin = None
    if rope:
        cos, sin = (t.to(device) for t in attn.rope_tables(D, S, 10000.0))
    try:
        o, lse = forward(qkv, cos, sin, H)
        dqkv = backward(grad_o, qkv, cos, sin, o, lse, H)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # an illegal address surfaces here, as an error we can catch
        errors = max_errors(qkv, cos, sin, grad_o, H, o, dqkv)
    except Exception as e:  # noqa: BLE001 - any failure of the kernel means: do not use it here
        return Verdict(False, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    shown = ", ".join(f"{name} max error {err:.3g} (bound {bound:.3g})" for name, err, bound in errors)
    bad = [name for name, err, bound in errors if not err <= bound]  # NaN fails too
    return Verdict(not bad, shown if not bad else f"wrong values: {shown}")


VERDICTS: dict[tuple, Verdict] = {}  # per process, by shape_key


def check_kernel(device: torch.device, dtype: torch.dtype, head_dim: int, seq_len: int) -> Verdict:
    """The verdict for this shape family, checked at its first use in the process."""
    key = shape_key(device, dtype, head_dim, seq_len)
    if key not in VERDICTS:
        VERDICTS[key] = run_check(device, dtype, head_dim, seq_len)
    return VERDICTS[key]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return f"{device.type} (Triton interpreter)"
