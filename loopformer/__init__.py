"""loopformer: multi-stage looped transformers (HRM / TRM family) for reasoning puzzles."""

__version__ = "0.1.0"
