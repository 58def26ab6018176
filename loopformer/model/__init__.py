"""The looped transformer in plain PyTorch (no Lightning here)."""

from loopformer.batch import IGNORE_LABEL_ID
from loopformer.errors import ConfigError
from loopformer.model.act import PUZZLE_EMB_PREFIX, PUZZLE_TABLE_KEY, ACTCarry, LoopTransformer
from loopformer.model.config import ArchConfig, Halting, LoopTransformerConfig, RuntimeConfig, StageSpec, StateSpec
from loopformer.model.losses import act_loss

__all__ = [
    "ACTCarry",
    "ArchConfig",
    "ConfigError",
    "Halting",
    "IGNORE_LABEL_ID",
    "LoopTransformer",
    "LoopTransformerConfig",
    "PUZZLE_EMB_PREFIX",
    "PUZZLE_TABLE_KEY",
    "RuntimeConfig",
    "StageSpec",
    "StateSpec",
    "act_loss",
]
