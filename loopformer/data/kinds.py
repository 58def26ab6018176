"""Dataset kinds: what a dataset's tokens stand for, declared by the builder that wrote it.

Every builder writes its ``kind`` and ``token_names`` into ``dataset.json`` (beside the HRM/TRM fields, which
their loaders ignore). ``data show``, the prediction pictures and ``predictions.npz`` read them here. A dataset
written before the fields existed is read by inferring its kind once from its sizes, with a notice.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

from loopformer.data.common import CHARSET as MAZE_CHARSET
from loopformer.data.common import MAZE_TOKEN_NAMES
from loopformer.data.format import PuzzleDatasetMetadata

KINDS = ("sudoku", "maze", "arc", "grid", "sequence")
"""sudoku: blank and digits on an n x n board; maze: walls, open cells, start, goal, path; arc: ARC's ten colours;
grid: any other square board of tokens; sequence: tokens that form no square."""
ARC_VOCAB_SIZE, ARC_SEQ_LEN = 12, 900  # <pad>, <eos>, colours 0-9 on a 30 x 30 canvas

log = logging.getLogger("loopformer.data")
_inferred: set[str] = set()  # datasets already announced as inferred


def sudoku_token_names(side: int) -> list[str]:
    """<pad>, the blank '.', then digit d as token d + 1 (10 and above as letters)."""
    return ["<pad>", "."] + [str(d) if d < 10 else chr(ord("A") + d - 10) for d in range(1, side + 1)]


def arc_token_names() -> list[str]:
    return ["<pad>", "<eos>"] + [str(c) for c in range(10)]


def inferred_kind(meta: PuzzleDatasetMetadata) -> str:
    """The kind that the sizes of a dataset without a declared kind suggest."""
    side = math.isqrt(meta.seq_len)
    if side * side != meta.seq_len:
        return "sequence"
    if meta.vocab_size == side + 2:
        return "sudoku"
    if meta.vocab_size == len(MAZE_CHARSET) + 1:
        return "maze"
    if (meta.vocab_size, meta.seq_len) == (ARC_VOCAB_SIZE, ARC_SEQ_LEN):
        return "arc"
    return "grid"


def dataset_kind(meta: PuzzleDatasetMetadata, where: Optional[str | Path] = None) -> str:
    """The dataset's declared kind; for a dataset written before kinds were declared, the inferred one (a notice
    once per dataset)."""
    if meta.kind is not None:
        return meta.kind
    kind = inferred_kind(meta)
    key = str(where)
    if where is not None and key not in _inferred:
        _inferred.add(key)
        log.warning(
            "loopformer: notice: %s declares no kind in its dataset.json (written before loopformer recorded it); "
            "read as %s from its sizes (rebuild it to record the kind).",
            where,
            kind,
        )
    return kind


def token_names(meta: PuzzleDatasetMetadata) -> list[str]:
    """What each token id stands for (index = id): the declared names, else those of the (inferred) kind."""
    if meta.token_names is not None:
        return list(meta.token_names)[: meta.vocab_size]
    kind = dataset_kind(meta)
    names = {
        "sudoku": lambda: sudoku_token_names(meta.vocab_size - 2),
        "maze": lambda: list(MAZE_TOKEN_NAMES),
        "arc": arc_token_names,
    }.get(kind, lambda: ["<pad>"] + [str(t) for t in range(1, meta.vocab_size)])()
    return names[: meta.vocab_size]
