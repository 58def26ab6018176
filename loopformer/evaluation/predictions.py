"""`loopformer predict` output: one ``.npz`` with a row per test example, in dataset order."""

from __future__ import annotations

import os
from typing import Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from loopformer.batch import IGNORE_LABEL_ID, Batch
from loopformer.checkpoint import atomic
from loopformer.runs.directory import run_directory

TOKEN_KEYS = ("inputs", "preds", "labels")


def merge_batches(batches: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Concatenate predict_step outputs (from any number of ranks) and sort the rows by example index."""
    merged = {k: torch.cat([b[k] for b in batches]).cpu().numpy() for k in batches[0]}
    order = np.argsort(merged["example_index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def exact_accuracy(rows: dict[str, np.ndarray]) -> Optional[float]:
    """Fraction of examples whose every labelled token is predicted; None without labels."""
    labels = rows.get("labels")
    if labels is None or labels.size == 0:
        return None
    mask = labels != IGNORE_LABEL_ID
    return float(np.all((rows["preds"] == labels) | ~mask, axis=-1).mean())


def save_predictions(path: str, rows: dict[str, np.ndarray]) -> None:
    """Written atomically: an interrupted write never leaves a partial file."""
    atomic.write_atomically(path, lambda f: np.savez_compressed(f, **rows))


class PredictionWriter:
    """Collects ``predict_step``'s rows on every rank; ``finish`` writes them all, in dataset order, to
    ``<run directory>/predictions.npz`` and prints the exact accuracy where there are labels."""

    def __init__(self) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []

    def add(self, batch: Batch, outputs: dict[str, torch.Tensor], steps: torch.Tensor) -> dict[str, torch.Tensor]:
        keep = batch["example_index"] >= 0 if "example_index" in batch else torch.ones_like(steps, dtype=torch.bool)
        rows = {
            "example_index": batch.get("example_index", torch.arange(steps.shape[0]))[keep],
            "inputs": batch["inputs"][keep],
            "preds": outputs["logits"].argmax(-1)[keep],
            "q_halt_logits": outputs["q_halt_logits"][keep],
            "steps": steps[keep],
        }
        if "labels" in batch:
            rows["labels"] = batch["labels"][keep]
        # tokens as int32 (the dataset's own type): an ARC test set holds hundreds of thousands of 900-token rows
        self.batches.append({k: (v.int() if k in TOKEN_KEYS else v).detach().cpu() for k, v in rows.items()})
        return rows

    def finish(self, trainer: L.Trainer) -> None:
        """Also stores ``vocab``: ``vocab[t]`` is what token id ``t`` stands for in this dataset."""
        path = os.path.join(run_directory(trainer), "predictions.npz")  # a collective: every rank asks
        batches = self.batches
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, batches)
            batches = [b for rank_batches in gathered for b in rank_batches]
        if not trainer.is_global_zero or not batches:
            return
        rows = merge_batches(batches)
        metadata = getattr(getattr(trainer, "datamodule", None), "metadata", None)
        if metadata is not None:
            from loopformer.data.kinds import token_names

            rows["vocab"] = np.array(token_names(metadata))
        save_predictions(path, rows)
        accuracy = exact_accuracy(rows)
        scored = f" (exact_accuracy {accuracy:.4g} against the labels)" if accuracy is not None else ""
        rank_zero_info(f"predictions for {rows['preds'].shape[0]} examples{scored}: {path}")
