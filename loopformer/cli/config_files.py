"""What the command line's ``--config``/``--model`` files and group flags say, read before jsonargparse parses them:
each file a YAML mapping (one line naming it otherwise), settings under their old names migrated, whether data
settings are given, a group's flags as a mapping."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from loopformer.cli.flag_scan import LIGHTNING_COMMANDS, Flag, find_flags, replace_flags
from loopformer.cli.list_overrides import parse_scalar
from loopformer.config_groups import group_settings, migrate_flags, migrate_model, notice
from loopformer.data.generators import kind_of_fields
from loopformer.errors import ConfigError
from loopformer.files import load_yaml

CONFIG_EXPECTED = "a loopformer config: a YAML mapping with any of seed_everything, trainer, model, data (see configs/)"
EXPECTED_BY_FLAG = {  # what the file a flag names should hold, for its errors
    "config": CONFIG_EXPECTED,
    "model": "a model config: a YAML mapping with any of arch, train, runtime, optim, ema, eval, budget (see configs/vrn/)",
    "model.arch": "an architecture config: a YAML mapping with any of states, stages, outer_cycles, hidden_size, ... "
    "(see configs/arch/)",
}


_parsed: dict[tuple[int, int, int, int], Any] = {}  # by the file's identity and version, however it is spelt


def read_config_file(path: str | Path, expected: str = CONFIG_EXPECTED) -> Any:
    """A ``--config``/``--model``/``--model.arch`` file's content, parsed once per start-up however many checks read
    it (a copy: the callers edit what they get); ``expected`` says what it should hold if it is no YAML."""
    stat = os.stat(path)
    key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if key not in _parsed:
        _parsed[key] = load_yaml(path, ConfigError, expected)
    return copy.deepcopy(_parsed[key])


def check_config_files(args: list[str]) -> None:
    """Every ``--config FILE`` is a readable YAML mapping, or one line naming it (jsonargparse would print the
    whole text, or a traceback for binary content)."""
    for flag in find_flags(args, lambda key: key == "config"):
        path = flag.value
        if path is None or path.lstrip().startswith("{"):  # no value, or an inline config string
            continue
        content = read_config_file(path) if Path(path).is_file() else load_yaml(path, ConfigError, CONFIG_EXPECTED)
        _require_mapping(path, content, CONFIG_EXPECTED)


def _require_mapping(path: str | Path, content: Any, expected: str) -> None:
    if not isinstance(content, dict):
        found = "nothing" if content is None else f"a {type(content).__name__}"
        raise ConfigError(f"{path}: holds {found}; expected {expected}.")


def _scalar_flag(key: str, value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return f"--{key}={text.removesuffix(chr(10) + '...').strip()}"


def _flags(prefix: str, values: dict[str, Any]) -> list[str]:
    """``{"act": {"halt_max_steps": 8}}`` under ``model.train`` -> ``["--model.train.act.halt_max_steps=8"]``."""
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flags(f"{prefix}.{key}", value)
        else:
            out.append(_scalar_flag(f"{prefix}.{key}", value))
    return out


def migrate_old_settings(args: list[str]) -> list[str]:
    """Settings under their old names (``config_groups``) in flags, ``--config``, ``--model`` and ``--model.arch``
    files, renamed in place, with one notice line per source. A file is read here and passed on as its migrated text
    (``--config`` accepts a YAML string; the files it names relative to itself made absolute); an architecture file's
    moved keys follow it as flags."""
    args, old_flags = migrate_flags(args)
    if old_flags:
        print(notice("the command line", old_flags), file=sys.stderr)
    return replace_flags(args, lambda key: key in ("config", "model", "model.arch"), _migrated_file_flags)


def _migrated_file_flags(flag: Flag) -> list[str]:
    key, value = flag.key, flag.value
    if value is None:
        return [f"--{key}"]
    path = Path(value)
    if value.lstrip().startswith("{") or path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return [f"--{key}", value]
    content = read_config_file(path, EXPECTED_BY_FLAG[key])
    _require_mapping(path, content, EXPECTED_BY_FLAG[key])
    if key == "model.arch":
        grouped = group_settings(content)
        if len(grouped) == 1:
            return [f"--{key}", value]
        moved = [f"model.arch.{k}" for k in content if k not in grouped["arch"]]
        print(notice(str(path), moved), file=sys.stderr)
        arch = yaml.safe_dump(grouped.pop("arch"), sort_keys=False)
        extra = [flag for group, values in grouped.items() for flag in _flags(f"model.{group}", values)]
        return [f"--{key}", arch, *extra]
    if key == "model":  # a model file (configs/vrn/): arch, train, runtime, ...
        content = {"model": content}
    sections = [content] + [content[s] for s in LIGHTNING_COMMANDS if isinstance(content.get(s), dict)]
    found: list[str] = []
    for section in sections:
        if isinstance(section.get("model"), dict):
            section["model"], old = migrate_model(section["model"])
            found += old
    if not found:
        return [f"--{key}", value]
    print(notice(str(path), found), file=sys.stderr)
    migrated = _anchored(content["model"] if key == "model" else content, path.parent)
    return [f"--{key}", yaml.safe_dump(migrated, sort_keys=False)]


def _anchored(value: Any, base: Path) -> Any:
    """Config files a file names by a path relative to itself (``arch: arch.yaml``), made absolute against its
    directory, as jsonargparse resolves them when it reads the file: the migrated text passed on in its place has no
    directory of its own."""
    if isinstance(value, dict):
        return {k: _anchored(v, base) for k, v in value.items()}
    if isinstance(value, str) and value.endswith((".yaml", ".yml")) and not os.path.isabs(value):
        if (base / value).is_file():
            return str((base / value).resolve())
    return value


def data_given(args: list[str], subcommand: str) -> bool:
    """Whether the command line gives data settings as a whole: ``--data FILE`` or a ``--config`` with ``data``."""
    for flag in find_flags(args, lambda key: key in ("data", "config")):
        if flag.key == "data":
            return True
        if flag.value is None:
            continue
        value = flag.value
        content = read_config_file(value) if Path(value).is_file() else yaml.safe_load(value)
        if isinstance(content, dict) and ("data" in content or "data" in (content.get(subcommand) or {})):
            return True
    return False


def generate_kind_resets(args: list[str]) -> list[str]:
    """``args`` with ``--data.generate=null`` before each source that gives ``data.generate`` as settings of another
    kind than the sources before it: a maze config file over the quickstart's Sudoku settings, or
    ``--data.generate='{side: 9}'``. Its fields pick the kind (as in a single file), not the earlier class: jsonargparse
    would merge the mapping into the Sudoku settings and reject both kinds. Single fields
    (``--data.generate.side=9``) switch the kind as they are."""
    subcommand = next((a for a in args if a in LIGHTNING_COMMANDS), None)
    current: Optional[str] = None
    out: list[str] = []
    last = 0
    for flag in find_flags(args, lambda key: key in ("config", "data", "data.generate")):
        given, settings = _generate_settings(flag, subcommand)
        if not given:
            continue
        kind = kind_of_fields(settings) if isinstance(settings, dict) and "class_path" not in settings else None
        if kind is not None and current is not None and kind != current:
            out += args[last : flag.start] + ["--data.generate=null"]
            last = flag.start
        current = None if settings is None else kind or current
    return out + args[last:]


def _generate_settings(flag: Flag, subcommand: Optional[str]) -> tuple[bool, Any]:
    """Whether a ``--config``, ``--data`` or ``--data.generate`` flag gives ``data.generate``, and the value it
    gives (what is no YAML is left for jsonargparse to report)."""
    if flag.value is None:
        return False, None
    try:
        content = read_config_file(flag.value) if Path(flag.value).is_file() else yaml.safe_load(flag.value)
    except (ConfigError, yaml.YAMLError, OSError):
        return False, None
    if flag.key == "data.generate":
        return True, content
    if flag.key == "config":
        sections = [content, content.get(subcommand)] if isinstance(content, dict) else []
        content = next((s["data"] for s in reversed(sections) if isinstance(s, dict) and "data" in s), None)
    if isinstance(content, dict) and "generate" in content:
        return True, content["generate"]
    return False, None


def group_flags(args: list[str], group: str) -> dict[str, Any]:
    """``--model.a=1 --model.b 2`` -> ``{"a": 1, "b": 2}`` for group ``model`` (values parsed as wandb writes
    them)."""
    out: dict[str, Any] = {}
    for flag in find_flags(args, lambda key: key.startswith(f"{group}.")):
        if flag.value is None:
            continue
        parsed = parse_scalar(flag.value)
        if isinstance(parsed, str) and parsed.endswith((".yaml", ".yml")) and Path(parsed).is_file():
            # a whole group from a file (`--model.arch configs/arch/x.yaml`): later flags edit inside it
            parsed = read_config_file(parsed, EXPECTED_BY_FLAG.get(flag.key, f"the settings of --{flag.key}"))
        node = out
        *parents, leaf = flag.key.removeprefix(f"{group}.").split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = parsed
    return out
