"""A rank that dies ends the run at once, with one line saying which.

Without this, the surviving ranks learn of a dead peer only at their next collective, through a long traceback
(gloo) or after the 30-minute NCCL timeout. ``RankWatch`` polls instead: the process that launched the other ranks
(Lightning's subprocess launcher, rank 0) watches their exit codes, and every launched rank watches its launcher.
When one is gone, the watcher prints one line naming it and how it ended, stops the ranks it launched and exits 1.
Under torchrun, a rank watches its agent the same way; other launchers do this job themselves.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Optional

import lightning as L
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from loopformer.runs.stopping import stop_requested

POLL_SECONDS = 0.5
SETTLE_SECONDS = 2.0  # after a failed collective, how long to wait for the peer's death to become visible
_lost: list[str] = []


def lost_rank() -> str:
    """The one line naming a rank that ended during the run, when one did (the CLI prints it instead of the
    traceback of the collective that failed because of it)."""
    return _lost[0] if _lost else ""


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class RankWatch(L.Callback):
    def __init__(self) -> None:
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._launcher_pid: Optional[int] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size == 1 or self._thread is not None:
            return
        launcher = trainer.strategy.launcher
        if isinstance(launcher, _SubprocessScriptLauncher) and trainer.local_rank == 0 and launcher.procs:
            target, args = self._watch_launched, (launcher,)
        elif trainer.local_rank > 0 and os.getppid() != 1:
            self._launcher_pid = os.getppid()
            target, args = self._watch_launcher, (self._launcher_pid, trainer.global_rank)
        else:
            return
        self._done.clear()
        self._thread = threading.Thread(target=target, args=args, name="loopformer-rank-watch", daemon=True)
        self._thread.start()

    def _watch_launched(self, launcher: _SubprocessScriptLauncher) -> None:
        while not self._done.wait(POLL_SECONDS):
            line = self._dead_launched(launcher)
            if line and not self._done.is_set():
                _fail(line + " Stopping the other ranks.")
                for other in launcher.procs:
                    if other.poll() is None:
                        other.kill()
                os._exit(1)

    @staticmethod
    def _dead_launched(launcher: _SubprocessScriptLauncher) -> str:
        for local_rank, proc in enumerate(launcher.procs, start=1):
            code = proc.poll()
            if code is not None and code != 0 and not stop_requested():
                return f"loopformer: error: local rank {local_rank} (pid {proc.pid}) ended during the run ({how_it_ended(code)}); its log is above."
        return ""

    def _watch_launcher(self, launcher_pid: int, rank: int) -> None:
        while not self._done.wait(POLL_SECONDS):
            if os.getppid() != launcher_pid and not self._done.is_set():
                if not stop_requested():
                    _fail(self._launcher_gone(launcher_pid, rank))
                os._exit(1)

    @staticmethod
    def _launcher_gone(launcher_pid: int, rank: int) -> str:
        return f"loopformer: error: rank 0 (pid {launcher_pid}) ended during the run; rank {rank} stops."

    def _explain_failure(self, trainer: L.Trainer) -> None:
        """A collective failed: if a peer died, wait briefly until that is visible and record who it was."""
        launcher = trainer.strategy.launcher
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline and not _lost:
            if isinstance(launcher, _SubprocessScriptLauncher) and launcher.procs:
                line = self._dead_launched(launcher)
            elif self._launcher_pid is not None and os.getppid() != self._launcher_pid:
                line = self._launcher_gone(self._launcher_pid, trainer.global_rank)
            else:
                line = ""
            if line:
                _lost.append(line)
                break
            time.sleep(0.1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._done.set()  # the ranks now leave one by one, each when its own teardown is done

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._done.set()
        self._thread = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._done.set()
        if self._thread is not None and isinstance(exception, Exception) and not stop_requested():
            self._explain_failure(trainer)
        self._thread = None


def _fail(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
