"""Redraw the pictures in docs/ from the measurements recorded in BENCHMARKS.md, with the current plotting code
(the depth curve, the sweep report's Pareto front and importance, the parallel coordinates of the offline sweep).

    python benchmarks/redraw_docs_pictures.py [--out docs]

The numbers below are copied from the BENCHMARKS.md sections named beside them; rerunning the measurement itself
is what those sections describe.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

from loopformer.evaluation.depth_curve import plot as plot_depth_curve
from loopformer.sweep.report.plots import plot_importance, plot_parallel_coordinates, plot_pareto

# "Test-time depth curve of the quickstart": depth -> exact accuracy without / with halting on the Q head
DEPTH_CURVE = {1: (0.9510, 0.9510), 2: (0.9780, 0.9780), 4: (0.9660, 0.9810), 8: (0.9570, 0.9820)}

# "Sweep report of a real offline quickstart sweep": run, state, GFLOPs/puzzle, best val/exact_accuracy
REPORT_RUNS = [
    ("trial-003", "finished", 0.4974, 0.991), ("trial-002", "finished", 0.4421, 0.986),
    ("trial-005", "finished", 0.3316, 0.967), ("trial-000", "finished", 0.2211, 0.959),
    ("trial-004", "finished", 0.3869, 0.927), ("trial-001", "stopped", 0.4421, 0.0),
    ("trial-006", "stopped", 0.3869, 0.0), ("trial-007", "stopped", 0.3869, 0.0),
]  # fmt: skip
REPORT_FRONT = ("trial-000", "trial-005", "trial-002", "trial-003")
# parameter -> (importance, correlation) for the metric, then for the metric per GFLOP
REPORT_IMPORTANCE = {
    "model.arch.stages.2.repeat": ((0.775, -0.816), (0.795, -0.88)),
    "model.arch.stages.0.include_inputs": ((0.111, 0.466), (0.033, 0.394)),
    "model.arch.stages.1.repeat": ((0.086, 0.498), (0.042, 0.201)),
    "model.arch.stages.0.repeat": ((0.023, 0.098), (0.129, -0.039)),
    "model.arch.stages.1.include_inputs": ((0.006, 0.607), (0.001, 0.738)),
}

# "Offline sweep on the quickstart task": stage 0 (inputs, repeat), stage 1 (inputs, repeat), stage 2 repeat, state,
# best val/exact_accuracy
SWEEP_TRIALS = [
    (False, 1, False, 1, 1, "finished", 0.000), (False, 4, False, 2, 1, "finished", 0.000),
    (True, 4, False, 1, 4, "finished", 0.991), (True, 1, False, 1, 3, "finished", 0.859),
    (False, 4, True, 2, 3, "finished", 0.996), (False, 2, False, 4, 3, "stopped", 0.000),
    (True, 1, True, 2, 4, "finished", 0.992), (False, 2, False, 1, 1, "stopped", 0.000),
]  # fmt: skip
METRIC = "val/exact_accuracy"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    out = Path(p.parse_args().out)

    rows = [dict(depth=d, act_inference=a, exact_accuracy=DEPTH_CURVE[d][a]) for d in DEPTH_CURVE for a in (0, 1)]
    for row in rows:
        row["act_inference"] = bool(row["act_inference"])
    plot_depth_curve(rows, out / "quickstart_depth_curve.png")

    runs = [SimpleNamespace(name=n, state=s, flops_per_puzzle=g * 1e9, best=b) for n, s, g, b in REPORT_RUNS]
    front = sorted((r for r in runs if r.name in REPORT_FRONT), key=lambda r: r.flops_per_puzzle)
    plot_pareto(runs, front, METRIC, out / "sweep_report_pareto.png")

    importance = {
        target: [
            SimpleNamespace(parameter=p, importance=v[k][0], correlation=v[k][1]) for p, v in REPORT_IMPORTANCE.items()
        ]
        for k, target in enumerate(("metric", "metric per GFLOP"))
    }
    plot_importance(importance, out / "sweep_report_importance.png", METRIC)

    names = ["model.arch.stages.0.include_inputs", "model.arch.stages.0.repeat", "model.arch.stages.1.include_inputs",
             "model.arch.stages.1.repeat", "model.arch.stages.2.repeat"]  # fmt: skip
    lines = [dict(zip(names, t[:5], strict=True), state=t[5], **{METRIC: t[6]}) for t in SWEEP_TRIALS]
    plot_parallel_coordinates(lines, [*names, METRIC], METRIC, out / "quickstart_sweep.png")
    print(f"redrawn in {out}: quickstart_depth_curve.png, sweep_report_pareto.png, sweep_report_importance.png, "
          "quickstart_sweep.png")  # fmt: skip


if __name__ == "__main__":
    main()
