"""What evaluation reports besides its metrics: ``--model.eval.<field>`` on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from loopformer.errors import ConfigError


@dataclass
class EvalOptions:
    num_pictures: int = 4
    """Predictions drawn next to their labels at each validation (0: none)."""
    arc_pass_k: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 100, 1000])
    """ARC data: the k of each pass@k logged (``val/arc/pass@k``), as TRM and VirtualRecursiveNetwork report."""
    depth_curve: Optional[list[int]] = None
    """validate/test: also evaluate at each of these halt_max_steps, with and without act_inference, and write
    depth_curve.csv and depth_curve.png to the run directory (e.g. [1, 2, 4, 8, 16, 32])."""

    def __post_init__(self) -> None:
        if self.depth_curve is not None and (
            not self.depth_curve
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.depth_curve)
        ):
            raise ConfigError(
                f"model.eval.depth_curve must list ACT depths >= 1, e.g. [1, 2, 4, 8]; got {self.depth_curve}."
            )
        if not self.arc_pass_k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.arc_pass_k):
            raise ConfigError(f"model.eval.arc_pass_k must list k >= 1, e.g. [1, 2, 5]; got {self.arc_pass_k}.")
        if self.num_pictures < 0:
            raise ConfigError(f"model.eval.num_pictures must be >= 0, got {self.num_pictures}.")
