"""Fitting stored weights to a network: the rules shared by every path that loads weights into a model it did not
write them from (``--model.init_from``, ``loopformer import-checkpoint``, resuming on a rebuilt dataset)."""

from __future__ import annotations

from typing import Optional

import torch


def refit_puzzle_table(weights: dict[str, torch.Tensor], key: str, shape: torch.Size) -> Optional[int]:
    """A puzzle-embedding table with another number of rows (a rebuilt dataset) but the same width restarts every row
    from its mean row, as HRM does. Returns the table's old row count when it was refitted, else None."""
    table = weights.get(key)
    if table is None or table.shape == shape or table.shape[1:] != shape[1:]:
        return None
    weights[key] = table.float().mean(0, keepdim=True).expand(shape).clone()
    return table.shape[0]


def misfit(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], limit: int = 4) -> str:
    """What keeps ``weights`` from loading into a network whose state dict is ``expected``: missing keys, keys it does
    not have, and shapes that differ, in one phrase; "" when they fit."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    parts = [
        f"missing {missing[:limit]}" if missing else "",
        f"not in this model {unexpected[:limit]}" if unexpected else "",
        ", ".join(f"{k} is {tuple(weights[k].shape)}, here {tuple(expected[k].shape)}" for k in shapes[:limit]),
    ]
    return "; ".join(part for part in parts if part)


def rows_aside(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], key: str
) -> dict[str, torch.Tensor]:
    """``weights`` with the table at ``key`` taken as ``expected``'s where only its row count differs (a table of
    another number of rows is refitted, ``refit_puzzle_table``), for ``misfit`` to judge the rest."""
    stored, wanted = weights.get(key), expected.get(key)
    if stored is not None and wanted is not None and stored.shape[1:] == wanted.shape[1:]:
        return {**weights, key: wanted}
    return weights
