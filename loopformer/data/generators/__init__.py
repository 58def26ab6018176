"""Datasets generated offline (no download): n x n Sudoku with unique solutions, mazes.

Each generator module registers its ``loopformer data build`` command (``data.registry``) and defines the
``data.generate`` config of its kind (``describe``, ``build(out_dir)``, ``describe_result(summary)``), which
``Generator`` lists for the data module: a config file picks a kind by its fields (``n``/``clues``: Sudoku,
``side``: mazes)."""

from collections.abc import Iterable
from dataclasses import fields
from typing import Optional, Union

from loopformer.data.generators.maze import MazeGenerator
from loopformer.data.generators.sudoku import SudokuGenerator

Generator = Union[SudokuGenerator, MazeGenerator]
GENERATORS = (SudokuGenerator, MazeGenerator)


def kind_of_fields(names: Iterable[str]) -> Optional[str]:
    """The kind that settings with these field names pick (``n``/``clues``: sudoku, ``side``/``aug``: maze), or
    None where they name only fields every kind has (``num_train``, ``seed``) or fields of several kinds."""
    names = set(names)
    picked = set()
    for generator in GENERATORS:
        own = {f.name for f in fields(generator)}
        for other in GENERATORS:
            if other is not generator:
                own -= {f.name for f in fields(other)}
        if names & own:
            picked.add(generator.kind)
    return picked.pop() if len(picked) == 1 else None
