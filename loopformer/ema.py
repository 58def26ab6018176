"""Exponential moving average of the trainable weights (not the puzzle-embedding table, not buffers), as a Callback
in the shape of Lightning's weight-averaging callbacks.

Validation during fit uses the averaged weights; checkpoints hold them as their ``state_dict`` (so
``validate/test/predict --ckpt_path`` evaluate them) and keep the raw weights beside them for resuming (see
``loopformer.checkpoint``).

Lightning's ``EMAWeightAveraging`` is not used because it averages every parameter of the LightningModule,
the puzzle-embedding table included, and builds its averaged copy in ``setup``, before ``configure_model``
creates the network from the dataset's sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import lightning as L
import torch
from torch import nn

from loopformer.checkpoint import format as ckpt_format
from loopformer.errors import ConfigError
from loopformer.model import PUZZLE_EMB_PREFIX


class WeightEMA:
    """The averaged copy of a network's trainable weights, and exact swaps of it into the network."""

    def __init__(self, net: nn.Module, rate: float) -> None:
        if not 0.0 < rate < 1.0:
            raise ConfigError(f"model.ema.rate must lie in (0, 1), got {rate}.")
        self.rate = rate
        self.net = net
        self.shadow = {name: p.detach().clone() for name, p in self._params()}
        self._raw: Optional[dict[str, torch.Tensor]] = None

    def _params(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.net.named_parameters():
            if p.requires_grad and not name.startswith(PUZZLE_EMB_PREFIX):
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

    def raw_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The raw weights kept aside while the average is swapped in (empty otherwise)."""
        return {prefix + name: t.detach().cpu().clone() for name, t in (self._raw or {}).items()}

    @torch.no_grad()
    def load_averaged_state(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(state[prefix + name])


class EMA(L.Callback):
    """Averages ``pl_module.net`` after every optimizer step; swaps the average in for validation."""

    def __init__(self, rate: float = 0.999) -> None:
        self.rate = rate
        self.average: Optional[WeightEMA] = None
        self._resumed_average: Optional[dict[str, torch.Tensor]] = None
        self._last_step: Optional[int] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Built here, after the strategy moved the network to its device.
        if self.average is None:
            self.average = WeightEMA(pl_module.net, self.rate)
            if self._resumed_average is not None:
                self.average.load_averaged_state(self._resumed_average, ckpt_format.NET_PREFIX)
                self._resumed_average = None
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        # Once per optimizer step (not per accumulated batch; once per DIS batch of several steps, as VRN), before a
        # checkpoint callback saves this step.
        if self.average is not None and trainer.global_step != self._last_step:
            self.average.update()
            self._last_step = trainer.global_step

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is not None:
            self.average.swap_in()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is not None:
            self.average.swap_out()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.average is not None:
            raw = {**checkpoint["state_dict"], **self.average.raw_state(ckpt_format.NET_PREFIX)}
            averaged = self.average.averaged_state(ckpt_format.NET_PREFIX)
            ckpt_format.store_averaged_weights(checkpoint, raw, averaged)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resumed_average = ckpt_format.averaged_weights(checkpoint)
