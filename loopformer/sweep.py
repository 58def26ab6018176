"""`loopformer sweep`: run a W&B sweep file with the W&B agent, or offline on the official `sweeps` engine.

Offline, the engine proposes runs (grid/random/bayes) and applies the file's hyperband early termination;
each trial runs the command line `wandb agent` would run (built by wandb's own sweep utilities) plus one flag
that adds the ``EvalMetricsFile`` callback, through which the run reports each evaluation. State is saved after every change, so an
interrupted sweep resumes where it stopped. Results: ``results.csv``, ``results.json`` and
``parallel_coordinates.png`` in the output directory.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from loopformer.files import load_json, load_yaml


class SweepFileError(ValueError):
    """A sweep file that W&B would refuse, or an offline sweep's state that cannot be read (the message names the
    file and the problem)."""


COMPUTE_COLUMNS = ("val/steps", "val/blocks_per_puzzle", "val/flops_per_puzzle", "val/seconds_to_best")
STATE_EXPECTED = "the state of an offline sweep (state.json, written by `loopformer sweep --offline`)"


def sweeps_engine():  # noqa: ANN201 (the `sweeps` module)
    """W&B's sweep engine (the `sweeps` package), imported without the pydantic-v1 warning it prints on import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Valid config keys have changed in V2", category=UserWarning)
        import sweeps
    return sweeps


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    config = load_yaml(path, SweepFileError, "a W&B sweep file (method, metric, parameters, command)")
    if not isinstance(config, dict):
        raise SweepFileError(f"{path}: expected a mapping (method, metric, parameters, command), got {config!r}.")
    problems = sweeps_engine().schema_violations_from_proposed_config(config)
    if problems:
        raise SweepFileError(f"{path}: not a valid sweep configuration: " + "; ".join(problems))
    if "command" not in config:
        raise SweepFileError(f"{path}: has no `command`; loopformer sweeps run `loopformer fit ... ${{args}}`.")
    return config


def agent_command(sweep_config: dict, run_config: dict[str, dict]) -> list[str]:
    """The command line `wandb agent` runs for a sampled run (``{param: {"value": v}}``), built as it does."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(copy.deepcopy(sweep_config.get("command")))
    sweep_vars: dict[str, Any] = sweep_utils.create_sweep_command_args({"args": run_config})
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [sweep_config.get("program", "")]
    if platform.system() != "Windows":
        sweep_vars["env"] = ["/usr/bin/env"]
    out: list[str] = []
    for chunk in command:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            out += sweep_vars.get(chunk[2:-1]) or []
        else:
            out.append(chunk)
    return out


# ---------------------------------------------------------------------------------------------------
@dataclass
class TrialRecord:
    name: str
    config: dict[str, dict]
    state: str = "pending"  # pending | running | finished | stopped | failed
    history: list[dict] = field(default_factory=list)
    exitcode: Optional[int] = None
    seconds: float = 0.0
    run_config: dict = field(default_factory=dict)  # the run's model.arch and compute/* (metrics_file.CONFIG_KEY)


def load_state(path: Path) -> list[TrialRecord]:
    saved = load_json(path, SweepFileError, STATE_EXPECTED)
    try:
        return [TrialRecord(**t) for t in saved["trials"]]
    except (KeyError, TypeError) as e:
        raise SweepFileError(
            f"{path}: not {STATE_EXPECTED} ({type(e).__name__}: {e}); move it away to start the sweep afresh."
        ) from None


class OfflineSweep:
    def __init__(self, sweep_path: str | Path, out_dir: str | Path, poll_seconds: float = 1.0) -> None:
        self.sweep_path = Path(sweep_path)
        self.config = load_sweep(sweep_path)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.out_dir / "state.json"
        self.poll_seconds = poll_seconds
        self.metric = self.config.get("metric", {}).get("name", "val/exact_accuracy")
        self.trials: list[TrialRecord] = []
        if self.state_file.exists():
            self.trials = load_state(self.state_file)
            for t in self.trials:  # interrupted mid-run: run it again from the start
                if t.state == "running":
                    t.state, t.history, t.exitcode = "pending", [], None

    # -- engine views --------------------------------------------------------------------------------
    def _sweep_runs(self) -> list:
        engine = sweeps_engine()
        RunState, SweepRun = engine.RunState, engine.SweepRun  # noqa: N806 (the engine's class names)
        states = {
            "pending": RunState.pending,
            "running": RunState.running,
            "finished": RunState.finished,
            "stopped": RunState.killed,
            "failed": RunState.failed,
        }
        return [
            SweepRun(
                name=t.name,
                config=t.config,
                state=states[t.state],
                history=t.history,
                summary_metrics=t.history[-1] if t.history else {},
            )
            for t in self.trials
        ]

    def runs_to_stop(self) -> set[str]:
        """Names of running trials that the file's early-termination rule stops now."""
        if "early_terminate" not in self.config:
            return set()
        return {r.name for r in sweeps_engine().stop_runs(self.config, self._sweep_runs())}

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "sweep": str(self.sweep_path),
                    "metric": self.config.get("metric", {}),
                    "parameters": sorted(self.config.get("parameters", {})),
                    "trials": [t.__dict__ for t in self.trials],
                },
                indent=1,
            )
        )
        os.replace(tmp, self.state_file)

    # -- running ---------------------------------------------------------------------------------------
    def run(self, count: int) -> list[TrialRecord]:
        sweeps = sweeps_engine()

        done = sum(t.state != "pending" for t in self.trials)
        while True:
            trial = next((t for t in self.trials if t.state == "pending"), None)
            if trial is None:
                if done >= count:
                    break
                proposal = sweeps.next_run(self.config, self._sweep_runs(), validate=True)
                if proposal is None:  # a grid that is exhausted
                    break
                trial = TrialRecord(name=f"trial-{len(self.trials):03d}", config=proposal.config)
                self.trials.append(trial)
            self._run_trial(trial)
            done += 1
        self.write_results()
        return self.trials

    def _run_trial(self, trial: TrialRecord) -> None:
        from loopformer.metrics_file import metrics_file_flag

        metrics_file = self.out_dir / f"{trial.name}.metrics.jsonl"
        metrics_file.unlink(missing_ok=True)
        command = agent_command(self.config, trial.config) + [metrics_file_flag(str(metrics_file.resolve()))]
        env = dict(os.environ)
        env.setdefault("WANDB_MODE", "offline")
        values = ", ".join(f"{k}={v['value']}" for k, v in trial.config.items())
        print(f"[sweep] {trial.name}: {values}", flush=True)
        trial.state, trial.history = "running", []
        self._save()
        start = time.perf_counter()
        with open(self.out_dir / f"{trial.name}.log", "w") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            stop_sent = None
            while True:
                finished = proc.poll() is not None
                self._read_history(trial, metrics_file)
                if finished:
                    break
                if stop_sent is None and trial.name in self.runs_to_stop():
                    print(f"[sweep] {trial.name}: stopped by early termination after {len(trial.history)} reports")
                    proc.send_signal(signal.SIGTERM)  # as the agent does; SIGKILL 30 s later
                    stop_sent = time.perf_counter()
                if stop_sent is not None and time.perf_counter() - stop_sent > 30:
                    proc.kill()
                time.sleep(self.poll_seconds)
        trial.exitcode = proc.returncode
        trial.seconds = time.perf_counter() - start
        trial.state = "stopped" if stop_sent is not None else ("finished" if proc.returncode == 0 else "failed")
        best = max((h.get(self.metric, float("-inf")) for h in trial.history), default=None)
        print(f"[sweep] {trial.name}: {trial.state} (exit {trial.exitcode}), {len(trial.history)} reports, best {best}")
        self._save()

    def _read_history(self, trial: TrialRecord, metrics_file: Path) -> None:
        if not metrics_file.exists():
            return
        from loopformer.metrics_file import CONFIG_KEY

        lines = metrics_file.read_text().splitlines()
        complete = [json.loads(line) for line in lines if line.endswith("}")]
        trial.history = [h for h in complete if self.metric in h]
        trial.run_config = next((h[CONFIG_KEY] for h in complete if CONFIG_KEY in h), trial.run_config)

    # -- results ---------------------------------------------------------------------------------------
    def table(self) -> list[dict]:
        params = sorted({k for t in self.trials for k in t.config})
        rows = []
        for t in self.trials:
            row = {"trial": t.name, "state": t.state, "reports": len(t.history), "seconds": round(t.seconds, 1)}
            row.update({p: t.config.get(p, {}).get("value") for p in params})
            values = [h[self.metric] for h in t.history]
            row[f"best {self.metric}"] = max(values) if values else None
            row[f"last {self.metric}"] = values[-1] if values else None
            # The compute behind the best report (loopformer/compute_report.py): schedules compared at equal compute.
            best = max(t.history, key=lambda h: h[self.metric]) if t.history else {}
            row.update({key: best.get(key) for key in COMPUTE_COLUMNS})
            rows.append(row)
        return rows

    def write_results(self) -> None:
        rows = self.table()
        if not rows:
            return
        with open(self.out_dir / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (self.out_dir / "results.json").write_text(json.dumps(rows, indent=1))
        from loopformer.sweep_report.plots import plot_parallel_coordinates

        params = sorted(self.config.get("parameters", {}))
        compute = [c for c in ("val/flops_per_puzzle",) if any(r.get(c) is not None for r in rows)]
        axes = params + compute + [f"best {self.metric}"]
        plot_parallel_coordinates(rows, axes, f"best {self.metric}", self.out_dir / "parallel_coordinates.png")


# ---------------------------------------------------------------------------------------------------
def run_online(path: str, count: Optional[int], project: str, entity: Optional[str]) -> int:
    import wandb

    config = load_sweep(path)
    sweep_id = wandb.sweep(config, project=project, entity=entity)
    target = "/".join(p for p in (entity, project, sweep_id) if p)
    print(f"sweep id: {sweep_id}\nrun more agents (e.g. on other machines) with:\n  wandb agent {target}")
    command = ["wandb", "agent", target] + (["--count", str(count)] if count else [])
    return subprocess.call(command)


def main(argv: list[str], wandb_api=None) -> int:  # noqa: ANN001 (a wandb.Api factory for the report; tests fake it)
    p = argparse.ArgumentParser(
        prog="loopformer sweep",
        description="Create a W&B sweep from a file in sweeps/ and run an agent here, or run it offline. "
        "`loopformer sweep report SOURCE` turns a sweep's results into a report (see `loopformer sweep report -h`).",
    )
    p.add_argument("sweep_file")
    p.add_argument(
        "--count", type=int, default=None, help="trials in all; offline, a resumed sweep counts those done (default 10)"
    )
    p.add_argument("--project", default="loopformer")
    p.add_argument("--entity", default=None)
    p.add_argument("--offline", action="store_true", help="no W&B server: the `sweeps` engine proposes and stops runs")
    p.add_argument("--out", default=None, help="offline: results and state directory (default runs/sweeps/<file>)")
    if argv[:1] == ["report"]:
        from loopformer.sweep_report import main as report_main

        return report_main(argv[1:], wandb_api)
    args = p.parse_args(argv)
    try:
        if not args.offline:
            return run_online(args.sweep_file, args.count, args.project, args.entity)
        out = args.out or Path("runs/sweeps") / Path(args.sweep_file).stem
        sweep = OfflineSweep(args.sweep_file, out)
        sweep.run(args.count or 10)
    except SweepFileError as e:
        print(f"loopformer sweep: error: {e}", file=sys.stderr)
        return 2
    print(f"results: {Path(out) / 'results.csv'}, picture: {Path(out) / 'parallel_coordinates.png'}")
    print(f"compare the schedules at equal compute: loopformer sweep report {out}")
    return 0
