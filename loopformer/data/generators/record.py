"""What a generated dataset was generated with, recorded beside its splits (``generator.json``), so that a run whose
``data.generate`` asks for other data than its directory holds stops instead of training on the old data under
the new settings' name."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loopformer.checkpoint import atomic
from loopformer.data.format import DatasetError, PuzzleDatasetMetadata
from loopformer.files import load_json

RECORD_NAME = "generator.json"


def write_record(out_dir: str | Path, generator: Any) -> None:  # noqa: ANN401 (a data.generate dataclass)
    record = {"kind": generator.kind, "settings": asdict(generator)}
    atomic.write_text(Path(out_dir) / RECORD_NAME, json.dumps(record, indent=1) + "\n")


def disagreement(generator: Any, path: Path) -> list[str]:  # noqa: ANN401 (a data.generate dataclass)
    """How the dataset at ``path`` differs from what ``generator`` builds, one item per difference, its value there
    (``n=4``; empty: it is what the generator builds). Without a record (a dataset built otherwise, or generated
    before the record was written) the kind, the sequence length and the splits' sizes are compared."""
    record_path = path / RECORD_NAME
    if record_path.is_file():
        record = load_json(record_path, DatasetError, "the settings its dataset was generated with")
        if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
            raise DatasetError(f"{record_path}: expected a JSON object with 'kind' and 'settings'.")
        if record.get("kind") != generator.kind:
            return [f"kind {record.get('kind')}"]
        there = record["settings"]
        return [f"{key}={there.get(key)!r}" for key, value in asdict(generator).items() if there.get(key) != value]
    train = PuzzleDatasetMetadata.load(path / "train" / "dataset.json")
    test = PuzzleDatasetMetadata.load(path / "test" / "dataset.json")
    found = {
        "kind": train.kind,
        "sequence length": train.seq_len,
        "training puzzles": train.total_puzzles,
        "test puzzles": test.total_puzzles,
    }
    return [  # a value older files do not declare (None) is not compared
        f"{key} {found[key]}"
        for key, value in generator.layout().items()
        if found[key] is not None and found[key] != value
    ]
