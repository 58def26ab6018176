"""The looped transformer in plain PyTorch (no Lightning here)."""

from loopformer.model.act import ACTCarry, LoopTransformer
from loopformer.model.config import ConfigError, LoopTransformerConfig, StageSpec, StateSpec
from loopformer.model.losses import IGNORE_LABEL_ID, act_loss

__all__ = [
    "ACTCarry",
    "ConfigError",
    "IGNORE_LABEL_ID",
    "LoopTransformer",
    "LoopTransformerConfig",
    "StageSpec",
    "StateSpec",
    "act_loss",
]
