"""Run options of training: weight averaging, compilation, pictures. ``--model.run.<field>`` on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, get_args

from loopformer.errors import ConfigError

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass
class RunOptions:
    ema: bool = False
    """Keep an exponential moving average of the weights; validate and checkpoint with it."""
    ema_rate: float = 0.999
    """EMA decay per optimizer step."""
    compile: bool = False
    """Compile the whole ACT step (core, heads, carry update, and in training the loss) with torch.compile, one
    graph without breaks; the weights stay in place, so checkpoints keep their keys."""
    compile_mode: CompileMode = "default"
    """torch.compile's mode with ``compile``: ``reduce-overhead`` replays the step as CUDA graphs (on a CUDA device;
    launch overhead is most of a small model's step), ``max-autotune`` also tunes the matrix products (and uses CUDA
    graphs), ``max-autotune-no-cudagraphs`` tunes without them."""
    num_pictures: int = 4
    """Predictions drawn next to their labels at each validation (0: none)."""
    arc_pass_k: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 100, 1000])
    """ARC data: the k of each pass@k logged (``val/arc/pass@k``), as TRM and VirtualRecursiveNetwork report."""
    depth_curve: Optional[list[int]] = None
    """validate/test: also evaluate at each of these halt_max_steps, with and without act_inference, and write
    depth_curve.csv and depth_curve.png to the run directory (e.g. [1, 2, 4, 8, 16, 32])."""

    def __post_init__(self) -> None:
        if not 0.0 < self.ema_rate < 1.0:
            raise ConfigError(f"model.run.ema_rate must lie in (0, 1), got {self.ema_rate}.")
        if self.depth_curve is not None and (
            not self.depth_curve
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.depth_curve)
        ):
            raise ConfigError(
                f"model.run.depth_curve must list ACT depths >= 1, e.g. [1, 2, 4, 8]; got {self.depth_curve}."
            )
        if not self.arc_pass_k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.arc_pass_k):
            raise ConfigError(f"model.run.arc_pass_k must list k >= 1, e.g. [1, 2, 5]; got {self.arc_pass_k}.")
        if self.compile_mode not in get_args(CompileMode):
            raise ConfigError(
                f"model.run.compile_mode must be one of {', '.join(get_args(CompileMode))}; got {self.compile_mode!r}."
            )
        if self.num_pictures < 0:
            raise ConfigError(f"model.run.num_pictures must be >= 0, got {self.num_pictures}.")
