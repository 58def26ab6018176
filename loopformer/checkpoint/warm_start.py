"""Starting a run from another run's weights (``--model.init_from``) and keeping parts fixed (``--model.freeze``),
as TRM's ``load_checkpoint`` and ``freeze_weights`` allow.

``init_from`` loads only the network's weights of any loopformer checkpoint (one of ours, or one written by
``loopformer import-checkpoint``; with EMA, the averaged weights evaluation used); the optimizer, the schedule
and the step count start fresh. A puzzle-embedding table with another number of rows restarts every row from the
checkpoint's mean row. The schedule may differ (the same modules run another loop); the modules must fit.

``freeze`` is a list of ``fnmatch`` patterns over parameter names (``inner.embed_tokens.weight``,
``inner.state_modules.z_H.layers.0.mlp.down_proj.weight``, ...) and the puzzle-embedding table
(``inner.puzzle_emb.weights``). Matched parameters keep ``requires_grad = False``, so no optimizer moves them
(no gradient, no weight decay); a matched table skips its sign-SGD step.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import torch
from torch import nn

from loopformer.checkpoint import format as ckpt_format
from loopformer.checkpoint.fitting import misfit, refit_puzzle_table, rows_aside
from loopformer.errors import ConfigError
from loopformer.model import PUZZLE_TABLE_KEY


def network_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's weights in a loopformer checkpoint (keys relative to the ``LoopTransformer``), memory-mapped."""
    checkpoint = ckpt_format.load_checkpoint(path, mmap=True)
    state = checkpoint.get("state_dict")
    weights = (
        {k[len(ckpt_format.NET_PREFIX) :]: v for k, v in state.items() if k.startswith(ckpt_format.NET_PREFIX)}
        if isinstance(state, dict)
        else {}
    )
    if not weights:
        raise ConfigError(
            f"model.init_from {path}: holds no network weights (no 'state_dict' with 'net.' keys); expected a "
            "loopformer checkpoint (from a run, or written by `loopformer import-checkpoint`)."
        )
    return weights


def check_initial_weights(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str | Path
) -> None:
    """``weights`` fit a network whose state dict is ``expected``, but for the puzzle table's row count."""
    details = misfit(rows_aside(weights, expected, PUZZLE_TABLE_KEY), expected)
    if details:
        raise ConfigError(
            f"model.init_from {path}: its weights do not fit this model.arch ({details}); the states' modules, "
            "widths and vocabulary must match (the schedule may differ)."
        )


def load_initial_weights(net: nn.Module, path: str | Path) -> str:
    """Copy the checkpoint's weights into ``net``; returns a one-line account."""
    weights = network_weights(path)
    expected = net.state_dict()
    check_initial_weights(weights, expected, path)
    rows = None
    if PUZZLE_TABLE_KEY in expected:
        rows = refit_puzzle_table(weights, PUZZLE_TABLE_KEY, expected[PUZZLE_TABLE_KEY].shape)
    note = f"; its {rows}-row puzzle-embedding table restarts every row from its mean row" if rows else ""
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})
    return f"weights from {path} (optimizer, schedule and step start fresh){note}"


def freeze(net: nn.Module, patterns: list[str]) -> tuple[int, bool]:
    """Stop the matched parameters from training; returns (parameters frozen, whether the puzzle table is)."""
    names = [name for name, _ in net.named_parameters()]
    has_table = PUZZLE_TABLE_KEY in net.state_dict()
    candidates = names + ([PUZZLE_TABLE_KEY] if has_table else [])
    for pattern in patterns:
        if not fnmatch.filter(candidates, pattern):
            sample = ", ".join(candidates[:4])
            raise ConfigError(
                f"model.freeze pattern {pattern!r} matches no parameter; names look like {sample}, ... "
                f"({len(candidates)} in all; `*` matches any run of characters)."
            )
    frozen = 0
    for name, p in net.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            p.requires_grad_(False)
            frozen += 1
    table = has_table and any(fnmatch.fnmatchcase(PUZZLE_TABLE_KEY, pattern) for pattern in patterns)
    if frozen == len(names) and (table or not has_table):
        raise ConfigError(f"model.freeze {patterns} freezes every parameter and the puzzle embeddings: nothing trains.")
    return frozen, table
