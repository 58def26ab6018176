"""`loopformer sweep report SOURCE`: a finished (or running) sweep turned into the answer at equal compute.

Writes ``report.md`` (runs ranked, the Pareto front read as budgets, the same against training compute, parameter
importance), ``report.json`` (the same numbers), ``pareto.png``, ``learning_curves.png``, ``pareto_training.png``,
``importance.png`` and ``parallel_coordinates.png`` to ``--out`` (default: the
offline sweep's own directory, or ``runs/sweeps/<SWEEP_ID>`` for a W&B sweep), and prints a short summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

from loopformer.checkpoint import atomic
from loopformer.sweep.report.analysis import Analysis, analyse, metric_per_gflop
from loopformer.sweep.report.plots import (
    TRAINING_COMPUTE,
    plot_importance,
    plot_learning_curves,
    plot_parallel_coordinates,
    plot_pareto,
    short_name,
    target_title,
)
from loopformer.sweep.report.records import ReportError, ScoredRun, counted
from loopformer.sweep.report.sources import open_source

COMPUTE_AXIS = "log10 FLOPs/puzzle"


def _number(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}g}"


def _gflops(run: ScoredRun) -> str:
    return "-" if run.flops_per_puzzle is None else f"{run.flops_per_puzzle / 1e9:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    escape = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]


def write_markdown(analysis: Analysis, path: Path) -> None:
    sweep, metric = analysis.sweep, analysis.sweep.metric
    params = sweep.parameters
    lines = [f"# Sweep report: {sweep.source}", "", _census(analysis), ""]
    lines += [f"## Runs ranked by best `{metric}` ({sweep.goal})", ""]
    header = ["#", "run", "state", "schedule", *[short_name(p) for p in params]]
    header += ["reports", "ACT steps", "blocks/puzzle", "GFLOPs/puzzle", f"best {metric}"]
    rows = []
    for i, r in enumerate(analysis.ranked + analysis.unscored, 1):
        rank = str(i) if r.best is not None else "-"
        values = [_number(r.record.params.get(p)) for p in params]
        rows.append([rank, r.name, r.state, r.schedule, *values, str(len(r.record.reports)), _number(r.steps, 3),
                     _number(r.blocks_per_puzzle, 4), _gflops(r), _number(r.best)])  # fmt: skip
    lines += _table(header, rows) + [""]

    lines += [f"## Best schedule at each compute budget (Pareto front of `{metric}` against FLOPs per puzzle)", ""]
    if analysis.front:
        lines += ["![Pareto front](pareto.png)", ""]
        front_rows = []
        for i, r in enumerate(analysis.front):
            upper = analysis.front[i + 1].flops_per_puzzle / 1e9 if i + 1 < len(analysis.front) else None
            budget = (
                f"{r.flops_per_puzzle / 1e9:.4g} to {upper:.4g}" if upper else f"{r.flops_per_puzzle / 1e9:.4g} and up"
            )
            front_rows.append([budget, r.name, r.schedule, _number(r.steps, 3), _number(r.best)])
        lines += _table(["GFLOPs/puzzle budget", "run", "schedule", "ACT steps", f"best {metric}"], front_rows)
        lines += ["", "A run on the front is the best there is at its compute: no other run reaches a higher "
                  f"`{metric}` with as few or fewer FLOPs per puzzle."]  # fmt: skip
    else:
        lines += ["No run reported its FLOPs per puzzle (runs older than compute accounting), so there is no front."]
    lines += [""]

    lines += _training_compute_section(analysis)
    lines += ["## Parameter importance", ""]
    if analysis.importance:
        lines += ["![Parameter importance](importance.png)", ""]
        targets = list(analysis.importance)
        header = ["parameter"] + [
            f"{h} ({target_title(t, metric)})" for t in targets for h in ("importance", "correlation")
        ]
        by_param: dict[str, dict[str, object]] = {}
        for t in targets:
            for e in analysis.importance[t]:
                by_param.setdefault(e.parameter, {})[t] = e
        rows = []
        for p, effects in by_param.items():
            cells = [p]
            for t in targets:
                e = effects.get(t)
                cells += ["-", "-"] if e is None else [f"{e.importance:.3f}", _number(e.correlation, 3)]
            rows.append(cells)
        lines += _table(header, rows)
        lines += ["", "Importance: permutation importance over a ridge regression of the target on the parameters "
                  "(sums to 1); correlation: Pearson's r with the target (blank for categorical parameters). "
                  f"`{metric} per GFLOP` is the best `{metric}` divided by GFLOPs per puzzle."]  # fmt: skip
    if analysis.importance_note:
        lines += [""] * bool(analysis.importance) + [f"Not computed {analysis.importance_note}."]
    lines += ["", "## Parallel coordinates", "", "![Parallel coordinates](parallel_coordinates.png)", ""]
    atomic.write_text(path, "\n".join(lines))


def _census(analysis: Analysis) -> str:
    scored = analysis.ranked + analysis.unscored
    counts = {s: sum(r.state == s for r in scored) for s in ("finished", "stopped", "crashed")}
    text = (
        f"Metric `{analysis.sweep.metric}` ({analysis.sweep.goal}). {counted(len(scored) + len(analysis.running), 'run')}: "
        f"{counts['finished']} finished, {counts['stopped']} stopped early, {counts['crashed']} crashed"
    )
    if analysis.running:
        text += f", {len(analysis.running)} still running (not in this report yet)"
    text += "."
    if analysis.unscored:
        n = len(analysis.unscored)
        text += f" {counted(n, 'run')} never reported the metric (listed unranked)."
    if analysis.duplicates:
        text += f" {analysis.duplicates} duplicate record(s) of a run dropped."
    return text


def write_json(analysis: Analysis, path: Path) -> None:
    def run(r: ScoredRun) -> dict:
        return {
            "run": r.name,
            "state": r.state,
            "params": r.record.params,
            "schedule": r.schedule,
            "reports": len(r.record.reports),
            "steps": r.steps,
            "blocks_per_puzzle": r.blocks_per_puzzle,
            "flops_per_puzzle": r.flops_per_puzzle,
            "best": r.best,
            "metric_per_gflop": metric_per_gflop(r) if r.best is not None else None,
        }

    out = {
        "source": analysis.sweep.source,
        "metric": analysis.sweep.metric,
        "goal": analysis.sweep.goal,
        "ranked": [run(r) for r in analysis.ranked],
        "unscored": [run(r) for r in analysis.unscored],
        "running": [r.name for r in analysis.running],
        "pareto_front": [run(r) for r in analysis.front],
        "training_compute": {
            "equal_budget": analysis.training.equal_budget,
            "at_equal_budget": [{"run": r.name, "best": v} for r, v in analysis.training.at_equal],
            "best_at_budget": [
                {"train_flops": b, "run": r.name, "schedule": r.schedule, "best": v, "runs_compared": n}
                for b, r, v, n in analysis.training.best_at_budget
            ],
            "pareto_front": [
                {"run": r.name, "train_flops_to_best": spent, "best": v} for r, spent, v in analysis.training.front
            ],
        },
        "importance": {
            t: [{"parameter": e.parameter, "importance": e.importance, "correlation": e.correlation} for e in effects]
            for t, effects in analysis.importance.items()
        },
    }
    atomic.write_text(path, json.dumps(out, indent=1))


def _tflops(flops: Optional[float]) -> str:
    return "-" if flops is None else f"{flops:.4g}"


def _training_compute_section(analysis: Analysis) -> list[str]:
    views, metric = analysis.training, analysis.sweep.metric
    lines = [f"## At equal training compute (`{metric}` against training FLOPs)", ""]
    if not views.best_at_budget:
        return lines + ["No run reported its training compute (`compute/train_flops`: runs older than it), so "
                        "there is nothing to compare at equal training compute.", ""]  # fmt: skip
    lines += ["![learning curves against training compute](learning_curves.png)", ""]
    lines += [f"Ranked by the best `{metric}` within {_tflops(views.equal_budget)} training FLOPs, the compute "
              "every ranked run reached (a run stopped early takes part only if it got that far):", ""]  # fmt: skip
    rows = [[str(i), r.name, r.state, r.schedule, _number(v)] for i, (r, v) in enumerate(views.at_equal, 1)]
    lines += _table(["#", "run", "state", "schedule", f"best {metric} up to it"], rows) + [""]
    lines += ["The best schedule at each training budget (its best report within the budget):", ""]
    rows = [[_tflops(b), r.name, r.schedule, _number(v), str(n)] for b, r, v, n in views.best_at_budget]
    lines += _table(["training FLOPs", "run", "schedule", f"best {metric}", "runs compared"], rows) + [""]
    lines += ["![Pareto front against training compute](pareto_training.png)", ""]
    rows = [[_tflops(spent), r.name, r.schedule, _number(v)] for r, spent, v in views.front]
    lines += [f"Pareto front: no other run reached a better `{metric}` with as little training compute.", ""]
    return lines + _table(["training FLOPs to its best", "run", "schedule", f"best {metric}"], rows) + [""]


def write_pictures(analysis: Analysis, out: Path) -> list[Path]:
    metric = analysis.sweep.metric
    written = []
    if analysis.front:
        plot_pareto(analysis.ranked, analysis.front, metric, out / "pareto.png")
        written.append(out / "pareto.png")
    views = analysis.training
    if views.best_at_budget:
        states = {r.name: r.state for r in analysis.ranked}
        plot_learning_curves(views.curves, states, metric, out / "learning_curves.png", views.equal_budget)
        plot_pareto(analysis.ranked, [r for r, _, _ in views.front], metric, out / "pareto_training.png",
                    x=lambda r: views.to_best.get(r.name), x_label=TRAINING_COMPUTE)  # fmt: skip
        written += [out / "learning_curves.png", out / "pareto_training.png"]
    if analysis.importance:
        plot_importance(analysis.importance, out / "importance.png", metric)
        written.append(out / "importance.png")
    lines = []
    for r in analysis.ranked:
        line = {p: r.record.params.get(p) for p in analysis.sweep.parameters}
        line[COMPUTE_AXIS] = math.log10(r.flops_per_puzzle) if r.flops_per_puzzle else None
        lines.append({**line, metric: r.best, "state": r.state})
    axes = [p for p in analysis.sweep.parameters if any(line.get(p) is not None for line in lines)]
    if any(line[COMPUTE_AXIS] is not None for line in lines):
        axes.append(COMPUTE_AXIS)
    if lines:
        plot_parallel_coordinates(lines, axes + [metric], metric, out / "parallel_coordinates.png")
        written.append(out / "parallel_coordinates.png")
    return written


def summary(analysis: Analysis, out: Path) -> str:
    metric = analysis.sweep.metric
    lines = [_census(analysis)]
    if analysis.ranked:
        best = analysis.ranked[0]
        lines.append(
            f"best: {best.name} {metric}={_number(best.best)} at {_gflops(best)} GFLOPs/puzzle: {best.schedule}"
        )
    if analysis.front:
        lines.append(f"Pareto front ({counted(len(analysis.front), 'run')}, cheapest first):")
        lines += [
            f"  {_gflops(r):>9} GFLOPs/puzzle  {metric}={_number(r.best)}  {r.name}: {r.schedule}"
            for r in analysis.front
        ]
    views = analysis.training
    if views.at_equal:
        best, value = views.at_equal[0]
        lines.append(
            f"at equal training compute ({_tflops(views.equal_budget)} FLOPs): best {best.name} {metric}="
            f"{_number(value)}: {best.schedule}"
        )
    for target, effects in analysis.importance.items():
        top = ", ".join(f"{short_name(e.parameter)} {e.importance:.2f}" for e in effects[:3])
        lines.append(f"most important for {target}: {top}")
    lines.append(f"report: {out / 'report.md'}")
    return "\n".join(lines)


def make_report(source: str, out: Optional[str] = None, wandb_api=None) -> tuple[Analysis, Path]:  # noqa: ANN001
    sweep = open_source(source, wandb_api)
    if not sweep.runs:
        raise ReportError(f"{source}: the sweep has no runs yet; nothing to report.")
    analysis = analyse(sweep)
    if not analysis.ranked:
        states = ", ".join(f"{r.name} {r.state}" for r in analysis.unscored + analysis.running)
        raise ReportError(f"{source}: no run has reported {sweep.metric} yet ({states}); nothing to rank.")
    out_dir = Path(out) if out else sweep.default_out
    out_dir.mkdir(parents=True, exist_ok=True)
    write_pictures(analysis, out_dir)
    write_markdown(analysis, out_dir / "report.md")
    write_json(analysis, out_dir / "report.json")
    return analysis, out_dir


def main(argv: list[str], wandb_api=None) -> int:  # noqa: ANN001 (a wandb.Api factory, replaced in tests)
    p = argparse.ArgumentParser(
        prog="loopformer sweep report",
        description="Rank a sweep's runs, find the best schedule at each compute budget (Pareto front of the metric "
        "against FLOPs per puzzle) and each parameter's importance.",
    )
    p.add_argument("source", help="an offline sweep's directory, or a W&B sweep ENTITY/PROJECT/SWEEP_ID")
    p.add_argument("--out", default=None, help="report directory (default: the offline sweep's directory, or "
                   "runs/sweeps/SWEEP_ID for a W&B sweep)")  # fmt: skip
    args = p.parse_args(argv)
    try:
        analysis, out_dir = make_report(args.source, args.out, wandb_api)
    except ReportError as e:
        print(f"loopformer sweep report: error: {e}", file=sys.stderr)
        return 2
    print(summary(analysis, out_dir))
    return 0
