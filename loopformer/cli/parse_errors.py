"""jsonargparse's parse errors as one paragraph: the key, what was expected, and for an unknown key the nearest
valid ones (jsonargparse would print its whole usage first)."""

from __future__ import annotations

import difflib
import re
from typing import Any


def _option_keys(parser: Any, args: list[str]) -> list[str]:
    """The dotted keys the (sub)command accepts, for suggestions."""
    subcommand = next((a for a in args if not a.startswith("-")), None)
    subcommands = getattr(parser, "_subcommands_action", None)
    target = subcommands._name_parser_map.get(subcommand, parser) if subcommands is not None else parser
    keys = []
    for action in target._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                keys.append(option[2:])
    return keys


def parse_error_paragraph(message: str, parser: Any, args: list[str]) -> str:
    """jsonargparse's error (which it would print after the whole usage) as one paragraph: what was wrong, and for
    an unknown key the nearest valid ones."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    text = re.sub(r"\s+", " ", text)
    outer = re.match(r'Parser key "([\w.]+)":', text)
    keyed = re.findall(r'Parser key "([\w.]+)": Expected a (.+?)\. Got value: (\S+)', text)
    bare = re.search(r"Expected a (.+?)\. Got value: (\S+)", text)
    union = re.search(r"Union subtypes Subtypes: \[(.*?)\].*?Given value: (\S+?)\.?(?: |$)", text)
    if outer and union and not (keyed or bare):  # a value none of an Optional's or a Union's types takes
        kinds = [_type_name(t.strip()) for t in union.group(1).split(",")]
        kinds = ["null" if k == "NoneType" else k for k in kinds]
        text = f"{outer.group(1)} expected {' or '.join(kinds)}, got {union.group(2)}"
    elif outer and (keyed or bare):  # a wrong type, perhaps deep inside a list or a union: say the innermost part
        key, expected, got = keyed[-1] if keyed else (outer.group(1), *bare.groups())
        where = f"{outer.group(1)}: " if key != outer.group(1) else ""
        text = f"{where}{key} expected {_type_name(expected)}, got {got}"
    unknown = re.findall(r"--([\w.]+)", text) if "nrecognized" in text else re.findall(r'key "([\w.]+)"', text)
    unknown += re.findall(r"accept option '([\w.]+)'", text)  # a key in a config or architecture file
    keys = _option_keys(parser, args)
    hints = []
    for key in dict.fromkeys(unknown):
        if key in keys:
            continue
        near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        if near:
            hints.append(f"{key}: did you mean {' or '.join(near)}?")
    end = "" if text.endswith("?") else "."
    suffix = (". " + " ".join(hints)) if hints else end
    return f"{text.rstrip('.')}{suffix} `loopformer <command> --help` lists every option."


def _type_name(expected: str) -> str:
    """jsonargparse's type text, as a user reads it: ``<class 'int'>`` -> an integer, ``Literal['a', 'b']`` -> one
    of a, b."""
    choices = re.search(r"Literal\[(.*)\]", expected)
    if choices:
        return "one of " + ", ".join(c.strip(" '\"") for c in choices.group(1).split(","))
    simple = re.fullmatch(r"<class '(\w+)'>", expected)
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    return names.get(simple.group(1), simple.group(1)) if simple else expected
