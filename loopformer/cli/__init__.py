"""The ``loopformer`` command: LightningCLI's fit/validate/test/predict (``command``) with its command-line helpers
(``list_overrides``: ``--a.b.N.c=value``; ``terminal``: the start-up summary, quiet third-party logs), the tool
subcommands (``tools``: data, sweep, import-checkpoint) and the entry point (``entry``: tools and cached help start
without Lightning). ``LoopformerCLI`` is imported on first use, so that ``import loopformer.cli`` stays light."""

from typing import Any

from loopformer.cli.entry import main

__all__ = ["LoopformerCLI", "main"]


def __getattr__(name: str) -> Any:
    if name == "LoopformerCLI":
        from loopformer.cli.command import LoopformerCLI

        return LoopformerCLI
    raise AttributeError(f"module 'loopformer.cli' has no attribute {name!r}")
