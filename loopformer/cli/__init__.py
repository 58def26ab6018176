"""The ``loopformer`` command: LightningCLI's fit/validate/test/predict (``command``) with its command-line helpers
(``list_overrides``: ``--a.b.N.c=value``; ``terminal``: the start-up summary, quiet third-party logs) and the tool
subcommands (``tools``: data, sweep, import-checkpoint)."""

from loopformer.cli.command import LoopformerCLI, main

__all__ = ["LoopformerCLI", "main"]
