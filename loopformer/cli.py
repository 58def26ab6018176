"""The ``loopformer`` command: LightningCLI (fit/validate/test/predict) plus tool subcommands."""

from __future__ import annotations

import sys
from typing import Any, Optional

from lightning.pytorch.cli import LightningCLI

from loopformer.data.datamodule import PuzzleDataModule
from loopformer.list_overrides import OverrideError, apply_overrides, edited_list_flags, split_list_item_overrides
from loopformer.module import LoopformerModule

TOOL_COMMANDS = ("import-checkpoint",)
_NO_EARLY_EXIT = ("--print_config", "--help", "-h")


class LoopformerCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        super().__init__(LoopformerModule, PuzzleDataModule, *args, **kwargs)

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (LightningCLI's signature)
        if args is None or isinstance(args, (list, tuple)):
            args = expand_list_item_overrides(parser, list(sys.argv[1:] if args is None else args))
        super().parse_arguments(parser, args)


def expand_list_item_overrides(parser, args: list[str]) -> list[str]:
    """Turn ``--model.stages.0.repeat=3`` into one ``--model.stages=[...]`` flag (see list_overrides)."""
    try:
        rest, overrides = split_list_item_overrides(args)
    except OverrideError as e:
        parser.error(str(e))
    if not overrides:
        return args
    first_pass = [a for a in rest if a.split("=", 1)[0] not in _NO_EARLY_EXIT]
    if len(first_pass) != len(rest):  # --print_config takes an optional value
        first_pass = [a for a in first_pass if not a.startswith("--print_config")]
    cfg = parser.parse_args(first_pass)
    section = cfg[cfg.subcommand] if getattr(cfg, "subcommand", None) else cfg

    def lookup(key: str) -> Any:
        if key not in section:
            raise KeyError(key)
        return section[key]

    try:
        edited = apply_overrides(lookup, overrides)
    except OverrideError as e:
        parser.error(str(e))
    return rest + edited_list_flags(edited)


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOL_COMMANDS:
        from loopformer.tools import run_tool

        sys.exit(run_tool(argv[0], argv[1:]))
    LoopformerCLI(args=argv)


if __name__ == "__main__":
    main()
