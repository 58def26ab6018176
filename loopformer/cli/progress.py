"""Progress in a log file: when stdout is not a terminal (a sweep agent's log, a batch job, ``| tee``), a plain line
every few seconds instead of tqdm's bar, which writes a carriage-return update per step (thousands of lines in a
file, with ANSI cursor codes)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar

EVERY_S = 10.0  # seconds between two lines


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LineProgress(ProgressBar):
    """``step 1200/3000 (40%) | 8.3 steps/s | elapsed 2m24s, eta 3m36s | train/exact 0.41 val/exact 0.38``, on rank 0,
    every ``every_s`` seconds of training and at its last step. Evaluation lines (``val at step ...``) come through
    ``print`` unchanged."""

    def __init__(self, every_s: float = EVERY_S) -> None:
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._start = self._last = 0.0
        self._last_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, **kwargs, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        now, step = time.monotonic(), trainer.global_step
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if now - self._last < self.every_s and step != total:
            return
        self.print(self.line(trainer, pl_module, step, total, now))
        self._last, self._last_step = now, step

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, total: Any, now: float) -> str:
        rate = (step - self._last_step) / max(now - self._last, 1e-9)
        where = f"step {step}/{total} ({100 * step / total:.0f}%)" if total else f"step {step}"
        timing = f"elapsed {_duration(now - self._start)}"
        if total and rate > 0:
            timing += f", eta {_duration((total - step) / rate)}"
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        return " | ".join(part for part in (where, f"{rate:.2f} steps/s", timing, shown) if part)
