"""Datasets generated offline (no download): n x n Sudoku with unique solutions, mazes.

Each generator module registers its ``loopformer data build`` command (``data.registry``) and defines the
``data.generate`` config of its kind (``describe``, ``build(out_dir)``, ``describe_result(summary)``), which
``Generator`` lists for the data module: a config file picks a kind by its fields (``n``/``clues``: Sudoku,
``side``: mazes)."""

from typing import Union

from loopformer.data.generators.maze import MazeGenerator
from loopformer.data.generators.sudoku import SudokuGenerator

Generator = Union[SudokuGenerator, MazeGenerator]
