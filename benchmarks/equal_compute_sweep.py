"""The quickstart's loop-schedule sweep run twice with the same schedules and seeds: at equal steps
(sweeps/quickstart_stages.yaml: 1000 steps, an evaluation every 100) and at equal training compute
(sweeps/quickstart_stages_equal_compute.yaml: what the default schedule spends in 1000 steps, an evaluation every
tenth of it), offline, then both rankings side by side.

    python benchmarks/equal_compute_sweep.py [--out runs/compare] [--data data/sudoku4-minimal]

The schedules: a grid over the repeats of stage 0 and stage 2 (1 or 4; stage 1 stays at 2 with the input), from 4
to 10 blocks per cycle against the default's 6, so one schedule costs 2.5x another per step. Early stopping on
accuracy is off (every run trains its whole budget), hyperband stays as in the files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID = {"model.arch.stages.0.repeat": {"values": [1, 4]}, "model.arch.stages.2.repeat": {"values": [1, 4]}}


def sweep_file(source: str, out: Path, data: str) -> Path:
    config = yaml.safe_load((ROOT / "sweeps" / source).read_text())
    config["method"], config["parameters"] = "grid", GRID
    command = [str(ROOT / a) if a.startswith("configs/") else a for a in config["command"][:-1]]
    command += [f"--data.data_paths={data}", "--trainer.callbacks=[]", "${args}"]  # no early stop on accuracy
    config["command"] = command
    path = out / source
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--data", default=str(ROOT / "data/sudoku4-minimal"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    from loopformer.sweep.report.report import make_report
    from loopformer.sweep.runner import OfflineSweep

    analyses = {}
    for label, source in (("equal steps", "quickstart_stages.yaml"),
                          ("equal compute", "quickstart_stages_equal_compute.yaml")):  # fmt: skip
        start = time.perf_counter()
        runs = out / label.replace(" ", "_")
        count = math.prod(len(v["values"]) for v in GRID.values())
        OfflineSweep(sweep_file(source, out, args.data), runs, poll_seconds=1.0).run(count=count)
        analyses[label], _ = make_report(str(runs))
        print(f"[{label}] {time.perf_counter() - start:.0f} s", flush=True)

    def row(r, value, views):  # noqa: ANN001, ANN202
        spent = views.to_best.get(r.name)
        return f"{r.schedule} | {r.state} | {value:.3f} | {spent:.3g}" if spent else f"{r.schedule} | {value:.3f}"

    print(
        "\n| # | equal steps: schedule | state | best val/exact_accuracy | training FLOPs to it "
        "| equal compute: schedule | state | best val/exact_accuracy | training FLOPs to it |"
    )
    print("|---|---|---|---:|---:|---|---|---:|---:|")
    steps, compute = analyses["equal steps"], analyses["equal compute"]
    for i in range(max(len(steps.ranked), len(compute.ranked))):
        cells = []
        for a in (steps, compute):
            cells.append(row(a.ranked[i], a.ranked[i].best, a.training) if i < len(a.ranked) else " | | |")
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    views = steps.training
    print(f"\nequal-steps sweep read at equal training compute ({views.equal_budget:.3g} FLOPs):")
    for i, (r, v) in enumerate(views.at_equal, 1):
        print(f"  {i}. {r.schedule}: {v:.3f}")
    (out / "comparison.json").write_text(json.dumps({
        label: [{"schedule": r.schedule, "state": r.state, "best": r.best, "train_flops_to_best":
                 a.training.to_best.get(r.name)} for r in a.ranked] for label, a in analyses.items()
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
