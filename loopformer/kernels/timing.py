"""``auto``'s choice between the fused kernel and PyTorch SDPA by timing both on the device, after the kernel passed
its self-check: forward + backward of the attention segment (RoPE included) at the run's shape, a few iterations
after a warm-up, so that a GPU where the kernel is slower never pays for it. The choice is kept per process for each
(device, dtype, head dim, sequence-length bucket); ``resolve_attention`` makes every rank take the same one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from loopformer.kernels import attention as attn

WARMUP, ITERATIONS = 2, 5
TIMED_BATCH = 8  # rows of the timed call; the ratio between the two does not depend much on it
TIMED_HEADS = 8

# implementation -> seconds of one forward + backward (the median of ITERATIONS)
Timer = Callable[[torch.device, torch.dtype, int, int], dict[str, float]]


@dataclass(frozen=True)
class TimedChoice:
    implementation: str  # "triton" or "sdpa"
    seconds: dict[str, float]

    def reason(self) -> str:
        ms = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in sorted(self.seconds.items()))
        return f"auto timed forward + backward of one attention segment: {ms}; {self.implementation} is faster"


def length_bucket(seq_len: int) -> int:
    """The next power of two: runs whose lengths share it share a timing."""
    return 1 << max(0, seq_len - 1).bit_length()


CHOICES: dict[tuple, TimedChoice] = {}  # per process


def time_attention(device: torch.device, dtype: torch.dtype, head_dim: int, seq_len: int) -> dict[str, float]:
    """Seconds of one forward + backward of each implementation at this shape on ``device`` (median)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    qkv = torch.randn(TIMED_BATCH, seq_len, 3 * TIMED_HEADS, head_dim, generator=g).to(device=device, dtype=dtype)
    grad = torch.randn(TIMED_BATCH, seq_len, TIMED_HEADS, head_dim, generator=g).to(device=device, dtype=dtype)
    cos, sin = (t.to(device) for t in attn.rope_tables(head_dim, seq_len, 10000.0))

    def fused() -> None:
        o, lse = attn.attention_forward(qkv, cos, sin, TIMED_HEADS)
        attn.attention_backward(grad, qkv, cos, sin, o, lse, TIMED_HEADS)

    def reference() -> None:
        x = qkv.detach().requires_grad_()
        attn.packed_attention_reference(x, cos, sin, TIMED_HEADS).backward(grad)

    def seconds(fn: Callable[[], None]) -> float:
        for _ in range(WARMUP):
            fn()
        times = []
        for _ in range(ITERATIONS):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    return {"triton": seconds(fused), "sdpa": seconds(reference)}


def choose_by_timing(
    device: torch.device, dtype: torch.dtype, head_dim: int, seq_len: int, timer: Optional[Timer] = None
) -> TimedChoice:
    """The faster implementation at this shape, timed at its first use in the process (``timer``: injected in
    tests)."""
    key = (str(device), str(dtype), head_dim, length_bucket(seq_len))
    if key not in CHOICES:
        measured = (timer or time_attention)(device, dtype, head_dim, seq_len)
        CHOICES[key] = TimedChoice("triton" if measured["triton"] < measured["sdpa"] else "sdpa", measured)
    return CHOICES[key]
