"""`loopformer predict` output: one ``.npz`` with a row per test example, in dataset order."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from loopformer.model.losses import IGNORE_LABEL_ID


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
    """Written next to the final name and renamed, so an interrupted write never leaves a partial file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.npz"
    np.savez_compressed(tmp, **rows)
    os.replace(tmp, path)
