"""ARC-AGI in the puzzle dataset layout, with the HRM/TRM augmentation recipe, and the grid codec.

Reads the Kaggle files ``{prefix}_{subset}_challenges.json`` (+ ``_solutions.json``). Every puzzle becomes a
group: the puzzle and ``num_aug`` augmented copies (a dihedral transform and a permutation of the colours
1-9, duplicates skipped), each with its own puzzle identifier named ``name|||t<k>|||<colour map>``. Training
examples of every puzzle, and test examples of puzzles outside ``test_set``, go to the train split; test
examples of ``test_set`` puzzles go to the test split. Grids sit in a 30x30 canvas (pad 0, <eos> 1 after the
last row and column, colour c -> c + 2); in the train split all examples but one random one per puzzle are
translated to a random position. ``identifiers.json`` names every identifier; ``test_puzzles.json`` keeps the
original test puzzles for evaluation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from loopformer.argtypes import at_least
from loopformer.data.common import DIHEDRAL_INVERSE, dihedral_transform, progress
from loopformer.data.format import DatasetError, PuzzleDatasetMetadata, PuzzleSet, save_split
from loopformer.data.kinds import arc_token_names
from loopformer.data.registry import DatasetCommand, register
from loopformer.files import load_json

GRID = 30
PAD, EOS, COLOR0 = 0, 1, 2
SEP = "|||"
RETRIES_PER_AUG = 5  # attempts per wanted augmentation before giving up on duplicates


def grid_from_json(grid: list, where: str) -> np.ndarray:
    arr = np.array(grid)
    if arr.ndim != 2 or not (1 <= arr.shape[0] <= GRID and 1 <= arr.shape[1] <= GRID):
        raise DatasetError(f"{where}: expected a grid of 1-30 rows and columns, got shape {arr.shape}.")
    if arr.min() < 0 or arr.max() > 9:
        raise DatasetError(f"{where}: colours must be 0-9, found {int(arr.min())}..{int(arr.max())}.")
    return arr.astype(np.uint8)


def encode_pair(inp: np.ndarray, out: np.ndarray, rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    """Both grids in the canvas at the same offset (random when ``rng`` is given), each ended by <eos>."""
    rows, cols = max(inp.shape[0], out.shape[0]), max(inp.shape[1], out.shape[1])
    top = int(rng.integers(0, GRID - rows + 1)) if rng is not None else 0
    left = int(rng.integers(0, GRID - cols + 1)) if rng is not None else 0
    encoded = []
    for grid in (inp, out):
        r, c = grid.shape
        canvas = np.full((GRID, GRID), PAD, dtype=np.uint8)
        canvas[top : top + r, left : left + c] = grid + COLOR0
        if top + r < GRID:
            canvas[top + r, left : left + c] = EOS
        if left + c < GRID:
            canvas[top : top + r, left + c] = EOS
        encoded.append(canvas.reshape(-1))
    return encoded[0], encoded[1]


def decode_grid(tokens: np.ndarray) -> np.ndarray:
    """The largest top-left rectangle of colour tokens (a prediction may be ragged), as colours 0-9."""
    grid = np.asarray(tokens).reshape(GRID, GRID)
    best, best_shape, width = 0, (0, 0), GRID
    for r in range(GRID):
        row = grid[r, :width]
        bad = np.nonzero((row < COLOR0) | (row > COLOR0 + 9))[0]
        width = int(bad[0]) if bad.size else width
        if width == 0:
            break
        if (r + 1) * width > best:
            best, best_shape = (r + 1) * width, (r + 1, width)
    return (grid[: best_shape[0], : best_shape[1]] - COLOR0).astype(np.uint8)


def grid_hash(grid: np.ndarray) -> str:
    grid = np.ascontiguousarray(grid, dtype=np.uint8)
    return hashlib.sha256(bytes(grid.shape) + grid.tobytes()).hexdigest()


def augmentation(name: str, rng: np.random.Generator) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    tid = int(rng.integers(0, 8))
    colours = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
    aug_name = f"{name}{SEP}t{tid}{SEP}{''.join(str(c) for c in colours)}"
    return aug_name, lambda g: dihedral_transform(colours[g], tid)


def inverse_augmentation(aug_name: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(original name, map from an augmented grid back to the original puzzle's frame and colours)."""
    if SEP not in aug_name:
        return aug_name, lambda g: g
    name, t, colours = aug_name.split(SEP)
    inverse_colours = np.argsort(np.array([int(ch) for ch in colours])).astype(np.uint8)
    tid = int(t[1:])
    return name, lambda g: inverse_colours[dihedral_transform(g, DIHEDRAL_INVERSE[tid])]


def _puzzle_hash(examples: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> str:
    parts = sorted(f"{grid_hash(i)}|{grid_hash(o)}" for exs in examples.values() for i, o in exs)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def files_prefix(path: str, subset: str) -> str:
    """The path prefix of the Kaggle files, ``<prefix>_<subset>_challenges.json``: ``path`` itself, or for a
    directory, the prefix of the one set of such files in it (``<dir>/arc-agi`` in the Kaggle download)."""
    directory = Path(path)
    if not directory.is_dir():
        return path
    suffix = f"_{subset}_challenges.json"
    prefixes = sorted(str(directory / f.name[: -len(suffix)]) for f in directory.glob(f"*{suffix}"))
    if len(prefixes) == 1:
        return prefixes[0]
    if not prefixes:
        raise DatasetError(
            f"{directory}: a directory without *{suffix}; give the directory of the Kaggle ARC-AGI files "
            f"(arc-agi{suffix}, ...) or their path prefix (e.g. {directory / 'arc-agi'})."
        )
    raise DatasetError(
        f"{directory}: holds several sets of ARC files ({', '.join(Path(p).name + suffix for p in prefixes)}); "
        f"give the path prefix of one (e.g. {prefixes[0]})."
    )


def load_arc_subset(prefix: str, subset: str) -> dict:
    challenges = Path(f"{prefix}_{subset}_challenges.json")
    if not challenges.is_file():
        raise DatasetError(f"{challenges}: missing (ARC subsets are read from <prefix>_<subset>_challenges.json).")
    puzzles = load_json(challenges, DatasetError, "ARC-AGI challenges (a JSON object of tasks)")
    solutions = Path(f"{prefix}_{subset}_solutions.json")
    if solutions.is_file():
        sols = load_json(solutions, DatasetError, "ARC-AGI solutions (a JSON object of test outputs)")
        for name, puzzle in puzzles.items():
            for example, grid in zip(puzzle["test"], sols[name], strict=True):
                example["output"] = grid
    for puzzle in puzzles.values():
        for example in puzzle["test"]:
            example.setdefault("output", [[0]])  # no solutions published: a dummy the metric cannot match
    return puzzles


def build_arc_dataset(
    prefix: str,
    out_dir: str | Path,
    subsets: list[str],
    test_set: str,
    num_aug: int = 1000,
    seed: int = 42,
) -> dict:
    start_time = time.perf_counter()
    prefix = files_prefix(prefix, subsets[0])
    if test_set not in subsets:
        raise DatasetError(
            f"--test-set {test_set} is not among --subsets ({' '.join(subsets)}): the test split is the test inputs of "
            f"a subset the build reads; add {test_set} to --subsets, or name one of them."
        )
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    groups: dict[str, list[list[tuple[str, list]]]] = {"train": [], "test": []}
    test_puzzles: dict[str, dict] = {}
    for subset in subsets:
        puzzles = load_arc_subset(prefix, subset)
        names = list(puzzles)
        for name in progress([names[i] for i in rng.permutation(len(names))], desc=f"arc {subset}"):
            puzzle = puzzles[name]
            test_dest = "test" if subset == test_set else "train"
            if test_dest == "test":
                test_puzzles[name] = puzzle
            examples: dict[str, list] = {"train": [], "test": []}
            for kind, dest in (("train", "train"), ("test", test_dest)):
                for i, ex in enumerate(puzzle[kind]):
                    where = f"{prefix}_{subset}_challenges.json: {name} {kind}[{i}]"
                    examples[dest].append((grid_from_json(ex["input"], where), grid_from_json(ex["output"], where)))
            versions = [(name, examples)]
            seen = {_puzzle_hash(examples)}
            for _ in range(RETRIES_PER_AUG * num_aug):
                if len(versions) > num_aug:
                    break
                aug_name, f = augmentation(name, rng)
                augmented = {d: [(f(i), f(o)) for i, o in exs] for d, exs in examples.items()}
                h = _puzzle_hash(augmented)
                if h not in seen:
                    seen.add(h)
                    versions.append((aug_name, augmented))
            for dest in ("train", "test"):
                if any(exs[dest] for _, exs in versions):
                    groups[dest].append([(n, exs[dest]) for n, exs in versions])

    identifiers = {"<blank>": 0}
    for dest in ("train", "test"):
        for group in groups[dest]:
            for name, _ in group:
                identifiers.setdefault(name, len(identifiers))
    summary = {}
    for dest in ("train", "test"):
        inputs, labels, ids, puzzle_idx, group_idx = [], [], [], [0], [0]
        for group in groups[dest]:
            for name, exs in group:
                keep_in_place = int(rng.integers(0, len(exs)))
                for k, (i, o) in enumerate(exs):
                    translate = dest == "train" and k != keep_in_place
                    x, y = encode_pair(i, o, rng if translate else None)
                    inputs.append(x)
                    labels.append(y)
                puzzle_idx.append(len(inputs))
                ids.append(identifiers[name])
            group_idx.append(len(ids))
        total_puzzles = len(ids)
        part = PuzzleSet(
            inputs=np.stack(inputs),
            labels=np.stack(labels),
            puzzle_identifiers=np.array(ids, dtype=np.int32),
            puzzle_indices=np.array(puzzle_idx, dtype=np.int32),
            group_indices=np.array(group_idx, dtype=np.int32),
        )
        meta = PuzzleDatasetMetadata(
            pad_id=PAD,
            ignore_label_id=PAD,
            blank_identifier_id=0,
            vocab_size=12,
            seq_len=GRID * GRID,
            num_puzzle_identifiers=len(identifiers),
            total_groups=len(groups[dest]),
            mean_puzzle_examples=len(inputs) / max(1, total_puzzles),
            total_puzzles=total_puzzles,
            sets=["all"],
            kind="arc",
            token_names=arc_token_names(),
        )
        save_split(out_dir / dest, meta, {"all": part})
        summary[dest] = {"groups": len(groups[dest]), "puzzles": total_puzzles, "examples": len(inputs)}
    (out_dir / "identifiers.json").write_text(json.dumps(list(identifiers)))
    (out_dir / "test_puzzles.json").write_text(json.dumps(test_puzzles))
    summary["identifiers"] = len(identifiers)
    summary["seconds"] = time.perf_counter() - start_time
    return summary


@dataclass
class ARCSet:
    """One ARC build among the data paths: its identifier names, original test puzzles and identifier offset."""

    name: str
    identifiers: list[str]
    test_puzzles: dict
    offset: int = 0


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "prefix",
        help="the directory of the Kaggle JSON files (arc-agi_<subset>_challenges.json, ...), or their path prefix "
        "(e.g. data/arc-agi/arc-agi, then _<subset>_challenges.json)",
    )
    p.add_argument("out", help="dataset directory to write (train/ and test/)")
    p.add_argument("--subsets", nargs="+", default=["training", "evaluation", "concept"], help="subsets to read")
    p.add_argument("--test-set", default="evaluation", help="subset whose test inputs form the test split")
    p.add_argument(
        "--num-aug",
        type=at_least(0),
        default=1000,
        help="augmented copies of each task (dihedral, colour permutation, translation)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the augmentations")


def _build(a: argparse.Namespace) -> tuple[str, dict]:
    return f"arc {a.prefix}", build_arc_dataset(a.prefix, a.out, a.subsets, a.test_set, a.num_aug, a.seed)


register(
    DatasetCommand("arc", "ARC-AGI from the Kaggle JSON files, with the HRM/TRM augmentations", _arguments, _build)
)
