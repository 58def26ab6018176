"""Prompt, clean exits when a sweep agent stops a run.

The agent sends SIGTERM to the process it started (the DDP launcher, rank 0) and SIGKILL 30 s later.
Lightning's handler forwards SIGTERM to the other ranks and stops at the next batch; this callback adds a
watchdog so that a rank stuck in a long evaluation batch still exits before the agent's SIGKILL, and the CLI
exits with 128 + SIGTERM so W&B does not record a stopped run as finished.
"""

from __future__ import annotations

import os
import signal
import threading

import lightning as L

STOPPED_EXIT_CODE = 128 + signal.SIGTERM
STOPPED_SUMMARY_KEY = "stopped_by_signal"  # in a stopped run's W&B summary, read by the sweep report
_stop_requested = threading.Event()


def stop_requested() -> bool:
    """Whether this process was asked to stop. Once it was, a peer rank leaving mid-collective is expected and
    whatever error that raises here is part of stopping, not a failure of the run."""
    return _stop_requested.is_set()


class ExitPromptlyOnSigterm(L.Callback):
    def __init__(self, grace_seconds: float = 20.0) -> None:
        self.grace_seconds = grace_seconds
        self._previous = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ANN001 (signal handler signature)
        _stop_requested.set()
        watchdog = threading.Timer(self.grace_seconds, os._exit, args=(STOPPED_EXIT_CODE,))
        watchdog.daemon = True
        watchdog.start()
        if callable(self._previous):
            self._previous(signum, frame)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def finish_stopped_run() -> None:
    """Mark an active W&B run as stopped by the signal (non-zero exit code) before exiting."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.summary[STOPPED_SUMMARY_KEY] = True  # W&B records a non-zero exit as "failed"
            wandb.run.finish(exit_code=STOPPED_EXIT_CODE)
    except Exception:  # noqa: BLE001 - exiting anyway; W&B records the process exit code
        pass
