"""When a fit evaluates: Lightning's ``val_check_interval`` counted across epochs (``check_val_every_n_epoch:
null``, as the recipes have it) evaluates at every multiple of it, so a run that ends before the next multiple reports
no ``val/`` metric at all; the run says so at its start rather than leaving the metrics missing without a word."""

from __future__ import annotations

from typing import Optional

import lightning as L


def no_evaluation_note(trainer: L.Trainer, steps_per_batch: int = 1) -> Optional[str]:
    """A line where this fit ends (``max_steps``) before its first evaluation, counted from the step it starts at;
    None where it evaluates, counts per epoch, or evaluates nothing by choice (``limit_val_batches: 0``).
    ``steps_per_batch``: the optimizer steps a batch makes (DIS's ``mask`` method: one per supervision step)."""
    interval, limit = trainer.val_check_interval, trainer.limit_val_batches
    if trainer.fast_dev_run or trainer.check_val_every_n_epoch is not None or trainer.max_steps <= 0:
        return None
    if not isinstance(interval, int) or isinstance(interval, bool) or limit == 0:
        return None
    batches_per_step = max(1, int(trainer.accumulate_grad_batches))
    start = trainer.global_step // steps_per_batch * batches_per_step
    end = -(-trainer.max_steps // steps_per_batch) * batches_per_step  # a DIS batch may pass max_steps
    first = (start // interval + 1) * interval  # the batch count of the first evaluation of this run
    if first <= end:
        return None
    return (
        f"no evaluation: this run ends at step {trainer.max_steps}, before its first evaluation (every "
        f"{interval} batches{f' of {steps_per_batch} steps' if steps_per_batch > 1 else ''}: "
        "trainer.val_check_interval); it will report no val/ metric. Give a smaller "
        "--trainer.val_check_interval to evaluate."
    )
