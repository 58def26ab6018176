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
    union = re.search(r"Union subtypes Subtypes: \[(.*?)\] Errors:.*Given value: (.+)$", text)
    if outer and union and not (keyed or bare):  # a value none of an Optional's or a Union's types takes
        text = _union_paragraph(outer.group(1), union.group(1), union.group(2), text)
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
    model_keys = [key for key in dict.fromkeys(unknown) if f"model.{key}" in keys]
    if model_keys:
        hints.append(_model_file_hint(model_keys[0], args))
    end = "" if text.endswith("?") else "."
    suffix = (". " + " ".join(hints)) if hints else end
    return f"{text.rstrip('.')}{suffix} `loopformer <command> --help` lists every option."


def _model_file_hint(key: str, args: list[str]) -> str:
    """A model's settings (``configs/vrn/*.yaml``: top-level ``arch:``, ``train:``, ...) given with --config: which
    file, and the flag that takes it."""
    import yaml

    group = key.split(".", 1)[0]
    given = [b for a, b in zip(args, args[1:], strict=False) if a == "--config"]
    files = given + [a.removeprefix("--config=") for a in args if a.startswith("--config=")]
    for path in files:
        try:
            with open(path) as f:
                content = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(content, dict) and group in content:
            return (
                f"{path} holds a model's settings (its {group}: is model.{group}): give it with --model {path}, "
                "after the recipe's --config."
            )
    return f"{key} is a model setting: model.{key} in a config file or on the command line, or --model FILE."


def _union_paragraph(key: str, subtypes: str, given: str, text: str) -> str:
    """A value that none of a Union's types takes (``data.generate``: Sudoku or maze settings, or null): each type
    as a user reads it (settings with their fields), the value as given, and fields no type has, with the nearest."""
    required = re.search(
        r"Problem with given class_path '[\w.]*?(\w+)': the following arguments are required: ([\w, ]+)", text
    )
    if required:  # a class with a required argument not given (CSVLogger's save_dir where no earlier value set it)
        names = [n.strip() for n in required.group(2).split(",")]
        flags = " ".join(f"--{key}.{n}=..." for n in names)
        them = "it" if len(names) == 1 else "them"
        return f"{key}: {required.group(1)} requires {', '.join(names)}; give {them} ({flags})"
    types = _top_level_items(subtypes)
    choices = [c for t in types for c in _literal_choices(t)]  # several Literals (trainer.precision) read as one
    kinds = [f"one of {', '.join(dict.fromkeys(choices))}"] if choices else []
    kinds += ["null" if t == "<class 'NoneType'>" else _type_name(t) for t in types if not _literal_choices(t)]
    nested = re.fullmatch(r"NestedArg\(key='([\w.]+)', val=(.*)\)", given.strip())
    given = f"--{key}.{nested.group(1)}={nested.group(2).strip(chr(39))}" if nested else given.strip()
    fields = {name for t in types for name in _dataclass_fields(t)}
    unknown = [
        name for name in dict.fromkeys(re.findall(r"Option '(\w+)' is not accepted", text)) if name not in fields
    ]
    notes = []
    for name in unknown:
        near = difflib.get_close_matches(name, sorted(fields), n=2, cutoff=0.6)
        notes.append(f"no type has a field {name!r}" + (f" (did you mean {' or '.join(near)}?)" if near else ""))
    return f"{key} expected {' or '.join(kinds)}, got {given}" + (f": {'; '.join(notes)}" if notes else "")


def _top_level_items(text: str) -> list[str]:
    """``a, B[c, d], e`` -> ``["a", "B[c, d]", "e"]``: the commas inside brackets belong to their item."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    return [*items, text[start:].strip()]


def _literal_choices(expected: str) -> list[str]:
    """``Literal['a', 'b']`` (or ``typing.Literal[...]``) -> ``["a", "b"]``; other types -> ``[]``."""
    choices = re.search(r"Literal\[(.*)\]", expected)
    return [c.strip(" '\"") for c in _top_level_items(choices.group(1))] if choices else []


def _dataclass_fields(expected: str) -> list[str]:
    """The fields of the settings class jsonargparse names as ``<class 'a.b.Name'>``; none for other types."""
    import dataclasses
    import pydoc

    dotted = re.fullmatch(r"<class '([\w.]+)'>", expected)
    cls = pydoc.locate(dotted.group(1)) if dotted else None
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _type_name(expected: str) -> str:
    """jsonargparse's type text, as a user reads it: ``<class 'int'>`` -> an integer, ``Literal['a', 'b']`` -> one
    of a, b, ``<class 'pkg.SudokuGenerator'>`` -> SudokuGenerator settings (n, clues, ...)."""
    choices = _literal_choices(expected)
    if choices:
        return "one of " + ", ".join(choices)
    simple = re.fullmatch(r"<class '(\w+)'>", expected)
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    if simple:
        return names.get(simple.group(1), simple.group(1))
    dotted = re.fullmatch(r"<class '[\w.]*?(\w+)'>", expected)
    if dotted:
        fields = _dataclass_fields(expected)
        return f"{dotted.group(1)} settings ({', '.join(fields)})" if fields else dotted.group(1)
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", expected)  # collections.abc.Iterable[pkg.Logger] -> Iterable[Logger]
