"""Token losses and the ACT loss: per-sequence mean LM loss plus the halting (Q) losses.

Labels equal to ``IGNORE_LABEL_ID`` count nowhere. Metrics are returned as sums over the rows that
halted at this step and have at least one label, so they can be summed across batches and ranks and
divided by ``count`` at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loopformer.batch import IGNORE_LABEL_ID


def _stablemax_s(x: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    return torch.where(x < 0, 1 / (1 - x + eps), x + 1)


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-token stablemax cross-entropy, computed in float64 as the reference does; 0 where not valid."""
    s = _stablemax_s(logits.to(torch.float64))
    logprobs = torch.log(s / s.sum(-1, keepdim=True))
    picked = torch.gather(logprobs, -1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-token softmax cross-entropy in float32; 0 where not valid."""
    loss = F.cross_entropy(
        logits.to(torch.float32).reshape(-1, logits.shape[-1]),
        torch.where(valid, labels, IGNORE_LABEL_ID).long().reshape(-1),
        ignore_index=IGNORE_LABEL_ID,
        reduction="none",
    )
    return loss.view(labels.shape)


LOSSES = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


def row_scores(logits_BLV: torch.Tensor, labels_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: whether every labelled token is predicted (bool ``[B]``), and the fraction that is (``[B]``,
    0 for a row without labels)."""
    valid_BL = labels_BL != IGNORE_LABEL_ID
    counts_B = valid_BL.sum(-1)
    correct_BL = valid_BL & (logits_BLV.argmax(-1) == labels_BL)
    return correct_BL.sum(-1) == counts_B, (correct_BL.float() / counts_B.clamp_min(1).unsqueeze(-1)).sum(-1)


def act_loss(
    outputs: dict[str, torch.Tensor],
    labels_BL: torch.Tensor,
    halted_B: torch.Tensor,
    steps_B: torch.Tensor,
    loss_type: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns (summed loss over rows, metric sums). The caller divides the loss by the batch size."""
    logits = outputs["logits"]
    valid_BL = labels_BL != IGNORE_LABEL_ID
    counts_B = valid_BL.sum(-1)
    divisor_B1 = counts_B.clamp_min(1).unsqueeze(-1)

    with torch.no_grad():
        seq_correct_B, accuracy_B = row_scores(logits, labels_BL)
        counted_B = halted_B & (counts_B > 0)
        metrics = {
            "count": counted_B.sum(),
            "accuracy": torch.where(counted_B, accuracy_B, 0).sum(),
            "exact_accuracy": (counted_B & seq_correct_B).sum(),
            "q_halt_accuracy": (counted_B & ((outputs["q_halt_logits"] >= 0) == seq_correct_B)).sum(),
            "steps": torch.where(counted_B, steps_B, 0).sum(),
        }

    lm_loss = (LOSSES[loss_type](logits, labels_BL, valid_BL) / divisor_B1).sum()
    q_halt_loss = F.binary_cross_entropy_with_logits(
        outputs["q_halt_logits"], seq_correct_B.to(outputs["q_halt_logits"].dtype), reduction="sum"
    )
    metrics["lm_loss"] = lm_loss.detach()
    metrics["q_halt_loss"] = q_halt_loss.detach()
    q_continue_loss = 0.0
    if "target_q_continue" in outputs:
        q_continue_loss = F.binary_cross_entropy_with_logits(
            outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
        )
        metrics["q_continue_loss"] = q_continue_loss.detach()
    return lm_loss + 0.5 * (q_halt_loss + q_continue_loss), metrics
