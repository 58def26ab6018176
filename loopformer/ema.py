"""Exponential moving average of the trainable weights (not the puzzle-embedding table, not buffers).

Validation during fit uses the averaged weights; checkpoints hold them as their ``state_dict`` (so
``validate/test/predict --ckpt_path`` evaluate them) and keep the raw weights beside them for resuming.

Lightning's ``EMAWeightAveraging`` is not used because it averages every parameter of the LightningModule,
the puzzle-embedding table included, and builds its averaged copy in ``setup``, before ``configure_model``
creates the network from the dataset's sizes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

EXCLUDED_PREFIXES = ("inner.puzzle_emb.",)


class WeightEMA:
    def __init__(self, net: nn.Module, rate: float) -> None:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"model.ema_rate must lie in (0, 1), got {rate}.")
        self.rate = rate
        self.net = net
        self.shadow = {name: p.detach().clone() for name, p in self._params()}
        self._raw: dict[str, torch.Tensor] | None = None

    def _params(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.net.named_parameters():
            if p.requires_grad and not name.startswith(EXCLUDED_PREFIXES):
                yield name, p

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self._params():
            self.shadow[name].mul_(self.rate).add_(p.detach(), alpha=1.0 - self.rate)

    @torch.no_grad()
    def swap_in(self) -> None:
        """Put the averaged weights in the network (keeping the raw ones aside)."""
        if self._raw is not None:
            return
        self._raw = {}
        for name, p in self._params():
            self._raw[name] = p.detach().clone()
            p.copy_(self.shadow[name])

    @torch.no_grad()
    def swap_out(self) -> None:
        if self._raw is None:
            return
        for name, p in self._params():
            p.copy_(self._raw[name])
        self._raw = None

    def averaged_state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {prefix + name: t.detach().cpu().clone() for name, t in self.shadow.items()}

    @torch.no_grad()
    def load_averaged_state(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(state[prefix + name])
