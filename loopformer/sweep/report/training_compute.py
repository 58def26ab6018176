"""The sweep report against training compute: what each run's reports cost to train (``compute/train_flops``, logged
with every evaluation; for older runs ``_step x compute/train_flops_per_step``), read as learning curves, a ranking
at equal training compute, the best schedule at each training budget, and a Pareto front of the best metric against
the training FLOPs it took. An equal-compute sweep (``model.budget``) evaluates every run at the same budgets; an
equal-steps sweep gives deeper schedules more compute, which these views take back out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from loopformer.sweep.report.records import RunRecord, ScoredRun

# the names evaluation/compute_report.py logs (not imported from there: the report runs without torch)
TRAIN_FLOPS = "compute/train_flops"
TRAIN_FLOPS_PER_STEP = "compute/train_flops_per_step"
SAME_BUDGET = 1.02  # reports within 2% of training compute count as the same budget (steps are whole)
MAX_BUDGETS = 10


def train_flops(record: RunRecord, report: dict) -> Optional[float]:
    spent = report.get(TRAIN_FLOPS)
    if isinstance(spent, (int, float)):
        return float(spent)
    per_step, step = record.run_config.get(TRAIN_FLOPS_PER_STEP), report.get("_step")
    if isinstance(per_step, (int, float)) and isinstance(step, (int, float)):
        return float(per_step) * float(step)
    return None


def learning_curve(record: RunRecord, metric: str) -> list[tuple[float, float]]:
    """(training FLOPs, metric) of every report that has both, in training order."""
    points = []
    for report in record.reports:
        spent, value = train_flops(record, report), report.get(metric)
        if spent is not None and isinstance(value, (int, float)):
            points.append((spent, float(value)))
    return sorted(points)


@dataclass
class TrainingComputeViews:
    curves: dict[str, list[tuple[float, float]]]  # run name -> its learning curve
    equal_budget: Optional[float]  # the training compute every ranked run reached (the smallest final budget)
    at_equal: list[tuple[ScoredRun, float]]  # runs that reached it, best first, with their best metric up to it
    best_at_budget: list[tuple[float, ScoredRun, float, int]]  # budget, best run up to it, its value, runs compared
    front: list[tuple[ScoredRun, float, float]]  # (run, training FLOPs to its best, best), cheapest first
    to_best: dict[str, float]  # run name -> the training FLOPs behind its best report


def _best_up_to(curve: list[tuple[float, float]], budget: float, sign: float) -> Optional[float]:
    values = [v for spent, v in curve if spent <= budget * SAME_BUDGET]
    return max(values, key=lambda v: sign * v) if values else None


def _budgets(curves: list[list[tuple[float, float]]]) -> list[float]:
    """The distinct training budgets the runs were evaluated at (within 2%), at most ``MAX_BUDGETS`` of them
    spread evenly, the largest included."""
    merged: list[float] = []
    for spent in sorted(spent for curve in curves for spent, _ in curve):
        if not merged or spent > merged[-1] * SAME_BUDGET:
            merged.append(spent)
    if len(merged) <= MAX_BUDGETS:
        return merged
    picks = {round(i * (len(merged) - 1) / (MAX_BUDGETS - 1)) for i in range(MAX_BUDGETS)}
    return [merged[i] for i in sorted(picks)]


def training_compute_views(runs: list[ScoredRun], metric: str, goal: str) -> TrainingComputeViews:
    sign = 1.0 if goal == "maximize" else -1.0
    curves = {r.name: learning_curve(r.record, metric) for r in runs}
    with_curve = [r for r in runs if curves[r.name]]
    finals = [curves[r.name][-1][0] for r in with_curve if r.state == "finished"] or [
        curves[r.name][-1][0] for r in with_curve
    ]
    equal_budget = min(finals) if finals else None
    at_equal = []
    if equal_budget is not None:
        for r in with_curve:
            if curves[r.name][-1][0] * SAME_BUDGET >= equal_budget:
                at_equal.append((r, _best_up_to(curves[r.name], equal_budget, sign)))
        at_equal.sort(key=lambda pair: -sign * pair[1])
    best_at_budget = []
    for budget in _budgets([curves[r.name] for r in with_curve]):
        scored = [(r, v) for r in with_curve if (v := _best_up_to(curves[r.name], budget, sign)) is not None]
        if scored:
            run, value = max(scored, key=lambda pair: sign * pair[1])
            best_at_budget.append((budget, run, value, len(scored)))
    points = []
    for r in with_curve:
        best_value = max((v for _, v in curves[r.name]), key=lambda v: sign * v)
        first = next(spent for spent, v in curves[r.name] if v == best_value)  # the compute it took to get there
        points.append((r, first, best_value))
    front: list[tuple[ScoredRun, float, float]] = []
    for point in sorted(points, key=lambda p: (p[1], -sign * p[2])):
        if not front or sign * point[2] > sign * front[-1][2]:
            front.append(point)
    to_best = {r.name: spent for r, spent, _ in points}
    return TrainingComputeViews(curves, equal_budget, at_equal, best_at_budget, front, to_best)
