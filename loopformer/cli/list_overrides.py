"""Command-line overrides of list items, such as ``--model.arch.stages.0.repeat=3``.

jsonargparse sets whole lists only. wandb writes one flag per swept leaf, so the CLI takes flags whose
dotted key holds an integer, resolves the list they point into from everything else on the command line
(config files included), edits the items, and passes the edited list on as one ordinary flag.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Optional

import yaml

from loopformer.cli.flag_scan import Flag, replace_flags
from loopformer.config_groups import to_plain

_KEY = re.compile(r"^[A-Za-z_][\w]*(?:\.[\w]+)*$")


@dataclasses.dataclass
class ListItemOverride:
    flag: str  # as given, for messages
    list_key: str  # dotted key of the list option, e.g. model.arch.stages
    path: list[str]  # index, then fields or indices below it, e.g. ["0", "repeat"]
    raw_value: str


class OverrideError(ValueError):
    pass


def _first_index(key: str) -> Optional[int]:
    """Where the first list index is in a dotted key (``model.stages.0.repeat`` -> 2); None if it has none, or
    is no dotted key."""
    if not _KEY.match(key):
        return None
    return next((j for j, part in enumerate(key.split(".")) if part.isdigit()), None)


def split_list_item_overrides(args: list[str]) -> tuple[list[str], list[ListItemOverride]]:
    """Separate ``--a.b.N.c=value`` / ``--a.b.N.c value`` flags from the other arguments."""
    overrides = []

    def take(flag: Flag) -> list[str]:
        if flag.value is None:
            raise OverrideError(f"--{flag.key}: expected a value after the flag.")
        parts = flag.key.split(".")
        first = _first_index(flag.key)
        overrides.append(ListItemOverride(f"--{flag.key}", ".".join(parts[:first]), parts[first:], flag.value))
        return []

    rest = replace_flags(args, lambda key: bool(_first_index(key)), take)
    return rest, overrides


def parse_scalar(raw: str) -> Any:
    """A value as wandb writes it on the command line: ``True``, ``3``, ``1e-4``, ``[1, 2]``, ``z_H``."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value) else value
        except ValueError:
            return value
    return value


def _nearest_lists(key: str, list_keys: Iterable[str]) -> list[str]:
    """The list options a mistyped or moved list key most likely means: those with its last name
    (``model.stages`` -> ``model.arch.stages``), else the closest spellings."""
    list_keys = list(list_keys)
    last = key.rsplit(".", 1)[-1]
    same_name = [k for k in list_keys if k.rsplit(".", 1)[-1] == last]
    return same_name or difflib.get_close_matches(key, list_keys, n=3, cutoff=0.6)


def apply_overrides(
    lookup: Callable[[str], Any], overrides: list[ListItemOverride], list_keys: Iterable[str] = ()
) -> dict[str, list]:
    """Edited copies of every list the overrides touch; ``lookup(key)`` gives a list's current value, ``list_keys``
    the options that hold lists (for suggestions)."""
    edited: dict[str, list] = {}
    for ov in overrides:
        if ov.list_key not in edited:
            try:
                current = lookup(ov.list_key)
            except KeyError:
                near = [f"--{k}.{'.'.join(ov.path)}" for k in _nearest_lists(ov.list_key, list_keys)]
                hint = f"; did you mean {' or '.join(near)}?" if near else "."
                raise OverrideError(f"{ov.flag}: there is no option {ov.list_key!r} to index into{hint}") from None
            if not isinstance(current, (list, tuple)):
                kind = "unset" if current is None else type(current).__name__
                raise OverrideError(f"{ov.flag}: {ov.list_key} is {kind}, not a list, so it has no item {ov.path[0]}.")
            edited[ov.list_key] = to_plain(list(current))
        node: Any = edited[ov.list_key]
        where = ov.list_key
        for depth, part in enumerate(ov.path):
            last = depth == len(ov.path) - 1
            if isinstance(node, list):
                if not part.isdigit():
                    raise OverrideError(f"{ov.flag}: {where} is a list; expected an item index, got {part!r}.")
                index = int(part)
                if index >= len(node):
                    span = f"items 0-{len(node) - 1}" if node else "no items"
                    raise OverrideError(
                        f"{ov.flag}: index {index} is out of range: {where} has {len(node)} item(s) ({span})."
                    )
                if last:
                    node[index] = parse_scalar(ov.raw_value)
                else:
                    node = node[index]
                where = f"{where}.{index}"
            elif isinstance(node, dict):
                if part not in node:
                    fields = ", ".join(node) or "none"
                    raise OverrideError(f"{ov.flag}: {where} has no field {part!r}; its fields are: {fields}.")
                if last:
                    node[part] = parse_scalar(ov.raw_value)
                else:
                    node = node[part]
                where = f"{where}.{part}"
            else:
                raise OverrideError(f"{ov.flag}: {where} is a {type(node).__name__}, it has no item {part!r}.")
    return edited


def edited_list_flags(edited: dict[str, list]) -> list[str]:
    return [f"--{key}={json.dumps(value)}" for key, value in edited.items()]


# flags that end jsonargparse early: left out of the first pass that resolves the lists
_NO_EARLY_EXIT = ("--print_config", "--help", "-h")


def expand_list_item_overrides(parser, args: list[str]) -> list[str]:
    """Turn ``--model.arch.stages.0.repeat=3`` into one ``--model.arch.stages=[...]`` flag (this module's docstring)."""
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

    list_keys = [key for key, value in section.items() if isinstance(value, (list, tuple))]
    try:
        edited = apply_overrides(lookup, overrides, list_keys)
    except OverrideError as e:
        parser.error(str(e))
    return rest + edited_list_flags(edited)
