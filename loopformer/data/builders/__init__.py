"""Datasets built from published sources: Sudoku-Extreme and Maze-Hard CSV files, ARC-AGI JSON files."""

from pathlib import Path

# The directories the HRM/TRM recipes (and HRM's README) name, and the command that builds each as they do.
PUBLISHED_BUILDS = {
    "sudoku-extreme-1k-aug-1000": "loopformer data build sudoku sapientinc/sudoku-extreme {path} --subsample-size 1000 "
    "--num-aug 1000",
    "maze-30x30-hard-1k": "loopformer data build maze sapientinc/maze-30x30-hard-1k {path}",
    "arc-aug-1000": "loopformer data build arc path/to/arc-agi {path} --subsets training evaluation concept "
    "--test-set evaluation --num-aug 1000",
}


def how_to_build(path: str) -> str:
    """The command that builds a published dataset at ``path``, from its directory's name; "" for other names."""
    command = PUBLISHED_BUILDS.get(Path(path).name)
    return command.format(path=path) if command else ""
