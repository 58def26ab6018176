"""An offline sweep's shared state: ``state.json`` in the sweep directory, read-modify-written under a lock by every
runner on the sweep, as a W&B server keeps one sweep for several agents.

``state.json`` holds the sweep file's configuration (its metric and parameters also apart), the trial overrides the
sweep was started with, and one record per trial. A trial is claimed by one
runner (``runner``: its id), and only that runner writes the trial's history. Each runner holds a claim on
``runners/<id>.lock`` for its lifetime: a trial still marked running whose runner no longer holds its claim was
left by a runner that died; the next runner marks that attempt ``crashed``, keeps it in ``attempts`` and runs the
trial again as a new attempt, with a metrics file and log of its own.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from loopformer.checkpoint import atomic
from loopformer.files import load_json
from loopformer.locks import is_held
from loopformer.runs.claim import Claim
from loopformer.sweep.report.records import counted
from loopformer.sweep.spec import SweepFileError

LABELS = {"name", "description", "project", "entity"}  # sweep file keys that change no trial
STATE_EXPECTED = "the state of an offline sweep (state.json, written by `loopformer sweep --offline`)"
TRIAL_STATES = ("pending", "running", "finished", "stopped", "failed", "crashed")
"""pending (to run, or to run again); running; finished (exit 0); stopped (by early termination, or the runner was
stopped by a signal); failed (exit != 0); crashed (its runner died; only in ``attempts``)."""


@dataclass
class TrialRecord:
    name: str
    config: dict[str, dict]
    state: str = "pending"
    history: list[dict] = field(default_factory=list)
    exitcode: Optional[int] = None
    seconds: float = 0.0
    run_config: dict = field(default_factory=dict)  # the run's model.arch and compute/* (metrics_file.CONFIG_KEY)
    runner: Optional[str] = None  # the id of the runner that claimed the current attempt
    attempt: int = 1
    attempts: list[dict] = field(default_factory=list)  # earlier attempts whose runner died, each kept apart

    def files(self, out_dir: Path) -> tuple[Path, Path]:
        """This attempt's metrics file and log (attempt 1 keeps the plain names)."""
        stem = self.name if self.attempt == 1 else f"{self.name}.attempt-{self.attempt}"
        return out_dir / f"{stem}.metrics.jsonl", out_dir / f"{stem}.log"

    def start_again(self) -> None:
        """Its runner died mid-attempt: that attempt is kept as crashed, and the trial waits to be run again."""
        self.attempts.append(
            {
                "attempt": self.attempt,
                "runner": self.runner,
                "state": "crashed",
                "history": self.history,
                "exitcode": self.exitcode,
                "seconds": self.seconds,
            }
        )
        self.attempt += 1
        self.state, self.history, self.exitcode, self.seconds, self.runner = "pending", [], None, 0.0, None


def parse_trials(saved: Any, path: Path) -> list[TrialRecord]:
    try:
        return [TrialRecord(**t) for t in saved["trials"]]
    except (KeyError, TypeError) as e:
        raise SweepFileError(
            f"{path}: not {STATE_EXPECTED} ({type(e).__name__}: {e}); move it away to start the sweep afresh."
        ) from None


def load_state(path: Path) -> list[TrialRecord]:
    return parse_trials(load_json(path, SweepFileError, STATE_EXPECTED), path)


class SweepState:
    """``with state.locked() as trials:`` reads the trials under the sweep's lock; what the block leaves in the list
    is written back (atomically) when it ends."""

    def __init__(self, out_dir: Path, header: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.path = out_dir / "state.json"
        self.lock_path = out_dir / ".state.lock"
        self.header = header  # sweep file, metric, parameters, configuration, overrides: at the top of state.json

    @contextmanager
    def locked(self) -> Iterator[list[TrialRecord]]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            saved = load_json(self.path, SweepFileError, STATE_EXPECTED) if self.path.exists() else None
            self._check_same_sweep(saved)  # again under the lock: a runner with other settings may have started
            trials = parse_trials(saved, self.path) if saved is not None else []
            yield trials
            atomic.write_text(self.path, json.dumps({**self.header, "trials": [asdict(t) for t in trials]}, indent=1))
        finally:
            os.close(fd)  # releases the lock

    def check_same_sweep(self) -> None:
        """A sweep directory holds one sweep, as a W&B sweep has one configuration: a runner started on it with
        another sweep file configuration or other trial overrides than its trials ran with would add trials not
        comparable with them (and hand the engine a history it did not propose), so it stops in one line. Until a
        trial has run (every one so far refused its settings before it started) the settings may change: they are
        what is being fixed. A state.json from before the state kept them is not checked."""
        self._check_same_sweep(load_json(self.path, SweepFileError, STATE_EXPECTED) if self.path.exists() else None)

    def _check_same_sweep(self, saved: Any) -> None:  # noqa: ANN401 (state.json as read)
        if not isinstance(saved, dict) or "config" not in saved:
            return
        ran = [t for t in parse_trials(saved, self.path) if t.history or t.state in ("running", "finished", "stopped")]
        if not ran:
            return
        differences = []
        now = json.loads(json.dumps(self.header["config"]))
        keys = sorted((set(saved["config"]) | set(now)) - LABELS, key=str)
        changed = [k for k in keys if saved["config"].get(k) != now.get(k)]
        if changed:
            differences.append(f"the sweep file's {', '.join(changed)} differ from those they ran with")
        before, after = saved.get("overrides") or [], self.header["overrides"]
        if before != after:
            differences.append(
                f"they ran with the overrides {' '.join(before) or '(none)'}, not {' '.join(after) or '(none)'}"
            )
        if differences:
            raise SweepFileError(
                f"{self.out_dir} holds {counted(len(ran), 'trial')} of a sweep started with other "
                f"settings: {'; '.join(differences)}. New trials would not be comparable with them: give the settings "
                "it was started with to continue it, or another --out for a new sweep."
            )

    def read(self) -> list[TrialRecord]:
        """The trials as last written (no lock needed: state.json is only ever replaced whole)."""
        return load_state(self.path) if self.path.exists() else []


# -- runners ---------------------------------------------------------------------------------------------------------
def runner_claim(out_dir: Path, runner_id: str) -> Claim:
    return Claim(out_dir / "runners" / f"{runner_id}.lock", f"sweep runner {runner_id} of {out_dir}")


def runner_alive(out_dir: Path, runner_id: Optional[str]) -> bool:
    return bool(runner_id) and is_held(out_dir / "runners" / f"{runner_id}.lock")
