"""Maze-Hard in the puzzle dataset layout, from its CSV files (``source,question,answer,rating``).

Cells use the HRM/TRM charset ``"# SGo"`` (wall, open, start, goal, path) as tokens 1..5, 0 padding. The
input shows the maze; the label adds the shortest path (``o``) from S to G. Augmentation applies the
8 dihedral transforms (training split only); each source maze is a group, each transform a puzzle.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np

from loopformer.argtypes import at_least
from loopformer.data.common import CHARSET, fetch_csv, progress, reading_csv, subsample, write_maze_split
from loopformer.data.format import DatasetError
from loopformer.data.registry import DatasetCommand, register


def encode(rows: str, side: int) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    lut[np.frombuffer(CHARSET.encode(), dtype=np.uint8)] = np.arange(1, len(CHARSET) + 1)
    raw = np.frombuffer(rows.encode(), dtype=np.uint8)
    return lut[raw].reshape(side, side)


def read_maze_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import csv

    inputs, labels = [], []
    side = None
    with open(path, newline="") as f, reading_csv(path, "Maze-Hard CSV rows source,question,answer,rating"):
        reader = csv.reader(f)
        header = next(reader, None)
        if header is not None and len(header) != 4:
            raise DatasetError(
                f"{path}: its first line has {len(header)} column(s); expected a header line source,question,answer,rating."
            )
        for line_no, row in enumerate(progress(reader, desc=f"maze {path.name}", unit="maze"), start=2):
            if len(row) != 4:
                raise DatasetError(
                    f"{path}:{line_no}: expected 4 columns (source,question,answer,rating), got {len(row)}."
                )
            _, q, a, _ = row
            n = int(round(len(q) ** 0.5))
            side = side or n
            bad = set(q + a) - set(CHARSET)
            found = [
                f"the question's {len(q)} characters are no square grid" if n * n != len(q) else "",
                f"the answer has {len(a)} characters, the question {len(q)}" if len(a) != len(q) else "",
                f"a {n}x{n} maze where the file's first is {side}x{side}" if n * n == len(q) and n != side else "",
                f"characters {sorted(bad)}" if bad else "",
            ]
            if any(found):
                raise DatasetError(
                    f"{path}:{line_no}: expected a question and an answer that are n x n grids (the same n in every "
                    f"row) over the characters {CHARSET!r}; found {', '.join(f for f in found if f)}."
                )
            inputs.append(encode(q, n))
            labels.append(encode(a, n))
    if not inputs:
        raise DatasetError(f"{path}: no mazes.")
    return np.stack(inputs), np.stack(labels)


def build_maze_from_csv(
    source: str, out_dir: str | Path, aug: bool = False, subsample_size: Optional[int] = None, seed: int = 0
) -> dict:
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    summary = {}
    for split in ("train", "test"):
        inputs, labels = read_maze_csv(fetch_csv(source, split, out_dir / ".download"))
        if split == "train":
            inputs, labels = subsample(rng, subsample_size, inputs, labels)
        summary[split] = write_maze_split(out_dir, split, inputs, labels, 8 if (aug and split == "train") else 1)
    summary["seconds"] = time.perf_counter() - start
    return summary


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source", help="directory with train.csv and test.csv, or a repo id such as sapientinc/maze-30x30-hard-1k"
    )
    p.add_argument("out", help="dataset directory to write (train/ and test/)")
    p.add_argument("--aug", action="store_true", help="the 8 dihedral transforms of every training maze")
    p.add_argument(
        "--subsample-size", type=at_least(1), default=None, help="training mazes kept, drawn at random (default: all)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subsampling")


def _build(a: argparse.Namespace) -> tuple[str, dict]:
    return f"maze {a.source}", build_maze_from_csv(a.source, a.out, a.aug, a.subsample_size, a.seed)


register(
    DatasetCommand("maze", "Maze-Hard from its CSV files (a directory or a Hugging Face repo id)", _arguments, _build)
)
