"""Token losses and the ACT loss: per-sequence mean LM loss plus the halting (Q) losses.

Labels equal to ``IGNORE_LABEL_ID`` count nowhere. Metrics are returned as sums over the rows that
halted at this step and have at least one label, so they can be summed across batches and ranks and
divided by ``count`` at the end.
"""

from __future__ import annotations

from typing import Optional

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


def cross_entropy_loss(
    outputs: dict[str, torch.Tensor],
    labels_BL: torch.Tensor,
    loss_type: str,
    mask_penalty_weight: float = 0.0,
    mask_token_id: Optional[int] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VRN's CrossEntropyLossHead: (token-mean LM loss over the batch's labelled tokens, metric sums over rows with
    labels). With ``mask_penalty_weight``, the probability given to the mask token where the target is a real
    token is added (summed, then averaged over the tokens with the LM loss)."""
    logits = outputs["logits"]
    valid_BL = labels_BL != IGNORE_LABEL_ID
    counts_B = valid_BL.sum(-1)
    with torch.no_grad():
        seq_correct_B, accuracy_B = row_scores(logits, labels_BL)
        counted_B = counts_B > 0
        metrics = {
            "count": counted_B.sum(),
            "accuracy": torch.where(counted_B, accuracy_B, 0).sum(),
            "exact_accuracy": (counted_B & seq_correct_B).sum(),
        }
    total = LOSSES[loss_type](logits, labels_BL, valid_BL).sum()
    penalty = torch.zeros((), device=logits.device)
    if mask_penalty_weight and mask_token_id is not None:
        not_mask_BL = valid_BL & (labels_BL != mask_token_id)
        mask_prob_BL = F.softmax(logits.to(torch.float32), dim=-1)[..., mask_token_id]
        penalty = (mask_prob_BL * not_mask_BL.float()).sum() * mask_penalty_weight
    tokens = valid_BL.sum().clamp_min(1).float()
    loss = (total + penalty) / tokens
    metrics["lm_loss"] = loss.detach()
    metrics["mask_penalty"] = penalty.detach() / tokens
    return loss, metrics


def dis_target(
    labels_BL: torch.Tensor,
    inputs_BL: torch.Tensor,
    step: int,
    total_steps: int,
    mask_token_id: int,
    noise_BL: torch.Tensor,
) -> torch.Tensor:
    """DIS's intermediate target for supervision step ``step`` (0-based) of ``total_steps``: the labels with the
    tokens whose noise is below ``1 - (step + 1) / total_steps`` replaced by the mask token (linear schedule; one
    noise draw per batch, so the masks shrink monotonically and the last step's target is the labels). Labels
    that are ignored, and clues (where the input already equals the label), are never masked."""
    rate = 1.0 - (step + 1) / total_steps
    hidden_BL = (noise_BL < rate) & (labels_BL != IGNORE_LABEL_ID)
    if inputs_BL.shape == labels_BL.shape:
        hidden_BL = hidden_BL & (inputs_BL.to(labels_BL.dtype) != labels_BL)
    return torch.where(hidden_BL, torch.full_like(labels_BL, mask_token_id), labels_BL)


def dis_improvement_loss(step_losses: list[torch.Tensor]) -> torch.Tensor:
    """DIS's "loss" method: the last step's loss plus ``relu(L_s - L_(s-1))`` for every step that got worse (the
    earlier loss held fixed)."""
    total = step_losses[-1]
    for before, after in zip(step_losses[:-1], step_losses[1:], strict=True):
        total = total + torch.relu(after - before.detach())
    return total
