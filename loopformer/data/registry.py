"""The dataset commands of ``loopformer data build``: each builder (``data/builders/``) and generator
(``data/generators/``) registers its own, with its arguments and its build function, so that adding one touches
only its own module."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetCommand:
    name: str
    """``loopformer data build <name>``."""
    help: str
    """One line for ``loopformer data build --help``."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the command's arguments (the output directory among them)."""
    build: Callable[[argparse.Namespace], tuple[str, dict]]
    """Builds the dataset from the parsed arguments; returns (a title, the summary to print)."""


_COMMANDS: dict[str, DatasetCommand] = {}
PACKAGES = ("loopformer.data.builders", "loopformer.data.generators")


def register(command: DatasetCommand) -> DatasetCommand:
    if command.name in _COMMANDS and _COMMANDS[command.name] is not command:
        raise ValueError(f"two dataset commands are named {command.name!r}")
    _COMMANDS[command.name] = command
    return command


def dataset_commands() -> dict[str, DatasetCommand]:
    """Every registered command, after importing every module of the builder and generator packages."""
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{module.name}")
    return dict(_COMMANDS)
