"""Helpers shared by the dataset builders (``builders/``) and generators (``generators/``): fetching the published
CSV files, subsampling, the 8 dihedral symmetries of a square grid, and the maze layout."""

from __future__ import annotations

import csv
import fcntl
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np

from loopformer.data.format import DatasetError, PuzzleSet, grid_task_metadata, save_split
from loopformer.locks import is_held

T = TypeVar("T")


def holds_dataset(path: Path) -> bool:
    """Any of a dataset's splits is there (a directory `data build --overwrite` may replace)."""
    return any((path / split / "dataset.json").is_file() for split in ("train", "test"))


def is_built(path: Path) -> bool:
    """A dataset is there to read (its training split's metadata, which a build writes once the split is complete)."""
    return (path / "train" / "dataset.json").is_file()


def split_hint(path: Path) -> str:
    """Where ``path`` is one split of a dataset (it holds a ``dataset.json``) rather than the dataset: a sentence
    naming the dataset directory to give instead; otherwise ""."""
    path = Path(path)
    if not (path / "dataset.json").is_file():
        return ""
    return f" {path} is the {path.name} split of the dataset {path.parent}: give that directory."


def _building_prefix(out: Path) -> str:
    return f".{out.name}.building-"


@contextmanager
def _building(directory: Path) -> Iterator[None]:
    """Held by the build writing into ``directory`` for its lifetime (``flock`` on the directory, released by the
    kernel however the process ends), so that a directory no build holds is known to be left by one that was killed."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_half_built(out: Path, min_age_s: float = 5.0) -> None:
    """The directories ``build_then_move`` left beside ``out`` when a build was killed; those of builds under way
    (another ``data build`` of the same output) are left to them, as are those made in the last ``min_age_s``
    seconds (a build takes its directory's lock just after making it)."""
    out = Path(os.path.realpath(out))
    for stale in out.parent.glob(_building_prefix(out) + "*"):
        try:
            left = stale.stat().st_mtime <= time.time() - min_age_s and not is_held(stale)  # no build under way
        except OSError:
            continue
        if left:
            shutil.rmtree(stale, ignore_errors=True)


def build_then_move(out: Path, build: Callable[[Path], T], replace: bool = False) -> T:
    """``build(directory)`` into a new directory beside ``out``, moved to ``out`` once complete: a build that is
    interrupted or fails leaves no half dataset at ``out`` (and, with ``replace``, the dataset that was there). An
    existing ``out`` (empty, or a dataset to replace) keeps its directory, which may be a working directory or a
    mount point: its entries are exchanged."""
    out = Path(os.path.realpath(out))  # beside a symlink's target: on its filesystem
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_half_built(out)
    tmp = Path(tempfile.mkdtemp(prefix=_building_prefix(out), dir=out.parent))
    try:
        with _building(tmp):  # until it is moved: a complete build is not taken for a killed one either
            result = build(tmp)
            if not out.exists():
                os.replace(tmp, out)
            else:
                if any(out.iterdir()) and not (replace and holds_dataset(out)):
                    raise DatasetError(f"{out}: not empty; a dataset is built into a new or empty directory.")
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
                try:
                    for entry in list(out.iterdir()):
                        shutil.move(entry, old / entry.name)
                    for entry in list(tmp.iterdir()):
                        shutil.move(entry, out / entry.name)  # a rename, or a copy where out is another filesystem
                finally:
                    shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


HUB_URL = "https://huggingface.co/datasets/{repo}/resolve/main/{split}.csv"


@contextmanager
def reading_csv(path: Path, expected: str) -> Iterator[None]:
    """Around the reading of a CSV file: binary content or a malformed file becomes one DatasetError line."""
    try:
        yield
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file (binary content); expected {expected}.") from None
    except csv.Error as e:
        raise DatasetError(f"{path}: not a readable CSV file ({e}); expected {expected}.") from None


def subsample(
    rng: np.random.Generator, size: Optional[int], inputs: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` random pairs (without replacement), or all of them when ``size`` is None or not smaller."""
    if size is None or size >= len(inputs):
        return inputs, labels
    keep = rng.choice(len(inputs), size=size, replace=False)
    return inputs[keep], labels[keep]


def fetch_csv(source: str, split: str, cache_dir: Path) -> Path:
    """``source`` is a directory holding ``{split}.csv``, or a Hugging Face dataset repo id to download from."""
    local = Path(source) / f"{split}.csv"
    if local.is_file():
        return local
    if Path(source).exists():
        raise DatasetError(f"{local}: missing; a source directory needs train.csv and test.csv.")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{split}.csv"
    if target.is_file():
        return target
    url = HUB_URL.format(repo=source, split=split)
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(target.with_suffix(".part"), "wb") as out:
            out.write(response.read())
    except (urllib.error.URLError, OSError) as e:
        raise DatasetError(
            f"{source}: not a local directory, and downloading {split}.csv from the Hugging Face hub failed ({e}). "
            "Offline, download the CSV files elsewhere and pass their directory."
        ) from None
    target.with_suffix(".part").replace(target)
    return target


# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# Mazes: the HRM/TRM charset ``"# SGo"`` (wall, open, start, goal, path) as tokens 1..5, 0 padding.
CHARSET = "# SGo"
MAZE_TOKEN_NAMES = ["<pad>", *CHARSET]  # token t is CHARSET[t - 1]; 0 pads
WALL, OPEN, START, GOAL, PATH = (CHARSET.index(c) + 1 for c in CHARSET)


def write_maze_split(out_dir: Path, split: str, inputs: np.ndarray, labels: np.ndarray, transforms: int) -> dict:
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
    meta = grid_task_metadata(len(CHARSET) + 1, side * side, groups, total, kind="maze", token_names=MAZE_TOKEN_NAMES)
    save_split(out_dir / split, meta, {"all": part})
    return {"mazes": groups, "examples": total}


def check_counts(num_train: int, num_test: int) -> None:
    """A generated dataset's sizes: at least one puzzle in each split."""
    for key, value in (("num_train", num_train), ("num_test", num_test)):
        if value < 1:
            raise DatasetError(f"{key} must be >= 1, got {value}.")


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm progress bar on a terminal; nothing in a log file or a pipe (thousands of carriage-return updates
    there are noise: the builders print their summary line when done)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None, **kwargs)
