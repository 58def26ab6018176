"""The offline sweep runner: `loopformer sweep FILE --offline`, W&B's sweep engine (the `sweeps` package) without a
W&B server.

The engine proposes runs (grid/random/bayes) and applies the file's hyperband early termination; each trial runs
the command line `wandb agent` would run (built by wandb's own sweep utilities) plus one flag that adds the
``EvalMetricsFile`` callback, through which the run reports each evaluation.

Several runners work on one sweep directory as several W&B agents work on one sweep (one per GPU): they share
``state.json`` under a lock (``sweep/state.py``), claim trials one at a time, and a trial whose runner died is run
again by the next runner. A trial runs in its own process group and dies with its runner, even a runner killed with
SIGKILL (Linux's parent-death signal). SIGTERM or SIGINT to a runner stops its trial, records it as stopped, and
writes the results. Results: ``results.csv``, ``results.json`` and ``parallel_coordinates.png``.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

from loopformer.checkpoint import atomic
from loopformer.runs.parent import DIE_WITH_PARENT_ENV, die_with_parent
from loopformer.sweep.report.records import RunRecord, best_of, score
from loopformer.sweep.spec import DEFAULT_METRIC, agent_command, load_sweep, sweeps_engine, this_installation_first
from loopformer.sweep.state import SweepState, TrialRecord, runner_alive, runner_claim

COMPUTE_COLUMNS = ("val/steps", "val/blocks_per_puzzle", "val/flops_per_puzzle", "val/seconds_to_best")
KILL_AFTER_S = 30.0  # as the W&B agent: SIGTERM, then SIGKILL this much later
ENGINE_STATES = {"pending": "pending", "running": "running", "finished": "finished", "stopped": "killed"}
REPORT_STATES = {"finished": "finished", "stopped": "stopped", "failed": "crashed", "running": "running"}


class OfflineSweep:
    def __init__(
        self,
        sweep_path: str | Path,
        out_dir: str | Path,
        poll_seconds: float = 1.0,
        label: str = "",
        overrides: Optional[list[str]] = None,
    ) -> None:
        """``overrides``: ``--key=value`` flags appended to every trial's command (after the sampled ones)."""
        self.sweep_path = Path(sweep_path)
        self.config = load_sweep(sweep_path)
        self.overrides = list(overrides or [])
        self.out_dir = Path(out_dir)
        self.poll_seconds = poll_seconds
        metric = {**DEFAULT_METRIC, **self.config.get("metric", {})}
        self.metric, self.goal = metric["name"], metric["goal"]
        header = {
            "sweep": str(self.sweep_path),
            "metric": self.config.get("metric", {}),
            "parameters": sorted(self.config.get("parameters", {})),
            "config": self.config,
            "overrides": self.overrides,
        }
        self.state = SweepState(self.out_dir, header)
        self.state.check_same_sweep()
        self.runner_id = f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
        self.prefix = f"[sweep{' ' + label if label else ''}]"
        self.trials: list[TrialRecord] = self.state.read()
        self.stop_signal: Optional[int] = None
        self._proc: Optional[subprocess.Popen] = None
        self.written: list[Path] = []  # the result files the last write_results wrote
        self.ran: list[str] = []  # the trials this runner ran (others may be run by other runners on the sweep)
        self.gave_up: Optional[str] = None  # why this runner stopped proposing trials (its settings fail them all)
        self._last_bad_input: Optional[str] = None  # the error of the last trial, when it was refused its settings

    # -- engine views --------------------------------------------------------------------------------------------
    def _sweep_runs(self, trials: list[TrialRecord]) -> list:
        engine = sweeps_engine()
        return [
            engine.SweepRun(
                name=t.name,
                config=t.config,
                state=getattr(engine.RunState, ENGINE_STATES.get(t.state, "failed")),
                history=t.history,
                summary_metrics=t.history[-1] if t.history else {},
            )
            for t in trials
        ]

    def runs_to_stop(self, trials: Optional[list[TrialRecord]] = None) -> set[str]:
        """Names of running trials that the file's early-termination rule stops now."""
        if "early_terminate" not in self.config:
            return set()
        trials = self.trials if trials is None else trials
        return {r.name for r in sweeps_engine().stop_runs(self.config, self._sweep_runs(trials))}

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self, count: int) -> list[TrialRecord]:
        """Run trials until the sweep holds ``count`` (those of earlier and of other runners included), the grid is
        exhausted, or a signal stops this runner (``stop_signal`` then says which)."""
        claim = runner_claim(self.out_dir, self.runner_id).acquire()
        notice = atomic.stale_notice(atomic.remove_stale_temporaries(self.out_dir))
        if notice:
            print(f"{self.prefix} {notice}", flush=True)
        previous = self._install_signal_handlers()
        atexit.register(self._kill_trial)
        try:
            while self.stop_signal is None and self.gave_up is None:
                trial = self._claim_next(count)
                if trial is None:
                    break
                self.ran.append(trial.name)
                self._run_trial(trial)
        finally:
            self._kill_trial()
            atexit.unregister(self._kill_trial)
            self._restore_signal_handlers(previous)
            self.trials = self.state.read()
            self.written = self.write_results()
            claim.release()
        return self.trials

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _claim_next(self, count: int) -> Optional[TrialRecord]:
        """Under the sweep's lock: give the trials of dead runners back, then take the first trial waiting to run,
        or ask the engine for a new one while the sweep holds fewer than ``count``."""
        with self.state.locked() as trials:
            for t in trials:
                if t.state == "running" and not runner_alive(self.out_dir, t.runner):
                    print(
                        f"{self.prefix} {t.name}: its runner ({t.runner}) is gone; attempt {t.attempt} is recorded "
                        "as crashed and the trial runs again",
                        flush=True,
                    )
                    t.start_again()
            trial = next((t for t in trials if t.state == "pending"), None)
            if trial is None:
                if len(trials) >= count:
                    return None
                proposal = sweeps_engine().next_run(self.config, self._sweep_runs(trials), validate=True)
                if proposal is None:  # a grid that is exhausted
                    return None
                trial = TrialRecord(name=f"trial-{len(trials):03d}", config=proposal.config)
                trials.append(trial)
            trial.state, trial.runner, trial.history, trial.exitcode = "running", self.runner_id, [], None
            self.trials = list(trials)
            return trial

    def _save_mine(self, trial: TrialRecord) -> list[TrialRecord]:
        """Write this runner's trial into the shared state (nothing else of it); returns everyone's trials."""
        with self.state.locked() as trials:
            for i, t in enumerate(trials):
                if t.name == trial.name and t.runner == self.runner_id and t.attempt == trial.attempt:
                    trials[i] = trial
            self.trials = list(trials)
            return self.trials

    def _run_trial(self, trial: TrialRecord) -> None:
        from loopformer.sweep.metrics_file import metrics_file_flag

        metrics_file, log_file = trial.files(self.out_dir)
        metrics_file.unlink(missing_ok=True)
        command = agent_command(self.config, trial.config) + self.overrides
        command.append(metrics_file_flag(str(metrics_file.resolve())))
        env = this_installation_first({**os.environ, DIE_WITH_PARENT_ENV: "1"})
        env.setdefault("WANDB_MODE", "offline")
        values = ", ".join(f"{k}={v['value']}" for k, v in trial.config.items())
        again = f" (attempt {trial.attempt})" if trial.attempt > 1 else ""
        print(f"{self.prefix} {trial.name}{again}: {values}", flush=True)
        start = time.perf_counter()
        runner_pid = os.getpid()
        with open(log_file, "w") as log:
            self._proc = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the runner stops the DDP ranks it starts too
                preexec_fn=lambda: die_with_parent(runner_pid),
            )
        stop_sent: Optional[float] = None
        reports = -1
        while True:
            finished = self._proc.poll() is not None
            self._read_history(trial, metrics_file)
            everyone = self._save_mine(trial) if len(trial.history) != reports or finished else self.trials
            reports = len(trial.history)
            if finished:
                break
            if stop_sent is None and self.stop_signal is not None:
                print(f"{self.prefix} {trial.name}: stopping it ({signal.Signals(self.stop_signal).name})", flush=True)
                stop_sent = self._signal_trial(signal.SIGTERM)
            elif stop_sent is None and trial.name in self.runs_to_stop(everyone):
                print(f"{self.prefix} {trial.name}: stopped by early termination after {reports} reports", flush=True)
                stop_sent = self._signal_trial(signal.SIGTERM)  # as the agent does; SIGKILL 30 s later
            if stop_sent is not None and time.perf_counter() - stop_sent > KILL_AFTER_S:
                self._signal_trial(signal.SIGKILL)
            time.sleep(self.poll_seconds)
        trial.exitcode = self._proc.returncode
        self._kill_trial()  # whatever the trial left in its group
        self._proc = None
        trial.seconds = time.perf_counter() - start
        trial.state = "stopped" if stop_sent is not None else ("finished" if trial.exitcode == 0 else "failed")
        self._save_mine(trial)
        best = best_of(trial.history, self.metric, self.goal).get(self.metric)
        print(
            f"{self.prefix} {trial.name}: {trial.state} (exit {trial.exitcode}), {len(trial.history)} reports, "
            f"best {best}",
            flush=True,
        )
        if trial.state == "failed":
            self._after_failure(trial, log_file)
        if trial.state == "finished" and best is None:
            print(
                f"{self.prefix} {trial.name}: it reported no {self.metric}, so the sweep learns nothing from it: did "
                "training end before its first evaluation (trainer.max_steps below trainer.val_check_interval)? "
                f"Its log: {log_file}",
                flush=True,
            )

    def _after_failure(self, trial: TrialRecord, log_file: Path) -> None:
        """Says why a trial failed (its error line). Two trials in a row refused their settings (exit 2, bad input,
        before anything ran) with the same error, whatever values they drew: the settings every trial shares are
        wrong (a GPU count this machine lacks, a missing dataset), and this runner stops instead of failing the rest
        of the sweep one trial at a time."""
        error = last_error_line(log_file)
        print(f"{self.prefix} {trial.name}: {error or 'no error line'} (its log: {log_file})", flush=True)
        bad_input = error if trial.exitcode == 2 and error else None
        if bad_input is not None and bad_input == self._last_bad_input:
            self.gave_up = (
                "two trials in a row stopped before they started, whatever values they drew, with: "
                f"{bad_input.rstrip('.')}; fix what every trial shares (the sweep file's command, the overrides) and "
                "run it again: the sweep continues where it stopped"
            )
        self._last_bad_input = bad_input

    def _signal_trial(self, signum: int) -> float:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        return time.perf_counter()

    def _kill_trial(self) -> None:
        """The trial's whole process group, at once (the runner is ending)."""
        if self._proc is not None:
            self._signal_trial(signal.SIGKILL)
            if self._proc.poll() is None:
                self._proc.wait()

    def _read_history(self, trial: TrialRecord, metrics_file: Path) -> None:
        if not metrics_file.exists():
            return
        from loopformer.sweep.metrics_file import CONFIG_KEY

        lines = metrics_file.read_text().splitlines()
        complete = [json.loads(line) for line in lines if line.endswith("}")]
        trial.history = [h for h in complete if self.metric in h]
        trial.run_config = next((h[CONFIG_KEY] for h in complete if CONFIG_KEY in h), trial.run_config)

    def check_command(self, timeout_s: float = 300.0) -> Optional[str]:
        """Before the first trial: the command of a run the engine proposes, with the overrides, parsed by the CLI
        (``--print_config``: nothing is built or run). None when it parses (or runs another program than
        loopformer); else the CLI's one-line error (an unknown key names the nearest valid ones)."""
        engine = sweeps_engine()
        proposed = engine.next_run(self.config, [])
        if proposed is None:
            return None
        command = agent_command(self.config, proposed.config) + self.overrides
        if not any(Path(str(part)).name == "loopformer" or part == "loopformer.cli" for part in command):
            return None  # another program: nothing of ours to check its flags against
        command.append("--print_config")
        env = this_installation_first({**os.environ, "WANDB_MODE": "disabled"})
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode == 0:
            return None
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        error = next((line for line in reversed(lines) if "error" in line), lines[-1] if lines else "")
        return error.replace("loopformer: error: ", "").strip() or f"exit status {done.returncode}"

    def finished_trials(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "finished"]

    # -- results ---------------------------------------------------------------------------------------------------
    def table(self) -> list[dict]:
        """One row per trial, ranked by nothing (trial order); the best report by the sweep's goal."""
        params = sorted({k for t in self.trials for k in t.config})
        rows = []
        for t in self.trials:
            row: dict[str, Any] = {
                "trial": t.name,
                "state": t.state,
                "attempt": t.attempt,
                "reports": len(t.history),
                "seconds": round(t.seconds, 1),
            }
            row.update({p: t.config.get(p, {}).get("value") for p in params})
            record = RunRecord(t.name, REPORT_STATES.get(t.state, "crashed"), {}, t.history, t.run_config)
            row[f"best {self.metric}"] = score(record, self.metric, self.goal).best
            row[f"last {self.metric}"] = t.history[-1].get(self.metric) if t.history else None
            # The compute behind the best report (loopformer/compute_report.py): schedules compared at equal compute.
            best = best_of(t.history, self.metric, self.goal)
            row.update({key: best.get(key) for key in COMPUTE_COLUMNS})
            rows.append(row)
        return rows

    def write_results(self) -> list[Path]:
        """results.csv, results.json and parallel_coordinates.png; returns the files written."""
        rows = self.table()
        if not rows:
            return []

        def write_csv(path: Path) -> None:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

        atomic.write_with(self.out_dir / "results.csv", write_csv)
        atomic.write_text(self.out_dir / "results.json", json.dumps(rows, indent=1))
        from loopformer.sweep.report.plots import plot_parallel_coordinates

        params = sorted(self.config.get("parameters", {}))
        compute = [c for c in ("val/flops_per_puzzle",) if any(r.get(c) is not None for r in rows)]
        axes = params + compute + [f"best {self.metric}"]
        picture = self.out_dir / "parallel_coordinates.png"
        plot_parallel_coordinates(rows, axes, f"best {self.metric}", picture)
        return [self.out_dir / "results.csv", self.out_dir / "results.json", picture]


def last_error_line(log_file: Path) -> Optional[str]:
    """A trial's error as its log ends it (``loopformer: error: ...``, a traceback's last line), without the
    program's prefix; None for an empty log."""
    try:
        lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    error = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else None)
    return error.removeprefix("loopformer: error: ") if error else None
