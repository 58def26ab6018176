"""The numbers of a sweep report: runs ranked, the Pareto front of metric against FLOPs per puzzle, and each swept
parameter's importance and correlation.

Importance is permutation importance over a small model (numpy only; no random-forest library is a dependency):
a ridge regression of the metric on the parameters, each numeric parameter entering with its value and its
square (standardised), each categorical one one-hot. A parameter's importance is the mean rise of the model's
squared error when that parameter's column is shuffled (``PERMUTATIONS`` shuffles), divided by the sum over all
parameters, so the importances add up to 1. Correlation is Pearson's between the parameter's value (booleans as
0/1) and the metric, blank for categorical values: the two numbers W&B's parameter-importance panel shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from loopformer.sweep.report.records import ScoredRun, SweepRuns, score
from loopformer.sweep.report.training_compute import TrainingComputeViews, training_compute_views

PERMUTATIONS = 50  # shuffles per parameter: the importance's spread across seeds is below 0.01 at 8-30 runs
RIDGE = 1e-2  # keeps the fit defined when runs are fewer than the features; small against standardised features
MIN_RUNS_FOR_IMPORTANCE = 4


@dataclass
class Analysis:
    sweep: SweepRuns
    ranked: list[ScoredRun]  # runs with the metric, best first (running runs excluded)
    unscored: list[ScoredRun]  # finished, stopped or crashed without a single report of the metric
    running: list[ScoredRun]
    duplicates: int  # records dropped because a run of that name came twice
    front: list[ScoredRun]  # the Pareto front, cheapest first
    importance: dict[str, list[ParameterEffect]]  # target name -> one row per varying parameter
    importance_note: str
    training: TrainingComputeViews  # the same runs against training compute


@dataclass
class ParameterEffect:
    parameter: str
    importance: float
    correlation: Optional[float]


def analyse(sweep: SweepRuns) -> Analysis:
    records, duplicates = _drop_duplicate_names(sweep.runs)
    scored = [score(r, sweep.metric, sweep.goal) for r in records]
    running = [s for s in scored if s.state == "running"]
    done = [s for s in scored if s.state != "running"]
    ranked = sorted((s for s in done if s.best is not None), key=lambda s: s.best, reverse=sweep.goal == "maximize")
    unscored = [s for s in done if s.best is None]
    front = pareto_front(ranked, sweep.goal)
    importance, note = parameter_importance(ranked, sweep.parameters)
    training = training_compute_views(ranked, sweep.metric, sweep.goal)
    return Analysis(sweep, ranked, unscored, running, duplicates, front, importance, note, training)


def _drop_duplicate_names(records: list) -> tuple[list, int]:
    """A run listed twice (W&B pagination, a resumed run) counts once: the record with the most reports stays."""
    keep: dict[str, Any] = {}
    for r in records:
        if r.name not in keep or len(r.reports) > len(keep[r.name].reports):
            keep[r.name] = r
    return list(keep.values()), len(records) - len(keep)


def pareto_front(runs: list[ScoredRun], goal: str) -> list[ScoredRun]:
    """The runs no other run beats at equal or lower FLOPs per puzzle, cheapest first: read as budgets, the run
    at FLOPs F is the best schedule for every budget from F up to the next run's FLOPs."""
    sign = 1.0 if goal == "maximize" else -1.0
    costed = sorted(
        (r for r in runs if r.flops_per_puzzle is not None), key=lambda r: (r.flops_per_puzzle, -sign * r.best)
    )
    front: list[ScoredRun] = []
    for r in costed:
        if not front or sign * r.best > sign * front[-1].best:
            front.append(r)
    return front


def metric_per_gflop(run: ScoredRun) -> Optional[float]:
    if run.flops_per_puzzle is None or run.flops_per_puzzle <= 0:
        return None
    return run.best / (run.flops_per_puzzle / 1e9)


def parameter_importance(runs: list[ScoredRun], parameters: list[str]) -> tuple[dict[str, list[ParameterEffect]], str]:
    targets = {
        "metric": [(r, r.best) for r in runs],
        "metric per GFLOP": [(r, v) for r in runs if (v := metric_per_gflop(r)) is not None],
    }
    out: dict[str, list[ParameterEffect]] = {}
    notes = []
    for target, pairs in targets.items():
        rows = [r.record.params for r, _ in pairs]
        varying = [p for p in parameters if len({_hashable(row.get(p)) for row in rows}) > 1]
        if len(pairs) < MIN_RUNS_FOR_IMPORTANCE or not varying:
            notes.append(
                f"for the {target}, {len(pairs)} runs with a value and {len(varying)} parameters that vary (it needs "
                f"at least {MIN_RUNS_FOR_IMPORTANCE} runs and one varying parameter)"
            )
            continue
        y = np.array([v for _, v in pairs], dtype=np.float64)
        out[target] = permutation_importance(rows, varying, y)
    return out, "; ".join(notes)


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (list, dict)) else value


def _is_numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (bool, int, float)) for v in values)


def _columns(rows: list[dict], parameter: str) -> np.ndarray:
    """The model's features for one parameter: (value, value^2) standardised, or one-hot (missing: its own
    category)."""
    values = [row.get(parameter) for row in rows]
    if _is_numeric(values):
        x = np.array(values, dtype=np.float64)
        cols = [x, x**2] if len(set(values)) > 2 else [x]
    else:
        labels = [repr(v) for v in values]
        cols = [np.array([label == c for label in labels], dtype=np.float64) for c in sorted(set(labels))]
    out = np.stack(cols, axis=1)
    std = out.std(axis=0)
    return (out - out.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _fit(blocks: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge regression of y on the features (centred), closed form."""
    x = np.concatenate(blocks, axis=1)
    y_mean = y.mean()
    weights = np.linalg.solve(x.T @ x + RIDGE * len(y) * np.eye(x.shape[1]), x.T @ (y - y_mean))
    return weights, float(y_mean)


def permutation_importance(rows: list[dict], parameters: list[str], y: np.ndarray) -> list[ParameterEffect]:
    blocks = [_columns(rows, p) for p in parameters]
    weights, y_mean = _fit(blocks, y)

    def error(bs: list[np.ndarray]) -> float:
        return float(np.mean((np.concatenate(bs, axis=1) @ weights + y_mean - y) ** 2))

    base = error(blocks)
    rng = np.random.default_rng(0)
    rises = []
    for i in range(len(parameters)):
        total = 0.0
        for _ in range(PERMUTATIONS):
            shuffled = list(blocks)
            shuffled[i] = blocks[i][rng.permutation(len(y))]
            total += error(shuffled) - base
        rises.append(max(total / PERMUTATIONS, 0.0))
    norm = sum(rises)
    effects = [
        ParameterEffect(p, rise / norm if norm > 0 else 0.0, _correlation([row.get(p) for row in rows], y))
        for p, rise in zip(parameters, rises, strict=True)
    ]
    return sorted(effects, key=lambda e: e.importance, reverse=True)


def _correlation(values: list[Any], y: np.ndarray) -> Optional[float]:
    if not _is_numeric(values):
        return None
    x = np.array(values, dtype=np.float64)
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
