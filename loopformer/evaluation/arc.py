"""The ARC metric of HRM/TRM: map every augmented prediction back, vote, and score pass@k per task; and the
Kaggle ARC Prize ``submission.json`` from the same votes.

For each test input of each original puzzle, every augmented version's prediction is decoded from the canvas,
mapped back through the inverse augmentation, and counted as a vote for that grid; candidates rank by vote
count, ties broken by the mean halting confidence (sigmoid of q_halt, computed as TRM's evaluator computes it: torch,
float64, summed in row order, so that equal inputs rank identically). A test input is solved at k when its true
output is among the top k candidates; a task scores the fraction of its test inputs solved, and pass@k is the mean
task score. The submission's two attempts for a test input are its top two candidates that are grids (a prediction
that decodes to no cell is none; the first repeated when there is only one; ``[[0]]`` when there is none).

Several ARC builds in ``data.data_paths`` are several test sets: each keeps its identifiers (offset in the
merged identifiers as the loader merges them) and is scored and submitted on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from loopformer.data.builders.arc import ARCSet, decode_grid, grid_hash, inverse_augmentation

Prediction = tuple[int, np.ndarray, np.ndarray, float]  # (puzzle identifier, input tokens, predicted tokens, q_halt)
DEFAULT_KS = (1, 2, 5, 10, 100, 1000)  # what TRM and VirtualRecursiveNetwork report
EMPTY_ATTEMPT = [[0]]


@dataclass
class Candidate:
    grid: np.ndarray
    votes: int
    confidence: float  # summed sigmoid(q_halt) of its votes


Ranked = dict[tuple[str, str], list[Candidate]]  # (task, test input hash) -> candidates, best first


def rank_candidates(predictions: Iterable[Prediction], identifiers: list[str], test_puzzles: dict) -> Ranked:
    tally: dict[tuple[str, str], dict[str, Candidate]] = {}
    predictions = list(predictions)
    q_halt = torch.tensor([p[3] for p in predictions], dtype=torch.float64)
    confidences = torch.sigmoid(q_halt).tolist()  # TRM: q_halt_logits.to(torch.float64).sigmoid()
    for (pid, inputs, preds, _), confidence in zip(predictions, confidences, strict=True):
        name, to_original = inverse_augmentation(identifiers[int(pid)])
        if name not in test_puzzles:
            continue
        grid = to_original(decode_grid(preds))
        key = (name, grid_hash(to_original(decode_grid(inputs))))
        candidate = tally.setdefault(key, {}).setdefault(grid_hash(grid), Candidate(grid, 0, 0.0))
        candidate.votes += 1
        candidate.confidence += confidence
    return {
        key: sorted(cands.values(), key=lambda c: (c.votes, c.confidence / c.votes), reverse=True)
        for key, cands in tally.items()
    }


def _test_pairs(puzzle: dict) -> list[tuple[str, Optional[str]]]:
    return [
        (
            grid_hash(np.array(ex["input"], dtype=np.uint8)),
            grid_hash(np.array(ex["output"], dtype=np.uint8)) if "output" in ex else None,
        )
        for ex in puzzle["test"]
    ]


def task_scores(ranked: Ranked, test_puzzles: dict, ks: tuple[int, ...]) -> dict[int, list[float]]:
    """Per k, each task's fraction of test inputs whose output is among the top k candidates."""
    scores: dict[int, list[float]] = {k: [] for k in ks}
    for name, puzzle in test_puzzles.items():
        pairs = _test_pairs(puzzle)
        for k in ks:
            solved = sum(
                any(grid_hash(c.grid) == output for c in ranked.get((name, inp), [])[:k]) for inp, output in pairs
            )
            scores[k].append(solved / max(1, len(pairs)))
    return scores


def arc_pass_at_k(
    predictions: Iterable[Prediction], identifiers: list[str], test_puzzles: dict, ks: tuple[int, ...] = (1, 2)
) -> dict[int, float]:
    scores = task_scores(rank_candidates(predictions, identifiers, test_puzzles), test_puzzles, ks)
    return {k: float(np.mean(v)) if v else 0.0 for k, v in scores.items()}


def submission(ranked: Ranked, test_puzzles: dict) -> dict[str, list[dict[str, list[list[int]]]]]:
    """The Kaggle ARC Prize format: for every task, per test input in order, ``{"attempt_1", "attempt_2"}``."""
    out = {}
    for name, puzzle in test_puzzles.items():
        attempts = []
        for inp, _ in _test_pairs(puzzle):
            grids = [c.grid.tolist() for c in ranked.get((name, inp), []) if c.grid.size][:2] or [EMPTY_ATTEMPT]
            attempts.append({"attempt_1": grids[0], "attempt_2": grids[1] if len(grids) > 1 else grids[0]})
        out[name] = attempts
    return out


class ARCCollector:
    """Collects (identifier, input, prediction, q_halt) of real rows during an evaluation; scores every set."""

    def __init__(self, sets: list[ARCSet], ks: tuple[int, ...] = DEFAULT_KS) -> None:
        self.sets, self.ks = sets, tuple(ks)
        self.rows: list[Prediction] = []

    def add(self, puzzle_ids: np.ndarray, inputs: np.ndarray, preds: np.ndarray, q_halt: np.ndarray) -> None:
        for pid, x, y, q in zip(puzzle_ids, inputs.astype(np.uint8), preds.astype(np.uint8), q_halt, strict=True):
            self.rows.append((int(pid), x, y, float(q)))

    def compute(self, gathered: Optional[list[list[Prediction]]] = None) -> tuple[dict[str, float], dict[str, dict]]:
        """(metrics ``arc/pass@k``, and ``arc/<set>/pass@k`` per set when there are several; submissions by set)."""
        rows = [r for part in gathered for r in part] if gathered is not None else self.rows
        self.rows = []
        metrics: dict[str, float] = {}
        submissions: dict[str, dict] = {}
        every_task: dict[int, list[float]] = {k: [] for k in self.ks}
        for s in self.sets:
            end = s.offset + len(s.identifiers)
            mine = [(pid - s.offset, x, y, q) for pid, x, y, q in rows if s.offset <= pid < end]
            ranked = rank_candidates(mine, s.identifiers, s.test_puzzles)
            scores = task_scores(ranked, s.test_puzzles, self.ks)
            for k, values in scores.items():
                every_task[k] += values
                if len(self.sets) > 1:
                    metrics[f"arc/{s.name}/pass@{k}"] = float(np.mean(values)) if values else 0.0
            submissions[s.name] = submission(ranked, s.test_puzzles)
        metrics.update({f"arc/pass@{k}": float(np.mean(v)) if v else 0.0 for k, v in every_task.items()})
        return metrics, submissions
