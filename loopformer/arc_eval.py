"""The ARC metric of HRM/TRM: map every augmented prediction back, vote, and score pass@k per task.

For each test input of each original puzzle, every augmented version's prediction is decoded from the canvas,
mapped back through the inverse augmentation, and counted as a vote for that grid; candidates rank by vote
count, ties broken by the mean halting confidence (sigmoid of q_halt). A test input is solved at k when its
true output is among the top k candidates; a task scores the fraction of its test inputs solved, and pass@k
is the mean task score.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import numpy as np

from loopformer.data.builders.arc import decode_grid, grid_hash, inverse_augmentation

Prediction = tuple[int, np.ndarray, np.ndarray, float]  # (puzzle identifier, input tokens, predicted tokens, q_halt)


def arc_pass_at_k(
    predictions: Iterable[Prediction], identifiers: list[str], test_puzzles: dict, ks: tuple[int, ...] = (1, 2)
) -> dict[int, float]:
    targets: dict[str, list[tuple[str, str]]] = {
        name: [
            (grid_hash(np.array(ex["input"], dtype=np.uint8)), grid_hash(np.array(ex["output"], dtype=np.uint8)))
            for ex in puzzle["test"]
        ]
        for name, puzzle in test_puzzles.items()
    }
    votes: dict[tuple[str, str], dict[str, list[float]]] = {}
    for pid, inputs, preds, q_halt in predictions:
        name, to_original = inverse_augmentation(identifiers[int(pid)])
        if name not in targets:
            continue
        key = (name, grid_hash(to_original(decode_grid(inputs))))
        candidate = grid_hash(to_original(decode_grid(preds)))
        tally = votes.setdefault(key, {}).setdefault(candidate, [0, 0.0])
        tally[0] += 1
        tally[1] += 1.0 / (1.0 + np.exp(-float(q_halt)))
    scores = {k: 0.0 for k in ks}
    for name, tests in targets.items():
        for k in ks:
            solved = 0
            for input_hash, output_hash in tests:
                ranked = sorted(
                    votes.get((name, input_hash), {}).items(),
                    key=lambda kv: (kv[1][0], kv[1][1] / kv[1][0]),
                    reverse=True,
                )
                solved += any(h == output_hash for h, _ in ranked[:k])
            scores[k] += solved / len(tests)
    return {k: v / max(1, len(targets)) for k, v in scores.items()}


class ARCCollector:
    """Collects (identifier, input, prediction, q_halt) of real rows during an evaluation."""

    def __init__(self, identifiers: list[str], test_puzzles: dict) -> None:
        self.identifiers, self.test_puzzles = identifiers, test_puzzles
        self.rows: list[Prediction] = []

    def add(self, puzzle_ids: np.ndarray, inputs: np.ndarray, preds: np.ndarray, q_halt: np.ndarray) -> None:
        for pid, x, y, q in zip(puzzle_ids, inputs.astype(np.uint8), preds.astype(np.uint8), q_halt, strict=True):
            self.rows.append((int(pid), x, y, float(q)))

    def compute(self, gathered: Optional[list[list[Prediction]]] = None) -> dict[str, float]:
        rows = [r for part in gathered for r in part] if gathered is not None else self.rows
        scores = arc_pass_at_k(rows, self.identifiers, self.test_puzzles)
        self.rows = []
        return {f"arc/pass@{k}": v for k, v in scores.items()}
