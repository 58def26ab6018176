"""Offline n x n Sudoku with unique solutions, written in the puzzle dataset layout.

Boxes are ``box_rows x box_cols`` with ``box_rows * box_cols = n`` (4: 2x2, 6: 2x3, 9: 3x3). Difficulty is
the number of clues: fewer clues need longer chains of deduction. Tokens follow the HRM/TRM Sudoku
builder: 0 pad, 1 blank, digit d -> d + 1.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from loopformer.argtypes import at_least
from loopformer.data.common import check_counts, progress
from loopformer.data.format import DatasetError, PuzzleSet, grid_task_metadata, save_split
from loopformer.data.generators.record import write_record
from loopformer.data.kinds import sudoku_token_names
from loopformer.data.registry import DatasetCommand, register


def box_shape(n: int) -> tuple[int, int]:
    """The most square ``rows x cols`` box with ``rows * cols = n`` (rows <= cols)."""
    if n < 4:
        raise DatasetError(f"sudoku size n={n}: expected n >= 4 with a box shape (not prime): 4, 6, 8, 9, ...")
    rows = max(r for r in range(1, int(math.isqrt(n)) + 1) if n % r == 0)
    if rows == 1:
        raise DatasetError(f"sudoku size n={n} has no box shape (n must not be prime); use 4, 6, 8, 9, ...")
    return rows, n // rows


def check_clues(n: int, clues: int) -> None:
    if not 0 < clues <= n * n:
        raise DatasetError(f"clues={clues} must lie in [1, {n * n}] for a {n}x{n} sudoku.")


class _Grid:
    """Bitmask bookkeeping for one n x n grid (0 = empty, 1..n = digits)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.br, self.bc = box_shape(n)
        self.full = (1 << n) - 1
        self.cells = [(r, c, (r // self.br) * self.br + c // self.bc) for r in range(n) for c in range(n)]

    def masks(self, grid: list[int]) -> tuple[list[int], list[int], list[int]]:
        n = self.n
        rows, cols, boxes = [0] * n, [0] * n, [0] * n
        for i, v in enumerate(grid):
            if v:
                r, c, b = self.cells[i]
                bit = 1 << (v - 1)
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
        return rows, cols, boxes

    def count_solutions(self, grid: list[int], limit: int = 2) -> int:
        """Solutions of ``grid`` up to ``limit`` (depth-first, most-constrained cell first)."""
        grid = [int(v) for v in grid]
        rows, cols, boxes = self.masks(grid)
        found = 0

        def search() -> bool:
            nonlocal found
            best, best_free, best_count = -1, 0, 99
            for i, v in enumerate(grid):
                if v:
                    continue
                r, c, b = self.cells[i]
                free = self.full & ~(rows[r] | cols[c] | boxes[b])
                cnt = free.bit_count()
                if cnt < best_count:
                    best, best_free, best_count = i, free, cnt
                    if cnt <= 1:
                        break
            if best < 0:
                found += 1
                return found >= limit
            r, c, b = self.cells[best]
            free = best_free
            while free:
                bit = free & -free
                free ^= bit
                grid[best] = bit.bit_length()
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
                stop = search()
                rows[r] ^= bit
                cols[c] ^= bit
                boxes[b] ^= bit
                grid[best] = 0
                if stop:
                    return True
            return False

        search()
        return found

    def random_solution(self, rng: np.random.Generator) -> list[int]:
        n = self.n
        grid = [0] * (n * n)
        rows, cols, boxes = [0] * n, [0] * n, [0] * n

        def fill(i: int) -> bool:
            if i == n * n:
                return True
            r, c, b = self.cells[i]
            free = self.full & ~(rows[r] | cols[c] | boxes[b])
            digits = [d for d in range(1, n + 1) if free >> (d - 1) & 1]
            for d in rng.permutation(digits):
                bit = 1 << (int(d) - 1)
                grid[i] = int(d)
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
                if fill(i + 1):
                    return True
                rows[r] ^= bit
                cols[c] ^= bit
                boxes[b] ^= bit
            grid[i] = 0
            return False

        fill(0)
        return grid


def generate_sudoku(n: int, clues: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One puzzle with a unique solution and ``clues`` givens (or the fewest reachable above it).

    Returns ``(puzzle, solution)`` as ``[n*n]`` uint8 arrays with 0 for blanks.
    """
    check_clues(n, clues)
    g = _Grid(n)
    solution = g.random_solution(rng)
    puzzle = list(solution)
    given = n * n
    for i in rng.permutation(n * n):
        if given <= clues:
            break
        keep = puzzle[i]
        puzzle[i] = 0
        if g.count_solutions(puzzle, limit=2) == 1:
            given -= 1
        else:
            puzzle[i] = keep
    return np.array(puzzle, dtype=np.uint8), np.array(solution, dtype=np.uint8)


def _as_set(puzzles: np.ndarray, solutions: np.ndarray) -> PuzzleSet:
    count = puzzles.shape[0]
    return PuzzleSet(
        inputs=puzzles + 1,  # 0 blank -> 1, digit d -> d + 1; 0 stays free for padding.
        labels=solutions + 1,
        puzzle_identifiers=np.zeros(count, dtype=np.int32),
        puzzle_indices=np.arange(count + 1, dtype=np.int32),
        group_indices=np.arange(count + 1, dtype=np.int32),
    )


def build_sudoku_dataset(
    out_dir: str | Path, n: int = 4, clues: int = 6, num_train: int = 10000, num_test: int = 1000, seed: int = 0
) -> dict:
    """Generate ``num_train`` + ``num_test`` distinct puzzles (no test puzzle appears in train) and write them."""
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    puzzles, solutions = [], []
    start = time.perf_counter()
    attempts, max_attempts = 0, 50 * (num_train + num_test)
    box_shape(n)  # bad arguments fail before the progress bar starts
    check_clues(n, clues)
    check_counts(num_train, num_test)
    bar = progress(total=num_train + num_test, desc=f"sudoku {n}x{n}", unit="puzzle")
    while len(puzzles) < num_train + num_test:
        attempts += 1
        if attempts > max_attempts:
            raise DatasetError(
                f"could only generate {len(puzzles)} distinct {n}x{n} sudoku with {clues} clues out of "
                f"{num_train + num_test} requested; ask for fewer puzzles or more clues."
            )
        puzzle, solution = generate_sudoku(n, clues, rng)
        key = puzzle.tobytes()
        if key in seen:
            continue
        seen.add(key)
        puzzles.append(puzzle)
        solutions.append(solution)
        bar.update()
    bar.close()
    puzzles_arr, solutions_arr = np.stack(puzzles), np.stack(solutions)
    out_dir = Path(out_dir)
    for split, sl in (("train", slice(0, num_train)), ("test", slice(num_train, None))):
        part = _as_set(puzzles_arr[sl], solutions_arr[sl])
        meta = grid_task_metadata(
            n + 2, n * n, part.num_examples, part.num_examples, kind="sudoku", token_names=sudoku_token_names(n)
        )
        save_split(out_dir / split, meta, {"all": part})
    clue_counts = (puzzles_arr > 0).sum(1)
    return {
        "train": num_train,
        "test": num_test,
        "mean_clues": float(clue_counts.mean()),
        "seconds": time.perf_counter() - start,
    }


@dataclass
class SudokuGenerator:
    """``data.generate`` for n x n Sudoku: written to the first of ``data_paths`` when it does not exist yet."""

    kind: ClassVar[str] = "sudoku"
    n: int = 4
    """Grid size (4, 6, 9, ...)."""
    clues: int = 6
    """Givens asked per puzzle, the difficulty knob (fewer is harder): clues are removed down to this many while the
    solution stays unique, so a puzzle may keep more."""
    num_train: int = 10000
    """Training puzzles."""
    num_test: int = 1000
    """Held-out test puzzles, none of which appears in training."""
    seed: int = 0
    """Generator seed."""

    def check(self) -> None:
        """Its values, as ``data.generate`` (the data module checks them, where the dataset exists already too)."""
        try:
            box_shape(self.n)
            check_clues(self.n, self.clues)
            check_counts(self.num_train, self.num_test)
        except DatasetError as e:
            raise DatasetError(f"data.generate: {e}") from None

    def describe(self) -> str:
        return f"{self.n}x{self.n} sudoku ({self.clues} clues)"

    def build(self, out_dir: str | Path) -> dict:
        summary = build_sudoku_dataset(out_dir, self.n, self.clues, self.num_train, self.num_test, self.seed)
        write_record(out_dir, self)
        return summary

    def layout(self) -> dict:
        """What its dataset's metadata says, for a dataset generated before its settings were recorded."""
        return {
            "kind": self.kind,
            "sequence length": self.n * self.n,
            "training puzzles": self.num_train,
            "test puzzles": self.num_test,
        }

    def describe_result(self, summary: dict) -> str:
        return (
            f"Generated {summary['train']} train / {summary['test']} test puzzles "
            f"(mean clues {summary['mean_clues']:.1f}{more_clues_note(self.clues, summary)}) "
            f"in {summary['seconds']:.1f}s."
        )


def more_clues_note(asked: int, summary: dict) -> str:
    """Why puzzles kept more clues than asked, where they did (by half a clue or more on average)."""
    if summary["mean_clues"] < asked + 0.5:
        return ""
    return f"; {asked} asked: a clue stays where removing it would leave more than one solution"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="dataset directory to write (train/ and test/)")
    p.add_argument("--size", type=int, default=4, help="grid size n of the n x n Sudoku (4, 6, 8, 9, ...)")
    p.add_argument(
        "--clues",
        type=int,
        default=6,
        help="givens asked per puzzle, the difficulty knob: clues are removed down to this many while the solution "
        "stays unique, so a puzzle may keep more (each removal is a search for a second solution: from 12x12 up, "
        "few clues take minutes a puzzle or more)",
    )
    p.add_argument("--num-train", type=at_least(1), default=10000, help="training puzzles")
    p.add_argument("--num-test", type=at_least(1), default=1000, help="held-out test puzzles, none of them in training")
    p.add_argument("--seed", type=int, default=0, help="generator seed")


def _build(a: argparse.Namespace) -> tuple[str, dict]:
    generator = SudokuGenerator(n=a.size, clues=a.clues, num_train=a.num_train, num_test=a.num_test, seed=a.seed)
    summary = generator.build(a.out)
    note = more_clues_note(a.clues, summary)
    return f"{a.size}x{a.size} sudoku", {**summary, **({"note": note.removeprefix("; ")} if note else {})}


register(DatasetCommand("sudoku-gen", "generated n x n Sudoku with unique solutions (offline)", _arguments, _build))
