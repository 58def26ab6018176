"""Puzzle embeddings at ARC scale (about a million rows): a table that is not an optimizer parameter.

As in HRM/TRM, a training forward copies the rows of the batch's identifiers into a small leaf tensor that
receives the gradient; after each optimizer step ``sign_sgd_step`` gathers those rows' gradients from every
rank and updates only them by sign-SGD with decoupled weight decay: ``w <- w * (1 - lr * wd) - lr * sign(g)``.
So there is no dense gradient and no optimizer state for the table.

The table is kept out of the module's registered buffers (it still is in ``state_dict``, under
``<prefix>weights``, and follows ``.to()``), so DDP does not broadcast it at every forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn


class SparsePuzzleEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, cast_to: torch.dtype) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.weights = torch.zeros(num_embeddings, dim)  # zero-initialised, as the reference models
        # Rows used by each training forward since the last update (grad leaves), and their identifiers: several
        # when one optimizer step follows several forwards (DIS's loss method, gradient accumulation).
        self.used: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def num_embeddings(self) -> int:
        return self.weights.shape[0]

    def forward(self, ids_B: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return self.weights[ids_B].to(self.cast_to)
        local = self.weights[ids_B].detach().clone().requires_grad_(True)
        self.used.append((local, ids_B.detach().clone()))
        return local.to(self.cast_to)

    @property
    def local(self) -> Optional[torch.Tensor]:
        """The rows of the last training forward (a grad leaf), or None."""
        return self.used[-1][0] if self.used else None

    @property
    def local_ids(self) -> Optional[torch.Tensor]:
        return self.used[-1][1] if self.used else None

    # -- the table follows the module (devices) and is saved with it, without being a buffer ----------------
    def _apply(self, fn: Callable, recurse: bool = True):  # noqa: ANN202 (nn.Module's signature)
        self.weights = fn(self.weights)
        return super()._apply(fn, recurse)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weights"] = self.weights if keep_vars else self.weights.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:  # noqa: ANN001 (nn.Module's signature)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        key = prefix + "weights"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            missing_keys.append(key)
            return
        value = state_dict[key]
        if value.shape != self.weights.shape:
            error_msgs.append(
                f"size mismatch for {key}: copying a table of shape {tuple(value.shape)}, the model has "
                f"{tuple(self.weights.shape)}."
            )
            return
        with torch.no_grad():
            self.weights.copy_(value)

    # -- the update -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sign_sgd_step(self, lr: float, weight_decay: float, all_gather: Optional[Callable] = None) -> None:
        """Update the rows used since the last step; ``all_gather(t)`` stacks ``t`` from every rank."""
        used = [(local.grad, ids) for local, ids in self.used if local.grad is not None]
        self.used = []
        if not used:
            return
        grad_BE = used[0][0] if len(used) == 1 else torch.cat([g for g, _ in used])
        ids_B = used[0][1] if len(used) == 1 else torch.cat([i for _, i in used])
        if all_gather is not None:
            grad_BE = all_gather(grad_BE).reshape(-1, grad_BE.shape[-1])
            ids_B = all_gather(ids_B).reshape(-1)
        rows, inverse = ids_B.unique(return_inverse=True)
        grad_RE = torch.zeros(rows.shape[0], grad_BE.shape[-1], dtype=grad_BE.dtype, device=grad_BE.device)
        grad_RE.index_add_(0, inverse, grad_BE)
        updated = self.weights[rows] * (1.0 - lr * weight_decay) - lr * torch.sign(grad_RE).to(self.weights.dtype)
        self.weights[rows] = updated
