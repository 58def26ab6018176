"""The HRM/TRM puzzle dataset layout on disk, read and written.

A dataset directory holds ``{train,test}/dataset.json`` (the metadata) and, for every set name listed
there, ``{set}__{inputs,labels,puzzle_identifiers,puzzle_indices,group_indices}.npy``:

- ``inputs``/``labels``: ``[examples, seq_len]`` token ids;
- ``puzzle_identifiers``: ``[puzzles]``, the puzzle-embedding row of each puzzle;
- ``puzzle_indices``: ``[puzzles + 1]``, example ranges of each puzzle;
- ``group_indices``: ``[groups + 1]``, puzzle ranges of each group (a puzzle and its augmentations).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from loopformer.checkpoint import atomic
from loopformer.files import first_line, load_json

ARRAY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
REQUIRED_METADATA = (
    "pad_id",
    "ignore_label_id",
    "blank_identifier_id",
    "vocab_size",
    "seq_len",
    "num_puzzle_identifiers",
    "total_groups",
    "mean_puzzle_examples",
)


class DatasetError(ValueError):
    """A dataset file that is missing or does not follow the puzzle dataset layout."""


@dataclass
class PuzzleDatasetMetadata:
    pad_id: int
    ignore_label_id: Optional[int]
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: Optional[int] = None
    sets: list[str] = field(default_factory=lambda: ["all"])
    kind: Optional[str] = None
    """loopformer's: what the tokens form (``data.kinds.KINDS``), declared by the builder; None in older files."""
    token_names: Optional[list[str]] = None
    """loopformer's: what each token id stands for (index = id); None in older files."""

    @classmethod
    def load(cls, path: Path) -> PuzzleDatasetMetadata:
        if not path.is_file():
            raise DatasetError(f"{path}: missing. A puzzle dataset split needs a dataset.json with its metadata.")
        raw = load_json(path, DatasetError, "the split's metadata (a JSON object of the HRM/TRM fields)")
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: holds a {type(raw).__name__}; expected a JSON object of the HRM/TRM fields.")
        known = set(cls.__dataclass_fields__)
        missing = [k for k in REQUIRED_METADATA if k not in raw]
        if missing:
            raise DatasetError(f"{path}: missing keys {', '.join(missing)} (expected the HRM/TRM metadata fields).")
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self, path: Path) -> None:
        # Field order and formatting as the TRM builders write it (json.dump of the pydantic model).
        fields = asdict(self)
        for optional in ("total_puzzles", "kind", "token_names"):
            if fields[optional] is None:
                del fields[optional]
        fields["mean_puzzle_examples"] = float(fields["mean_puzzle_examples"])
        path.write_text(json.dumps(fields))


def grid_task_metadata(
    vocab_size: int, seq_len: int, groups: int, puzzles: int, kind: str, token_names: list[str]
) -> PuzzleDatasetMetadata:
    """Metadata of a task without puzzle embeddings (one blank identifier), one example per puzzle, token 0 as
    both padding and ignored label: the Sudoku and maze builders of HRM/TRM; ``kind`` and ``token_names`` declare
    what the tokens form (``data.kinds``)."""
    return PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=vocab_size,
        seq_len=seq_len,
        num_puzzle_identifiers=1,
        total_groups=groups,
        mean_puzzle_examples=1,
        total_puzzles=puzzles,
        sets=["all"],
        kind=kind,
        token_names=token_names,
    )


@dataclass
class PuzzleSet:
    """The arrays of one set of one split (memory-mapped where the file allows it)."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])


def load_split(split_dir: Path) -> tuple[PuzzleDatasetMetadata, dict[str, PuzzleSet]]:
    """Read and validate one split directory (``train`` or ``test``)."""
    split_dir = Path(split_dir)
    meta = PuzzleDatasetMetadata.load(split_dir / "dataset.json")
    sets = {}
    for name in meta.sets:
        arrays = {}
        for key in ARRAY_FIELDS:
            path = split_dir / f"{name}__{key}.npy"
            if not path.is_file():
                raise DatasetError(
                    f"{path}: missing (set {name!r} of {split_dir} needs all of {', '.join(ARRAY_FIELDS)})."
                )
            try:
                # Token arrays are memory-mapped; indices are small and kept in memory. Never unpickle.
                arrays[key] = np.load(path, mmap_mode="r" if key in ("inputs", "labels") else None, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise DatasetError(f"{path}: cannot be read as a plain numpy array ({first_line(e)}).") from None
        puzzle_set = PuzzleSet(**arrays)
        _validate_set(split_dir, name, meta, puzzle_set)
        sets[name] = puzzle_set
    return meta, sets


def _validate_set(split_dir: Path, name: str, meta: PuzzleDatasetMetadata, s: PuzzleSet) -> None:
    def where(key: str) -> str:
        return str(split_dir / f"{name}__{key}.npy")

    for key in ARRAY_FIELDS:
        arr = getattr(s, key)
        if not np.issubdtype(arr.dtype, np.integer):
            raise DatasetError(f"{where(key)}: dtype {arr.dtype}, expected an integer dtype.")
    for key in ("inputs", "labels"):
        arr = getattr(s, key)
        if arr.ndim != 2 or arr.shape[1] != meta.seq_len:
            raise DatasetError(f"{where(key)}: shape {arr.shape}, expected [examples, seq_len={meta.seq_len}].")
    if s.labels.shape != s.inputs.shape:
        raise DatasetError(f"{where('labels')}: shape {s.labels.shape} differs from inputs {s.inputs.shape}.")
    for key in ("inputs", "labels"):
        arr = np.asarray(getattr(s, key))
        if arr.size and (arr.min() < 0 or arr.max() >= meta.vocab_size):
            bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
            raise DatasetError(f"{where(key)}: token id {bad} outside [0, vocab_size={meta.vocab_size}).")
    for key in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        if getattr(s, key).ndim != 1:
            raise DatasetError(f"{where(key)}: expected a 1-D array, got shape {getattr(s, key).shape}.")
    ids = s.puzzle_identifiers
    if ids.size and (ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise DatasetError(
            f"{where('puzzle_identifiers')}: identifier {bad} outside [0, num_puzzle_identifiers="
            f"{meta.num_puzzle_identifiers})."
        )
    for key, last, length_of in (
        ("puzzle_indices", s.num_examples, "examples"),
        ("group_indices", ids.shape[0], "puzzles"),
    ):
        idx = getattr(s, key)
        if idx.size < 1 or idx[0] != 0 or idx[-1] != last:
            raise DatasetError(f"{where(key)}: must start at 0 and end at the number of {length_of} ({last}).")
        if np.any(np.diff(idx) < 0):
            pos = int(np.argmax(np.diff(idx) < 0))
            raise DatasetError(f"{where(key)}: not monotonic at position {pos + 1} ({idx[pos]} -> {idx[pos + 1]}).")
    if s.puzzle_indices.shape[0] != ids.shape[0] + 1:
        raise DatasetError(
            f"{where('puzzle_indices')}: {s.puzzle_indices.shape[0]} entries for {ids.shape[0]} puzzles "
            "(expected puzzles + 1)."
        )


def save_split(split_dir: Path, meta: PuzzleDatasetMetadata, sets: dict[str, PuzzleSet]) -> None:
    """Write one split, each file atomically; ``dataset.json`` last, so a split with one is complete."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, s in sets.items():
        for key in ARRAY_FIELDS:
            array = np.ascontiguousarray(getattr(s, key))
            atomic.write_atomically(split_dir / f"{name}__{key}.npy", lambda f, array=array: np.save(f, array))
    atomic.write_with(split_dir / "dataset.json", meta.save)


MERGE_KEYS = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id", "sets")


def load_merged(split_dirs: list[Path]) -> tuple[PuzzleDatasetMetadata, dict[str, PuzzleSet]]:
    """Several dataset directories' split as one, as the HRM/TRM loader merges ``data_paths``.

    Token metadata must agree; puzzle identifiers of each later path are offset by the identifiers of the
    paths before it (so every path keeps its own embeddings), and its index arrays by the examples and
    puzzles before it.
    """
    loaded = [(Path(d), *load_split(d)) for d in split_dirs]
    if len(loaded) == 1:
        return loaded[0][1], loaded[0][2]
    first_dir, first, _ = loaded[0]
    for d, meta, _ in loaded[1:]:
        for key in MERGE_KEYS:
            if getattr(meta, key) != getattr(first, key):
                raise DatasetError(
                    f"{d / 'dataset.json'}: {key}={getattr(meta, key)!r} disagrees with "
                    f"{first_dir / 'dataset.json'} ({getattr(first, key)!r}); merged data_paths must share it."
                )
    merged_sets = {}
    for name in first.sets:
        parts = {k: [] for k in ARRAY_FIELDS}
        id_offset, example_offset, puzzle_offset = 0, 0, 0
        for _, meta, sets in loaded:
            s = sets[name]
            parts["inputs"].append(np.asarray(s.inputs))
            parts["labels"].append(np.asarray(s.labels))
            parts["puzzle_identifiers"].append(s.puzzle_identifiers.astype(np.int64) + id_offset)
            skip_first = 0 if not parts["puzzle_indices"] else 1  # each later path continues the index arrays
            parts["puzzle_indices"].append(s.puzzle_indices[skip_first:].astype(np.int64) + example_offset)
            parts["group_indices"].append(s.group_indices[skip_first:].astype(np.int64) + puzzle_offset)
            id_offset += meta.num_puzzle_identifiers
            example_offset += s.num_examples
            puzzle_offset += s.puzzle_identifiers.shape[0]
        merged_sets[name] = PuzzleSet(**{k: np.concatenate(v) for k, v in parts.items()})
    meta = PuzzleDatasetMetadata(
        pad_id=first.pad_id,
        ignore_label_id=first.ignore_label_id,
        blank_identifier_id=first.blank_identifier_id,
        vocab_size=first.vocab_size,
        seq_len=first.seq_len,
        num_puzzle_identifiers=sum(m.num_puzzle_identifiers for _, m, _ in loaded),
        total_groups=sum(m.total_groups for _, m, _ in loaded),
        mean_puzzle_examples=float(
            np.mean([np.diff(s.puzzle_indices).mean() for s in merged_sets.values() if s.puzzle_identifiers.size])
        ),
        total_puzzles=sum(s.puzzle_identifiers.shape[0] for s in merged_sets.values()),
        sets=list(first.sets),
        kind=first.kind,
        token_names=first.token_names,
    )
    return meta, merged_sets
