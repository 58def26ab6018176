"""Evaluation: run every row of a batch to halting, then hand the batch to evaluators.

An evaluator sees each evaluation batch (``add``) and returns its metrics at the end (``finish``); the
LightningModule calls a list of them through this one interface:

- ``ACTMetrics``: exact accuracy, token accuracy, Q-halt accuracy, steps and losses, summed over ranks;
- ``ARCVoting``: the ARC pass@k of HRM/TRM (augmented predictions mapped back and voted, ``arc_eval``) and the
  Kaggle ``submission.json``;
- ``PredictionPictures``: a few predictions next to their labels, as a PNG in the run directory and in W&B.

``finish`` is a collective where an evaluator reduces over ranks: every rank calls it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from loopformer.batch import IGNORE_LABEL_ID, Batch
from loopformer.checkpoint import atomic
from loopformer.data.builders.arc import ARCSet
from loopformer.evaluation.arc import ARCCollector
from loopformer.model import LoopTransformer, act_loss
from loopformer.runs.directory import run_directory

Outputs = dict[str, torch.Tensor]
METRIC_NAMES = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss")


def run_to_halt(net: LoopTransformer, batch: Batch) -> tuple[Outputs, torch.Tensor]:
    """ACT steps until every row halted; each row's outputs are those of its halting step.

    Returns (outputs, steps) with outputs holding logits, q_halt_logits, q_continue_logits.
    """
    carry = net.initial_carry(batch)
    if not net.halts_adaptively:
        # Every row halts at halt_max_steps: a fixed number of steps, and no device-to-host sync to find out.
        for _ in range(net.config.halting.max_steps):
            carry, outputs = net(carry, batch)
        return outputs, carry.steps
    final: Optional[Outputs] = None
    steps = torch.zeros_like(carry.steps)
    done = torch.zeros_like(carry.halted)
    while True:
        carry, outputs = net(carry, batch)
        newly = carry.halted & ~done
        if final is None:
            final = {k: v.clone() for k, v in outputs.items()}
        else:
            for k, v in outputs.items():
                mask = newly.view((-1,) + (1,) * (v.ndim - 1))
                final[k] = torch.where(mask, v, final[k])
        steps = torch.where(newly, carry.steps, steps)
        done = done | carry.halted
        if bool(done.all()):
            return final, steps


def eval_summary(prefix: str, step: int, metrics: dict[str, torch.Tensor]) -> str:
    """One line per evaluation for the terminal, e.g. ``val at step 3000 (1000 puzzles): exact_accuracy 0.962 | ...``;
    on ARC data also the pooled pass@1 and pass@2 (the Kaggle score: two attempts), where they are logged."""
    shown = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "arc/pass@1", "arc/pass@2")
    parts = " | ".join(f"{k} {float(metrics[f'{prefix}/{k}']):.4g}" for k in shown if f"{prefix}/{k}" in metrics)
    return f"{prefix} at step {step} ({int(metrics[f'{prefix}/count'].item())} puzzles): {parts}"


def real_rows(batch: Batch) -> torch.Tensor:
    """Rows that hold an example (padding rows of the last batch have no label)."""
    return batch["labels"].ne(IGNORE_LABEL_ID).any(-1)


class Evaluator:
    def add(self, batch: Batch, outputs: Outputs, steps: torch.Tensor, batch_idx: int) -> None:
        """One evaluation batch, every row run to halting."""

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> dict[str, torch.Tensor]:
        """Metrics named ``<prefix>/<name>`` (may be none); every rank calls it."""
        return {}


class ACTMetrics(Evaluator):
    """The loss head's sums (float64 on the device), reduced over ranks and divided by the example count."""

    def __init__(self, loss_type: str) -> None:
        self.loss_type = loss_type
        self.sums: Optional[dict[str, torch.Tensor]] = None

    def add(self, batch: Batch, outputs: Outputs, steps: torch.Tensor, batch_idx: int) -> None:
        halted = torch.ones_like(steps, dtype=torch.bool)
        _, sums = act_loss(outputs, batch["labels"], halted, steps, self.loss_type)
        if self.sums is None:
            self.sums = {k: torch.zeros((), dtype=torch.float64, device=v.device) for k, v in sums.items()}
        for k, v in sums.items():
            self.sums[k] += v.to(torch.float64)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> dict[str, torch.Tensor]:
        if self.sums is None:
            return {}
        keys = sorted(self.sums)
        totals = trainer.strategy.reduce(torch.stack([self.sums[k] for k in keys]), reduce_op="sum")
        sums = dict(zip(keys, totals, strict=True))
        count = sums["count"].clamp_min(1)
        metrics = {f"{prefix}/{k}": (sums[k] / count).float() for k in METRIC_NAMES}
        metrics[f"{prefix}/count"] = sums["count"].float()
        return metrics


class ARCVoting(Evaluator):
    """pass@k of every ARC set among the data paths, and ``submission.json`` (one per set when there are several:
    ``submission-<set>.json``) rewritten in the run directory at each evaluation."""

    def __init__(self, sets: list[ARCSet], ks: tuple[int, ...]) -> None:
        self.collector = ARCCollector(sets, ks)

    def add(self, batch: Batch, outputs: Outputs, steps: torch.Tensor, batch_idx: int) -> None:
        real = real_rows(batch)
        columns = (batch["puzzle_identifiers"], batch["inputs"], outputs["logits"].argmax(-1), outputs["q_halt_logits"])
        self.collector.add(*(t[real].cpu().numpy() for t in columns))

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> dict[str, torch.Tensor]:
        gathered = None
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, self.collector.rows)
        metrics, submissions = self.collector.compute(gathered)
        root = Path(run_directory(trainer))  # a collective: every rank asks
        if trainer.is_global_zero:
            for name, tasks in submissions.items():
                filename = "submission.json" if len(submissions) == 1 else f"submission-{name}.json"
                atomic.write_text(root / filename, json.dumps(tasks))
        return {f"{prefix}/{k}": torch.tensor(v) for k, v in metrics.items()}


class PredictionPictures(Evaluator):
    """The first batch's first ``count`` real rows: ``<run directory>/predictions/step<N>.png`` and W&B."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.picture: Optional[tuple] = None

    def add(self, batch: Batch, outputs: Outputs, steps: torch.Tensor, batch_idx: int) -> None:
        if batch_idx == 0:
            real = real_rows(batch)
            take = lambda t: t[real][: self.count].cpu().numpy()  # noqa: E731
            self.picture = (take(batch["inputs"]), take(outputs["logits"].argmax(-1)), take(batch["labels"]))

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> dict[str, torch.Tensor]:
        datamodule = getattr(trainer, "datamodule", None)
        if not hasattr(datamodule, "metadata"):
            return {}
        root = Path(run_directory(trainer))  # a collective: every rank asks
        if self.picture is None or not trainer.is_global_zero:
            return {}
        from loopformer.data.show import save_prediction_png

        path = root / "predictions" / f"step{pl_module.trained_steps:07d}.png"
        title = f"{prefix} predictions at step {pl_module.trained_steps}"
        if save_prediction_png(datamodule.metadata, *self.picture, path, title):
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"{prefix}/predictions", images=[str(path)], step=pl_module.global_step)
        return {}
