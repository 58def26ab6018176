"""Mazes in the puzzle dataset layout: Maze-Hard from its CSV files, and an offline generator.

Cells use the HRM/TRM charset ``"# SGo"`` (wall, open, start, goal, path) as tokens 1..5, 0 padding. The
input shows the maze; the label adds the shortest path (``o``) from S to G. Augmentation applies the
8 dihedral transforms (training split only); each source maze is a group, each transform a puzzle.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from loopformer.data.build_sudoku import fetch_csv, subsample
from loopformer.data.format import DatasetError, PuzzleSet, grid_task_metadata, save_split

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = (CHARSET.index(c) + 1 for c in CHARSET)


def dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    """The 8 symmetries of the square, numbered as the HRM/TRM builders number them."""
    if tid == 0:
        return grid
    if tid in (1, 2, 3):
        return np.rot90(grid, k=tid)
    if tid == 4:
        return np.fliplr(grid)
    if tid == 5:
        return np.flipud(grid)
    if tid == 6:
        return grid.T
    if tid == 7:
        return np.fliplr(np.rot90(grid, k=1))
    raise ValueError(f"dihedral transform id must be 0..7, got {tid}")


DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


def encode(rows: str, side: int) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    lut[np.frombuffer(CHARSET.encode(), dtype=np.uint8)] = np.arange(1, len(CHARSET) + 1)
    raw = np.frombuffer(rows.encode(), dtype=np.uint8)
    return lut[raw].reshape(side, side)


def read_maze_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import csv

    inputs, labels = [], []
    side = None
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        for line_no, row in enumerate(tqdm(reader, desc=f"maze {path.name}", unit="maze"), start=2):
            if len(row) != 4:
                raise DatasetError(
                    f"{path}:{line_no}: expected 4 columns (source,question,answer,rating), got {len(row)}."
                )
            _, q, a, _ = row
            n = int(round(len(q) ** 0.5))
            side = side or n
            bad = set(q + a) - set(CHARSET)
            if n * n != len(q) or len(a) != len(q) or n != side or bad:
                raise DatasetError(
                    f"{path}:{line_no}: expected two {side}x{side} grids over the characters {CHARSET!r}"
                    + (f" (found {sorted(bad)})" if bad else "")
                    + "."
                )
            inputs.append(encode(q, n))
            labels.append(encode(a, n))
    if not inputs:
        raise DatasetError(f"{path}: no mazes.")
    return np.stack(inputs), np.stack(labels)


def _write(out_dir: Path, split: str, inputs: np.ndarray, labels: np.ndarray, transforms: int) -> dict:
    groups, side = inputs.shape[0], inputs.shape[1]
    xs = np.stack([dihedral_transform(g, t) for g in inputs for t in range(transforms)]).reshape(-1, side * side)
    ys = np.stack([dihedral_transform(g, t) for g in labels for t in range(transforms)]).reshape(-1, side * side)
    total = xs.shape[0]
    part = PuzzleSet(
        inputs=xs,
        labels=ys,
        puzzle_identifiers=np.zeros(total, dtype=np.int32),
        puzzle_indices=np.arange(total + 1, dtype=np.int32),
        group_indices=np.arange(groups + 1, dtype=np.int32) * transforms,
    )
    meta = grid_task_metadata(vocab_size=len(CHARSET) + 1, seq_len=side * side, groups=groups, puzzles=total)
    save_split(out_dir / split, meta, {"all": part})
    return {"mazes": groups, "examples": total}


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
        summary[split] = _write(out_dir, split, inputs, labels, 8 if (aug and split == "train") else 1)
    summary["seconds"] = time.perf_counter() - start
    return summary


# ---------------------------------------------------------------------------------------------------
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
    progress = tqdm(total=num_train + num_test, desc=f"maze {side}x{side}", unit="maze")
    while len(mazes) < num_train + num_test:
        maze, label = generate_maze(side, rng)
        if maze.tobytes() in seen:
            continue
        seen.add(maze.tobytes())
        mazes.append(maze)
        labels.append(label)
        progress.update()
    progress.close()
    inputs, targets = np.stack(mazes), np.stack(labels)
    out_dir = Path(out_dir)
    summary = {
        "train": _write(out_dir, "train", inputs[:num_train], targets[:num_train], 8 if aug else 1),
        "test": _write(out_dir, "test", inputs[num_train:], targets[num_train:], 1),
    }
    summary["seconds"] = time.perf_counter() - start
    return summary
