"""Mazes generated offline, in the puzzle dataset layout of Maze-Hard (``data/common.py``): a random
depth-first maze with a unique shortest path from S to G, the label marking it.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from loopformer.argtypes import at_least
from loopformer.data.common import GOAL, OPEN, PATH, START, WALL, check_counts, progress, write_maze_split
from loopformer.data.format import DatasetError
from loopformer.data.generators.record import write_record
from loopformer.data.registry import DatasetCommand, register


def shortest_paths(open_mask: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> tuple[int, int, list]:
    """BFS: (length, number of shortest paths, one shortest path as cells) from start to goal."""
    n = open_mask.shape[0]
    dist = np.full(open_mask.shape, -1, dtype=np.int64)
    ways = np.zeros(open_mask.shape, dtype=np.int64)
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    dist[start], ways[start] = 0, 1
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < n and 0 <= nc < n and open_mask[nr, nc]:
                if dist[nr, nc] < 0:
                    dist[nr, nc] = dist[r, c] + 1
                    parent[(nr, nc)] = (r, c)
                    queue.append((nr, nc))
                if dist[nr, nc] == dist[r, c] + 1:
                    ways[nr, nc] = min(ways[nr, nc] + ways[r, c], 2)  # only "one" or "more" matters
    if dist[goal] < 0:
        return -1, 0, []
    path, cell = [goal], goal
    while cell != start:
        cell = parent[cell]
        path.append(cell)
    return int(dist[goal]), int(ways[goal]), path[::-1]


def check_side(side: int) -> None:
    if side < 5 or side % 2 == 0:
        raise DatasetError(f"maze side must be odd and >= 5, got {side}.")


def generate_maze(side: int, rng: np.random.Generator, loops: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A maze (odd ``side``) with a unique shortest path from S to G; returns (input, label) token grids.

    A random depth-first maze, then a fraction ``loops`` of its inner walls opened (openings that would
    make the shortest path ambiguous are closed again)."""
    check_side(side)
    open_mask = np.zeros((side, side), dtype=bool)
    cells = [(r, c) for r in range(1, side, 2) for c in range(1, side, 2)]
    first = cells[rng.integers(len(cells))]
    open_mask[first] = True
    stack = [first]
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in ((2, 0), (-2, 0), (0, 2), (0, -2))]
        nbrs = [(nr, nc) for nr, nc in nbrs if 0 < nr < side and 0 < nc < side and not open_mask[nr, nc]]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[rng.integers(len(nbrs))]
        open_mask[(r + nr) // 2, (c + nc) // 2] = True
        open_mask[nr, nc] = True
        stack.append((nr, nc))
    order = rng.permutation(len(cells))
    start, goal = cells[order[0]], cells[order[1]]
    walls = [(r, c) for r in range(1, side - 1) for c in range(1, side - 1) if not open_mask[r, c] and (r + c) % 2 == 1]
    for idx in rng.permutation(len(walls))[: int(loops * len(walls))]:
        open_mask[walls[idx]] = True
        if shortest_paths(open_mask, start, goal)[1] != 1:
            open_mask[walls[idx]] = False
    _, count, path = shortest_paths(open_mask, start, goal)
    assert count == 1
    maze = np.where(open_mask, OPEN, WALL).astype(np.uint8)
    maze[start], maze[goal] = START, GOAL
    label = maze.copy()
    for cell in path[1:-1]:
        label[cell] = PATH
    return maze, label


def build_maze_dataset(
    out_dir: str | Path, side: int = 15, num_train: int = 1000, num_test: int = 200, aug: bool = False, seed: int = 0
) -> dict:
    """Generated mazes, test mazes distinct from training ones."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    seen: set[bytes] = set()
    mazes, labels = [], []
    check_side(side)  # before the progress bar starts
    check_counts(num_train, num_test)
    bar = progress(total=num_train + num_test, desc=f"maze {side}x{side}", unit="maze")
    while len(mazes) < num_train + num_test:
        maze, label = generate_maze(side, rng)
        if maze.tobytes() in seen:
            continue
        seen.add(maze.tobytes())
        mazes.append(maze)
        labels.append(label)
        bar.update()
    bar.close()
    inputs, targets = np.stack(mazes), np.stack(labels)
    out_dir = Path(out_dir)
    summary = {
        "train": write_maze_split(out_dir, "train", inputs[:num_train], targets[:num_train], 8 if aug else 1),
        "test": write_maze_split(out_dir, "test", inputs[num_train:], targets[num_train:], 1),
    }
    summary["seconds"] = time.perf_counter() - start
    return summary


@dataclass
class MazeGenerator:
    """``data.generate`` for mazes with a unique shortest path: written to the first of ``data_paths`` when it does
    not exist yet."""

    kind: ClassVar[str] = "maze"
    side: int = 15
    """Odd grid side."""
    num_train: int = 1000
    """Training mazes."""
    num_test: int = 200
    """Held-out test mazes, none of which appears in training."""
    aug: bool = False
    """Add the 8 dihedral transforms of every training maze."""
    seed: int = 0
    """Generator seed."""

    def check(self) -> None:
        """Its values, as ``data.generate`` (the data module checks them, where the dataset exists already too)."""
        try:
            check_side(self.side)
            check_counts(self.num_train, self.num_test)
        except DatasetError as e:
            raise DatasetError(f"data.generate: {e}") from None

    def describe(self) -> str:
        return f"{self.side}x{self.side} mazes"

    def build(self, out_dir: str | Path) -> dict:
        summary = build_maze_dataset(out_dir, self.side, self.num_train, self.num_test, self.aug, self.seed)
        write_record(out_dir, self)
        return summary

    def layout(self) -> dict:
        """What its dataset's metadata says, for a dataset generated before its settings were recorded."""
        return {
            "kind": self.kind,
            "sequence length": self.side * self.side,
            "training puzzles": self.num_train * (8 if self.aug else 1),
            "test puzzles": self.num_test,
        }

    def describe_result(self, summary: dict) -> str:
        train, test = summary["train"]["mazes"], summary["test"]["mazes"]
        return f"Generated {train} train / {test} test mazes in {summary['seconds']:.1f}s."


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="dataset directory to write (train/ and test/)")
    p.add_argument("--side", type=int, default=15, help="odd grid side")
    p.add_argument("--num-train", type=at_least(1), default=1000, help="training mazes")
    p.add_argument("--num-test", type=at_least(1), default=200, help="held-out test mazes, none of them in training")
    p.add_argument("--aug", action="store_true", help="the 8 dihedral transforms of every training maze")
    p.add_argument("--seed", type=int, default=0, help="generator seed")


def _build(a: argparse.Namespace) -> tuple[str, dict]:
    generator = MazeGenerator(side=a.side, num_train=a.num_train, num_test=a.num_test, aug=a.aug, seed=a.seed)
    return f"{a.side}x{a.side} mazes", generator.build(a.out)


register(DatasetCommand("maze-gen", "generated mazes with a unique shortest path (offline)", _arguments, _build))
