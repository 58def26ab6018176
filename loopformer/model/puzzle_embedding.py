"""Puzzle embeddings at ARC scale (about a million rows): a table that is not an optimizer parameter.

As in HRM/TRM, a training forward copies the rows of the batch's identifiers into a small leaf tensor that
receives the gradient; after each optimizer step ``sign_sgd_step`` gathers those rows' gradients from every
rank and updates only them by sign-SGD with decoupled weight decay: ``w <- w * (1 - lr * wd) - lr * sign(g)``.
So there is no dense gradient and no optimizer state for the table.

The table is kept out of the module's registered buffers (it still is in ``state_dict``, under
``<prefix>weights``, and follows ``.to()``), so DDP does not broadcast it at every forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Optional

import torch
from torch import nn


class SparsePuzzleEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.weights = torch.zeros(num_embeddings, dim)  # zero-initialised, as the reference models
        # Rows used by each training forward since the last update (grad leaves), and their identifiers: several
        # when one optimizer step follows several forwards (DIS's loss method, gradient accumulation).
        self.used: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def num_embeddings(self) -> int:
        return self.weights.shape[0]

    def rows(self, ids_B: torch.Tensor) -> torch.Tensor:
        """The rows of ``ids_B`` in float32 (identifiers past the table read the blank row 0). In a training forward
        they are a fresh grad leaf, kept for ``sign_sgd_step``; the forward pass takes them as an input, so the
        compiled step never creates a leaf of its own."""
        ids_B = torch.where(ids_B >= self.num_embeddings, 0, ids_B)
        if not (self.training and torch.is_grad_enabled()):
            return self.weights[ids_B]
        local = self.weights[ids_B].detach().clone().requires_grad_(True)
        self.used.append((local, ids_B.detach().clone()))
        return local

    def warn_unknown(self, ids_B: torch.Tensor) -> None:
        """Warn about identifiers past the table (an evaluation on data built after the model; a sync)."""
        if bool((ids_B >= self.num_embeddings).any()):
            unknown = sorted(set(ids_B[ids_B >= self.num_embeddings].tolist()))[:5]
            warnings.warn(
                f"puzzle identifiers {unknown} are not in the {self.num_embeddings}-row embedding table; they use the "
                "blank identifier 0.",
                stacklevel=3,
            )

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
        rows_B, grad_BE = sum_rows_by_id(ids_B.long(), grad_BE)
        updated = self.weights[rows_B] * (1.0 - lr * weight_decay) - lr * torch.sign(grad_BE).to(self.weights.dtype)
        self.weights.index_copy_(0, rows_B, updated)


def sum_rows_by_id(ids_B: torch.Tensor, grad_BE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row ids, summed gradients), as ``ids.unique()`` and an index_add over its inverse give them, in the same
    order and summation order, but in tensors of the batch's fixed size ``B``: ``unique`` has a data-dependent
    size, which forces a device-to-host sync. Slots past the number of distinct ids repeat the last distinct row
    (its id and its summed gradient), so writing all ``B`` rows back writes each row once with one value."""
    B = ids_B.shape[0]
    sorted_B, order_B = ids_B.sort()
    first_B = torch.ones_like(sorted_B, dtype=torch.bool)
    first_B[1:] = sorted_B[1:] != sorted_B[:-1]
    slot_sorted_B = first_B.long().cumsum(0) - 1  # each sorted entry's distinct-id slot
    inverse_B = torch.empty_like(slot_sorted_B).scatter_(0, order_B, slot_sorted_B)
    summed_BE = torch.zeros_like(grad_BE).index_add_(0, inverse_B, grad_BE)
    rows_B = torch.zeros_like(sorted_B).scatter_(0, slot_sorted_B, sorted_B)
    last = slot_sorted_B[-1:]  # distinct ids - 1, kept on the device
    slots_B = torch.minimum(torch.arange(B, device=ids_B.device), last)
    return rows_B[slots_B], summed_BE[slots_B]
