"""What a sweep report is made of: one record per run, the same whichever source (offline directory, W&B) it
came from, and the few facts derived from it (best metric, compute behind it, schedule in words)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


class ReportError(ValueError):
    """A sweep report's source that cannot be read or holds nothing to report (the message says which and why)."""


STATES = ("finished", "stopped", "crashed", "running")
"""finished; stopped (by the sweep's early termination, or a signal); crashed (failed, exit != 0); running."""


@dataclass
class RunRecord:
    name: str
    state: str
    params: dict[str, Any]
    """The swept parameters' values (``model.arch.stages.0.repeat``: 3); a missing one is absent."""
    reports: list[dict]
    """The run's evaluation reports that carry the sweep's metric, in order."""
    run_config: dict = field(default_factory=dict)
    """The resolved ``model.arch`` (nested, as in the run config) and the ``compute/*`` fields, when recorded."""


@dataclass
class SweepRuns:
    source: str
    metric: str
    goal: str  # maximize | minimize
    parameters: list[str]
    runs: list[RunRecord]
    default_out: Path


@dataclass
class ScoredRun:
    """A run with the numbers the report ranks and plots: its best report and the compute behind it."""

    record: RunRecord
    best: Optional[float]
    steps: Optional[float]
    blocks_per_puzzle: Optional[float]
    flops_per_puzzle: Optional[float]
    schedule: str

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state(self) -> str:
        return self.record.state


def score(record: RunRecord, metric: str, goal: str) -> ScoredRun:
    """The best report by the sweep's goal, and the steps, blocks and FLOPs per puzzle of that same report
    (FLOPs from the run's ``compute/flops_per_act_step`` when the report predates ``flops_per_puzzle``)."""
    prefix = metric.split("/", 1)[0]
    best_report = best_of(record.reports, metric, goal)
    steps = best_report.get(f"{prefix}/steps")
    blocks = best_report.get(f"{prefix}/blocks_per_puzzle")
    flops = best_report.get(f"{prefix}/flops_per_puzzle")
    per_step = record.run_config.get("compute/flops_per_act_step")
    if flops is None and steps is not None and per_step is not None:
        flops = steps * per_step
    blocks_per_step = record.run_config.get("compute/blocks_per_act_step")
    if blocks is None and steps is not None and blocks_per_step is not None:
        blocks = steps * blocks_per_step
    return ScoredRun(record, best_report.get(metric), steps, blocks, flops, describe_schedule(record.run_config))


def best_of(reports: list[dict], metric: str, goal: str) -> dict:
    """The report with the best value of ``metric`` by the sweep's goal (the first of equals), or {} when none
    has it: the one ranking rule of the offline runner and the report."""
    values = [r for r in reports if isinstance(r.get(metric), (int, float))]
    return (max if goal == "maximize" else min)(values, key=lambda r: r[metric]) if values else {}


def describe_schedule(run_config: dict) -> str:
    """``z_L<-[z_H,x]x3  z_M<-[z_L,x]x2  z_H<-[z_M]x1, 3 cycles`` (x: the input embedding; ``(grad last N)`` after a
    stage with a gradient window), or ``?``: the one compact rendering of a schedule (reports, the importer)."""
    arch = nested_get(run_config, "model.arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("stages"), list):
        return "?"
    parts = []
    for stage in arch["stages"]:
        if not isinstance(stage, dict):
            return "?"
        sources = list(stage.get("sources") or []) + (["x"] if stage.get("include_inputs") else [])
        window = f"(grad last {stage['grad_last']})" if stage.get("grad_last") is not None else ""
        parts.append(f"{stage.get('target', '?')}<-[{','.join(sources)}]x{stage.get('repeat', 1)}{window}")
    cycles = arch.get("outer_cycles")
    return "  ".join(parts) + (f", {cycles} cycles" if cycles is not None else "")


def nested_get(config: dict, dotted: str) -> Any:
    """``config["model.arch.stages.0.repeat"]`` if that flat key exists, else the nested path (digits index
    lists); None when absent."""
    if dotted in config:
        return config[dotted]
    node: Any = config
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def counted(count: int, noun: str) -> str:
    """The count with its noun: 1 run, 3 runs."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
