"""Which attention implementation runs: the one place that decides, from the configured backend, the device,
the head dim and whether Triton is installed.

``auto`` takes the fused Triton kernel on CUDA devices when Triton is installed and the head dim is supported,
PyTorch SDPA elsewhere; ``triton`` insists on the kernel (a config error where it cannot run); ``sdpa`` never
uses it.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

from loopformer.errors import ConfigError
from loopformer.kernels.attention import HAVE_TRITON, SUPPORTED_HEAD_DIMS, triton_usable

Implementation = Literal["triton", "sdpa"]


def check_attention_backend(backend: str, head_dim: Optional[int]) -> None:
    """At configuration time: can ``backend`` run at all here? ``head_dim`` None: the model has no attention."""
    if backend != "triton":
        return
    if not HAVE_TRITON:
        raise ConfigError("model.arch.attention_backend=triton, but the `triton` package is not installed.")
    if head_dim is not None and head_dim not in SUPPORTED_HEAD_DIMS:
        raise ConfigError(
            f"model.arch.attention_backend=triton supports head dims {SUPPORTED_HEAD_DIMS}; hidden_size/num_heads "
            f"= {head_dim} (use attention_backend: auto or sdpa)."
        )


def attention_implementation(backend: str, device: torch.device, head_dim: int) -> Implementation:
    """At run time: the implementation that computes attention for tensors on ``device``."""
    if backend == "sdpa":
        return "sdpa"
    if backend == "auto":
        usable = device.type == "cuda" and HAVE_TRITON and head_dim in SUPPORTED_HEAD_DIMS
        return "triton" if usable else "sdpa"
    if not triton_usable(device):
        raise RuntimeError(
            f"model.arch.attention_backend=triton cannot run on {device.type}: Triton compiles for CUDA devices "
            "(set TRITON_INTERPRET=1 before start-up to run its interpreter on the CPU, or use auto/sdpa)."
        )
    return "triton"
