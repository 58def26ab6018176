"""Run options of training: weight averaging, compilation, pictures. ``--model.run.<field>`` on the command line."""

from __future__ import annotations

from dataclasses import dataclass

from loopformer.errors import ConfigError


@dataclass
class RunOptions:
    ema: bool = False
    """Keep an exponential moving average of the weights; validate and checkpoint with it."""
    ema_rate: float = 0.999
    """EMA decay per optimizer step."""
    compile: bool = False
    """Compile the looped core with torch.compile (in place: checkpoints keep their keys)."""
    num_pictures: int = 4
    """Predictions drawn next to their labels at each validation (0: none)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.ema_rate < 1.0:
            raise ConfigError(f"model.run.ema_rate must lie in (0, 1), got {self.ema_rate}.")
        if self.num_pictures < 0:
            raise ConfigError(f"model.run.num_pictures must be >= 0, got {self.num_pictures}.")
