"""Which attention implementation runs: the one place that decides, from the configured backend, the device,
the head dim and whether Triton is installed.

``auto`` takes the fused Triton kernel on CUDA devices when Triton is installed and the head dim is supported,
PyTorch SDPA elsewhere; ``triton`` insists on the kernel (a config error where it cannot run); ``sdpa`` never
uses it. A run decides once, at its start (``resolve_attention``): the kernel is used only after it checked
itself on the device (``selfcheck``) and, under ``auto``, only where it is faster than SDPA there (``timing``);
then every attention layer runs what was decided.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from loopformer.errors import ConfigError
from loopformer.kernels import selfcheck, timing
from loopformer.kernels.attention import HAVE_TRITON, SUPPORTED_HEAD_DIMS, triton_usable

Implementation = Literal["triton", "sdpa"]


def check_attention_backend(backend: str, head_dim: Optional[int]) -> None:
    """At configuration time: can ``backend`` run at all here? ``head_dim`` None: the model has no attention."""
    if backend != "triton":
        return
    if not HAVE_TRITON:
        raise ConfigError("model.runtime.attention_backend=triton, but the `triton` package is not installed.")
    if head_dim is not None and head_dim not in SUPPORTED_HEAD_DIMS:
        raise ConfigError(
            f"model.runtime.attention_backend=triton supports head dims {SUPPORTED_HEAD_DIMS}; hidden_size/num_heads "
            f"= {head_dim} (use attention_backend: auto or sdpa)."
        )


def attention_implementation(backend: str, device: torch.device, head_dim: int, dropout: float = 0.0) -> Implementation:
    """At run time: the implementation that computes attention for tensors on ``device``. ``dropout``: the dropout
    on the attention weights this call applies (training only); the kernel has none, so SDPA computes it."""
    if backend == "sdpa" or dropout > 0:
        return "sdpa"
    if backend == "auto":
        usable = device.type == "cuda" and HAVE_TRITON and head_dim in SUPPORTED_HEAD_DIMS
        return "triton" if usable else "sdpa"
    if not triton_usable(device):
        raise RuntimeError(
            f"model.runtime.attention_backend=triton cannot run on {device.type}: Triton compiles for CUDA devices "
            "(set TRITON_INTERPRET=1 before start-up to run its interpreter on the CPU, or use auto/sdpa)."
        )
    return "triton"


@dataclass
class AttentionChoice:
    """A network's one attention setting, shared by all its attention layers: the configured backend, and once a
    run has decided (``resolve_attention``) the implementation every layer runs (``"none"``: no attention)."""

    configured: str = "auto"
    resolved: Optional[str] = None
    reason: str = ""  # why the run took ``resolved`` (set with it)

    def implementation(self, device: torch.device, head_dim: int, dropout: float) -> Implementation:
        return attention_implementation(self.resolved or self.configured, device, head_dim, dropout)


# -- deciding once per run, after the kernel checked itself on the device ---------------------------------------
class KernelSelfCheckError(ConfigError):
    """``attention_backend: triton`` where the kernel failed its self-check (on this rank or another)."""


@dataclass(frozen=True)
class Resolution:
    implementation: Implementation
    warning: str = ""  # "" when there is nothing to say
    failed_here: bool = False  # this rank's own check failed (not only another rank's)
    reason: str = ""  # why this implementation, in words (the start-up summary, the run's config)


def _why_not_triton(backend: str, device: torch.device, head_dim: int) -> str:
    if backend == "sdpa":
        return "attention_backend: sdpa"
    if device.type != "cuda":
        return f"auto on {device.type}: the fused kernel runs on CUDA devices"
    if not HAVE_TRITON:
        return "auto: Triton is not installed"
    if head_dim not in SUPPORTED_HEAD_DIMS:
        return f"auto: head dim {head_dim} is not one the kernel supports {SUPPORTED_HEAD_DIMS}"
    return "auto"


def resolve_attention(
    backend: str, device: torch.device, dtype: torch.dtype, head_dim: int, seq_len: int,
    check: Optional[Callable[..., selfcheck.Verdict]] = None, agree: Optional[Callable[[bool], bool]] = None,
    timer: Optional[timing.Timer] = None,
) -> Resolution:  # fmt: skip
    """The implementation a run uses: ``attention_implementation``'s choice, and where that is the Triton kernel,
    only if the kernel passed its self-check (``selfcheck.check_kernel``) on this device, and on every rank:
    ``agree(ok)`` returns whether every rank's check passed (one collective; None: a single process).
    ``auto`` falls back to SDPA with a warning naming the device, the shape and the failure; ``triton`` raises
    ``KernelSelfCheckError`` with the same message. After the check passes, ``auto`` times both implementations
    (``timing.choose_by_timing``; ``timer`` injected in tests) and takes the kernel only where it is faster on
    every rank (``agree`` again)."""
    if attention_implementation(backend, device, head_dim) == "sdpa":
        return Resolution("sdpa", reason=_why_not_triton(backend, device, head_dim))
    verdict = (check or selfcheck.check_kernel)(device, dtype, head_dim, seq_len)
    ok_everywhere = agree(verdict.ok) if agree is not None else verdict.ok
    if ok_everywhere and backend == "triton":
        return Resolution("triton", reason="attention_backend: triton (its self-check passed)")
    if ok_everywhere:
        timed = timing.choose_by_timing(device, dtype, head_dim, seq_len, timer)
        faster_everywhere = agree(timed.implementation == "triton") if agree is not None else None
        chosen = "triton" if (faster_everywhere if agree is not None else timed.implementation == "triton") else "sdpa"
        reason = timed.reason()
        if chosen != timed.implementation:
            reason += "; sdpa, since the kernel is not faster on every rank"
        return Resolution(chosen, reason=reason)
    reason = verdict.detail if not verdict.ok else "it passed here, but failed on another rank"
    problem = (
        f"the fused Triton attention kernel failed its self-check on {selfcheck.device_name(device)} "
        f"(dtype {str(dtype).replace('torch.', '')}, head dim {head_dim}, sequence length {seq_len}): {reason}"
    )
    if backend == "triton":
        raise KernelSelfCheckError(
            f"{problem}. model.runtime.attention_backend=triton insists on the kernel: use auto (falls back to SDPA) "
            "or sdpa, and please report this with the line above."
        )
    fallback = f"{problem}; this run uses PyTorch SDPA instead (attention_backend_resolved: sdpa)."
    return Resolution("sdpa", fallback, failed_here=not verdict.ok, reason="auto: the kernel failed its self-check")
