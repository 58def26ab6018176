"""Stopping a run without losing it: a checkpoint on SIGTERM and SIGINT, and a time-based ``last.ckpt``.

A sweep agent stops a run with SIGTERM (SIGKILL 30 s later); a cluster scheduler does the same at the end of a job's
time; a user presses Ctrl+C. During ``fit``, ``LastCheckpoint`` turns any of these into: every rank agrees on one
training step (the step at which any rank saw the signal; an all-reduce after each step, only with several
processes), writes ``last.ckpt`` there (the step's checkpoint, resumable exactly as one ModelCheckpoint writes), and
the run exits with 128 + the signal (143 for SIGTERM, 130 for SIGINT), so W&B records it as stopped. A signal that
arrives during an evaluation takes effect after it. A watchdog ends the process at ``grace_seconds`` after the
signal whatever it is doing (a rank stuck in a collective), before the agent's SIGKILL. A second Ctrl+C, more than
2 s after the first, interrupts at once.

Independently of signals, ``last.ckpt`` is written every ``every_minutes`` of training, so that no run loses more
than that to a kill -9, a node failure or a power cut, whatever its evaluation interval; and when training ends, so
that every run that checkpoints leaves ``checkpoints/last.ckpt``, its final state (what ``validate``, ``predict`` and
a resume read).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from loopformer.errors import ConfigError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOPPED_EXIT_CODE = 128 + signal.SIGTERM
STOPPED_SUMMARY_KEY = "stopped_by_signal"  # in a stopped run's W&B summary, read by the sweep report
SECOND_INTERRUPT_AFTER_S = 2.0  # a terminal sends SIGINT to every rank at once: only a later one means "now"

_stop_signal: Optional[int] = None
_stop_requested = threading.Event()


def stop_requested() -> bool:
    """Whether this process was asked to stop. Once it was, a peer rank leaving mid-collective is expected and
    whatever error that raises here is part of stopping, not a failure of the run."""
    return _stop_requested.is_set()


def stopped_exit_code() -> int:
    """128 + the signal that stopped the run (SIGTERM when none was recorded)."""
    return 128 + (_stop_signal or signal.SIGTERM)


def _note_stop(signum: int) -> None:
    global _stop_signal
    if _stop_signal is None:
        _stop_signal = signum
    _stop_requested.set()


class LastCheckpoint(L.Callback):
    def __init__(
        self, every_minutes: float = 5.0, on_signal: bool = True, grace_seconds: float = 25.0, at_end: bool = True
    ) -> None:
        """
        Args:
            every_minutes: Write ``last.ckpt`` beside the run's checkpoints after every this many minutes of training
                (0: never), so that a killed run loses at most this much. Only with checkpointing enabled.
            on_signal: On SIGTERM or SIGINT during fit, write ``last.ckpt`` at the next training step every rank
                agrees on, then exit 143 / 130 (false: Lightning's own handling, no checkpoint, no watchdog).
            grace_seconds: After a signal, end the process at this deadline whatever it is doing (under the 30 s
                a W&B agent waits before SIGKILL).
            at_end: Write ``last.ckpt`` when training ends (after max_steps, max_epochs or early stopping), unless a
                ModelCheckpoint with ``save_last`` just wrote it at that step. Only with checkpointing enabled.
        """
        if not every_minutes >= 0:
            raise ConfigError(f"last_checkpoint.every_minutes must be >= 0 (0: never), got {every_minutes}.")
        if not grace_seconds > 0:
            raise ConfigError(f"last_checkpoint.grace_seconds must be > 0, got {grace_seconds}.")
        self.every_minutes = every_minutes
        self.at_end = at_end
        self.on_signal = on_signal
        self.grace_seconds = grace_seconds
        self._signal: Optional[int] = None
        self._signal_time = 0.0
        self._last_save = 0.0
        self._previous: dict[int, Any] = {}
        self._watchdog: Optional[threading.Timer] = None

    # -- signals -------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = time.monotonic()
        self._signal = None
        if trainer.fast_dev_run:  # no checkpoint, as Lightning says; its save_last at the end of training would
            for callback in trainer.checkpoint_callbacks:  # write one all the same (Lightning 2.6)
                callback._last_checkpoint_saved = True
        if not self.on_signal or threading.current_thread() is not threading.main_thread():
            return  # Lightning's own SIGTERM handling stays
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self._signal is not None:
            if signum == signal.SIGINT and now - self._signal_time > SECOND_INTERRUPT_AFTER_S:
                raise KeyboardInterrupt
            return
        self._signal, self._signal_time = signum, now
        _note_stop(signum)
        self._watchdog = threading.Timer(self.grace_seconds, os._exit, args=(128 + signum,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _restore_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if self._watchdog is not None:  # training has stopped: what is left is a prompt teardown
            self._watchdog.cancel()
            self._watchdog = None

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = last_checkpoint_path(trainer)
        if not self.at_end or path is None:
            return
        callback = trainer.checkpoint_callback
        just_written = callback.save_last and callback._last_global_step_saved == trainer.global_step
        if not (just_written and os.path.isfile(path)):
            trainer.save_checkpoint(path, weights_only=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        stop = self._signal or 0
        minutes = (time.monotonic() - self._last_save) / 60
        due = self.every_minutes > 0 and minutes >= self.every_minutes and trainer.is_global_zero
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # One decision for every rank: any rank's signal, rank 0's clock.
            flags = torch.tensor([int(stop), int(due)], device=pl_module.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            stop, due = int(flags[0]), bool(flags[1])
        if not (stop or due):
            return
        path = last_checkpoint_path(trainer)
        if path is not None:
            start = time.monotonic()
            trainer.save_checkpoint(path, weights_only=False)  # a full checkpoint (and no notice saying so)
            self._last_save = time.monotonic()
            seconds = self._last_save - start
        if not stop:
            return
        _note_stop(stop)  # also on the ranks that did not see the signal themselves
        name = signal.Signals(stop).name
        if path is None:
            rank_zero_info(f"stopping on {name} at step {trainer.global_step} (checkpointing is off: nothing saved)")
        else:
            rank_zero_info(
                f"stopping on {name} at step {trainer.global_step}: {path} written in {seconds:.1f} s; "
                f"resume with --ckpt_path {path}"
            )
        raise SIGTERMException()


def last_checkpoint_path(trainer: L.Trainer) -> Optional[str]:
    """``last.ckpt`` in the first ModelCheckpoint's directory, or None when checkpointing is off (fast_dev_run
    included: Lightning writes no checkpoint in it)."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or not callback.dirpath or trainer.fast_dev_run:
        return None
    return os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)


def finish_stopped_run() -> None:
    """Mark an active W&B run as stopped by the signal (non-zero exit code) before exiting."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.summary[STOPPED_SUMMARY_KEY] = True  # W&B records a non-zero exit as "failed"
            wandb.run.finish(exit_code=stopped_exit_code())
    except Exception:  # noqa: BLE001 - exiting anyway; W&B records the process exit code
        pass
