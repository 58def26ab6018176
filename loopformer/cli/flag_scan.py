"""Finding ``--key value`` / ``--key=value`` flags, and the help flags, on a command line before jsonargparse parses
it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
HELP_FLAGS = ("-h", "--help")


@dataclass(frozen=True)
class Flag:
    """One flag and its value as given: ``args[start:end]`` is ``["--key=value"]`` or ``["--key", "value"]``."""

    key: str  # without the leading dashes, e.g. "model.arch"
    value: Optional[str]  # None: the flag is the last argument and has no "=value"
    start: int
    end: int


def find_flags(args: list[str], wanted: Callable[[str], bool]) -> Iterator[Flag]:
    """The flags whose key ``wanted`` accepts, in order; each takes the argument after it as its value unless it
    is written ``--key=value``. Other arguments are passed over one at a time."""
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not wanted(key):
            i += 1
            continue
        if eq:
            yield Flag(key, value, i, i + 1)
            i += 1
        elif i + 1 < len(args):
            yield Flag(key, args[i + 1], i, i + 2)
            i += 2
        else:
            yield Flag(key, None, i, i + 1)
            i += 1


def replace_flags(args: list[str], wanted: Callable[[str], bool], replace: Callable[[Flag], list[str]]) -> list[str]:
    """``args`` with each flag ``wanted`` accepts (and its value) replaced by what ``replace`` returns for it."""
    out: list[str] = []
    last = 0
    for flag in find_flags(args, wanted):
        out += args[last : flag.start] + replace(flag)
        last = flag.end
    return out + args[last:]


def is_plain_help(args: list[str]) -> bool:
    """``--help`` or ``<fit|validate|test|predict> --help`` and nothing else (other flags can change the help)."""
    return (len(args) == 1 and args[0] in HELP_FLAGS) or (
        len(args) == 2 and args[0] in LIGHTNING_COMMANDS and args[1] in HELP_FLAGS
    )


def help_asked_of(args: Any) -> Optional[str]:
    """Whose help text the command line asks for: a subcommand's (``fit --help``), the top level's (``--help``:
    ""), none (None), or, where the order is unusual, possibly any subcommand's ("*")."""
    if not isinstance(args, (list, tuple)) or not any(isinstance(a, str) and a in HELP_FLAGS for a in args):
        return None  # a dict or Namespace of settings (as tests and embedders pass), or no help flag
    if args[0] in LIGHTNING_COMMANDS:
        return args[0]
    return "" if args[0] in HELP_FLAGS else "*"
