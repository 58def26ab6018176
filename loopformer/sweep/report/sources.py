"""Where a sweep's runs come from: the directory ``loopformer sweep --offline`` wrote, or a W&B sweep read with
``wandb.Api()``. Each adapter yields the same ``RunRecord``s; nothing after this module knows the source."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from loopformer.files import first_line, load_json
from loopformer.sweep.report.records import ReportError, RunRecord, SweepRuns, nested_get
from loopformer.sweep.spec import DEFAULT_METRIC

WANDB_SWEEP_PATH = re.compile(r"^[\w.-]+/[\w.-]+/[\w-]+$")
OFFLINE_STATES = {
    "finished": "finished",
    "stopped": "stopped",
    "failed": "crashed",
    "crashed": "crashed",
    "running": "running",
}
WANDB_STATES = {"finished": "finished", "running": "running", "pending": "running", "killed": "stopped"}


def open_source(source: str, wandb_api: Optional[Callable[[], Any]] = None) -> SweepRuns:
    """A directory that exists is an offline sweep; otherwise ``ENTITY/PROJECT/SWEEP_ID`` is a W&B sweep."""
    path = Path(source)
    if path.exists():
        return offline_runs(path)
    if WANDB_SWEEP_PATH.match(source):
        return wandb_runs(source, wandb_api)
    raise ReportError(
        f"{source}: no such directory, and not a W&B sweep path ENTITY/PROJECT/SWEEP_ID; expected the directory "
        "`loopformer sweep FILE --offline` wrote (it holds state.json) or a W&B sweep."
    )


# -- offline --------------------------------------------------------------------------------------------------------
def offline_runs(directory: Path) -> SweepRuns:
    from loopformer.sweep.spec import SweepFileError, load_sweep

    state_file = directory / "state.json"
    if not directory.is_dir() or not state_file.exists():
        raise ReportError(
            f"{directory}: holds no state.json; expected the directory an offline sweep wrote "
            "(`loopformer sweep FILE --offline --out DIR`)."
        )
    state = load_json(
        state_file, ReportError, "the state of an offline sweep (written by `loopformer sweep --offline`)"
    )
    trials = state.get("trials") if isinstance(state, dict) else None
    if not isinstance(trials, list):
        raise ReportError(f"{state_file}: has no list of trials; expected the state of an offline sweep.")
    metric, parameters = state.get("metric"), state.get("parameters")
    if not metric and state.get("sweep") and Path(state["sweep"]).exists():  # written before the state kept them
        try:
            sweep = load_sweep(state["sweep"])
            metric, parameters = sweep.get("metric"), sorted(sweep.get("parameters", {}))
        except SweepFileError:
            pass
    metric = {**DEFAULT_METRIC, **(metric or {})}
    runs = []
    for i, trial in enumerate(trials):
        if not isinstance(trial, dict) or trial.get("state") == "pending":
            continue
        config = trial.get("config") if isinstance(trial.get("config"), dict) else {}
        params = {k: v.get("value") if isinstance(v, dict) else v for k, v in config.items()}
        reports = [h for h in trial.get("history") or [] if isinstance(h, dict)]
        runs.append(
            RunRecord(
                name=str(trial.get("name", f"trial-{i:03d}")),
                state=OFFLINE_STATES.get(trial.get("state"), "crashed"),
                params=params,
                reports=reports,
                run_config=trial.get("run_config") or {},
            )
        )
    if parameters is None:
        parameters = sorted({k for r in runs for k in r.params})
    return SweepRuns(str(directory), metric["name"], metric["goal"], list(parameters), runs, directory)


# -- Weights & Biases ----------------------------------------------------------------------------------------------
def _default_wandb_api() -> Any:
    from loopformer.runs.loggers import wandb_credentials_found

    if not wandb_credentials_found():
        raise ReportError(
            "no W&B login or API key found: run `wandb login` or set WANDB_API_KEY to read a sweep from W&B "
            "(an offline sweep's directory needs neither)."
        )
    import wandb

    return wandb.Api(timeout=30)


def wandb_runs(path: str, wandb_api: Optional[Callable[[], Any]] = None) -> SweepRuns:
    try:
        api = (wandb_api or _default_wandb_api)()
        sweep = api.sweep(path)
        config = dict(sweep.config or {})
        runs = list(sweep.runs)
    except ReportError:
        raise
    except Exception as e:  # noqa: BLE001 - no network, no permission, no such sweep: all one line
        raise ReportError(f"{path}: cannot read this W&B sweep ({first_line(e)}).") from None
    metric = {**DEFAULT_METRIC, **(config.get("metric") or {})}
    parameters = sorted(config.get("parameters") or {})
    records = [_wandb_record(run, metric["name"], parameters) for run in runs]
    out = Path("runs/sweeps") / path.rsplit("/", 1)[-1]
    return SweepRuns(path, metric["name"], metric["goal"], parameters, records, out)


def _wandb_record(run: Any, metric: str, parameters: list[str]) -> RunRecord:
    from loopformer.runs.stopping import STOPPED_SUMMARY_KEY

    config = dict(getattr(run, "config", None) or {})
    summary = dict(getattr(run, "summary_metrics", None) or {})
    state = WANDB_STATES.get(getattr(run, "state", None), "crashed")
    if summary.get(STOPPED_SUMMARY_KEY):  # stopped by the agent: the run exits 128 + SIGTERM, which W&B calls failed
        state = "stopped"
    params = {p: v for p in parameters if (v := nested_get(config, p)) is not None}
    run_config = {k: v for k, v in config.items() if k.startswith("compute/") or k == "model"}
    return RunRecord(
        name=str(getattr(run, "name", None) or getattr(run, "id", "?")),
        state=state,
        params=params,
        reports=_wandb_reports(run, metric, summary),
        run_config=run_config,
    )


def _wandb_reports(run: Any, metric: str, summary: dict) -> list[dict]:
    """The evaluation reports in the run's history (with their compute when it was logged), or the summary's last
    report when the history cannot be read."""
    prefix = metric.split("/", 1)[0]
    compute = [f"{prefix}/steps", f"{prefix}/blocks_per_puzzle", f"{prefix}/flops_per_puzzle"]
    try:
        rows = [dict(r) for r in run.scan_history(keys=[metric, *compute])]
        if not rows:  # the compute keys were never logged together with the metric
            rows = [dict(r) for r in run.scan_history(keys=[metric])]
    except Exception:  # noqa: BLE001 - a run whose history is unreadable still has its summary
        rows = []
    if not rows and isinstance(summary.get(metric), (int, float)):
        rows = [{k: v for k, v in summary.items() if k == metric or k in compute}]
    return [r for r in rows if isinstance(r.get(metric), (int, float))]
