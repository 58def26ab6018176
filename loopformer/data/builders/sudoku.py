"""Sudoku-Extreme in the puzzle dataset layout, from its CSV files (``source,question,answer,rating``).

With ``num_aug=0`` and no subsampling the output equals, file for file and array for array, what the
TRM/HRM builder writes for the same CSV: uint8 tokens (0 pad, 1 blank, digit d -> d + 1), one puzzle per
example, one group per source puzzle with its augmentations, ``identifiers.json = ["<blank>"]``.
Augmentation relabels digits, permutes bands/stacks and rows/columns inside them, and may transpose.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from loopformer.argtypes import at_least
from loopformer.data.common import fetch_csv, progress, reading_csv, subsample
from loopformer.data.format import DatasetError, PuzzleSet, grid_task_metadata, save_split
from loopformer.data.kinds import sudoku_token_names
from loopformer.data.registry import DatasetCommand, register


def read_sudoku_csv(path: Path, min_difficulty: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (questions, answers) as ``[N, 81]`` uint8 digits with 0 for blanks."""
    questions, answers = [], []
    with open(path, newline="") as f, reading_csv(path, "Sudoku-Extreme CSV rows source,question,answer,rating"):
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or len(header) != 4:
            found = "empty" if header is None else f"its first line has {len(header)} column(s)"
            raise DatasetError(f"{path}: {found}; expected a header line source,question,answer,rating.")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 4:
                raise DatasetError(
                    f"{path}:{line_no}: expected 4 columns (source,question,answer,rating), got {len(row)}."
                )
            _, q, a, rating = row
            if min_difficulty is not None and int(rating or 0) < min_difficulty:
                continue
            q = q.replace(".", "0")
            if len(q) != 81 or len(a) != 81 or not (q.isdigit() and a.isdigit()):
                raise DatasetError(f"{path}:{line_no}: question and answer must be 81 digits ('.' for blanks).")
            questions.append(np.frombuffer(q.encode(), dtype=np.uint8) - ord("0"))
            answers.append(np.frombuffer(a.encode(), dtype=np.uint8) - ord("0"))
    if not questions:
        return np.zeros((0, 81), np.uint8), np.zeros((0, 81), np.uint8)
    return np.stack(questions), np.stack(answers)


def shuffle_sudoku(question: np.ndarray, answer: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One validity-preserving transform of a 9x9 puzzle and its solution (``[81]`` digit arrays)."""
    digit_map = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
    transpose = rng.random() < 0.5
    rows = np.concatenate([band * 3 + rng.permutation(3) for band in rng.permutation(3)])
    cols = np.concatenate([stack * 3 + rng.permutation(3) for stack in rng.permutation(3)])

    def apply(grid: np.ndarray) -> np.ndarray:
        g = grid.reshape(9, 9)
        if transpose:
            g = g.T
        return digit_map[g[rows][:, cols]].reshape(81)

    return apply(question), apply(answer)


def build_sudoku_from_csv(
    source: str,
    out_dir: str | Path,
    subsample_size: Optional[int] = None,
    min_difficulty: Optional[int] = None,
    num_aug: int = 0,
    seed: int = 0,
) -> dict:
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    summary = {}
    for split in ("train", "test"):
        path = fetch_csv(source, split, out_dir / ".download")
        questions, answers = read_sudoku_csv(path, min_difficulty)
        if split == "train":
            questions, answers = subsample(rng, subsample_size, questions, answers)
        augments = num_aug if split == "train" else 0
        total = len(questions) * (1 + augments)
        inputs = np.empty((total, 81), dtype=np.uint8)
        labels = np.empty((total, 81), dtype=np.uint8)
        row = 0
        for q, a in progress(zip(questions, answers, strict=True), total=len(questions), desc=f"sudoku {split}"):
            inputs[row], labels[row] = q, a
            row += 1
            for _ in range(augments):
                inputs[row], labels[row] = shuffle_sudoku(q, a, rng)
                row += 1
        inputs += 1  # 0 stays free for padding
        labels += 1
        groups = len(questions)
        puzzle_set = PuzzleSet(
            inputs=inputs,
            labels=labels,
            puzzle_identifiers=np.zeros(total, dtype=np.int32),
            puzzle_indices=np.arange(total + 1, dtype=np.int32),
            group_indices=np.arange(groups + 1, dtype=np.int32) * (1 + augments),
        )
        meta = grid_task_metadata(11, 81, groups, groups, kind="sudoku", token_names=sudoku_token_names(9))
        save_split(out_dir / split, meta, {"all": puzzle_set})
        summary[split] = {"puzzles": groups, "examples": total}
    (out_dir / "identifiers.json").write_text(json.dumps(["<blank>"]))
    size = sum(f.stat().st_size for f in out_dir.rglob("*.npy"))
    summary.update(seconds=time.perf_counter() - start, megabytes=size / 1e6)
    return summary


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source", help="directory with train.csv and test.csv, or a repo id such as sapientinc/sudoku-extreme"
    )
    p.add_argument("out", help="dataset directory to write (train/ and test/)")
    p.add_argument(
        "--subsample-size", type=at_least(1), default=None, help="training puzzles kept, drawn at random (default: all)"
    )
    p.add_argument("--min-difficulty", type=int, default=None, help="keep puzzles rated at least this (default: all)")
    p.add_argument(
        "--num-aug",
        type=at_least(0),
        default=0,
        help="augmented copies of each training puzzle (digit relabelling, band/row shuffles, transposes)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subsampling and the augmentations")


def _build(a: argparse.Namespace) -> tuple[str, dict]:
    return f"sudoku {a.source}", build_sudoku_from_csv(
        a.source, a.out, a.subsample_size, a.min_difficulty, a.num_aug, a.seed
    )


register(
    DatasetCommand(
        "sudoku", "Sudoku-Extreme from its CSV files (a directory or a Hugging Face repo id)", _arguments, _build
    )
)
