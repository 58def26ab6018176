"""Which attention implementation a run uses, decided once at its start (fit, validate, test or predict), after the
fused kernel checked itself on the device (``kernels.selfcheck``), the same way on every rank."""

from __future__ import annotations

import logging
from typing import Optional

import lightning as L
import torch

from loopformer.kernels.dispatch import resolve_attention
from loopformer.model import set_attention_backend

RESOLVED_KEY = "attention_backend_resolved"


log = logging.getLogger("loopformer.attention")


class ResolveAttention(L.Callback):
    def __init__(self) -> None:
        self.resolved: Optional[str] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def resolve(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.resolved is not None:
            return
        config = pl_module.net.config
        if config.arch.mixer != "attention":
            self.resolved = "none"  # the sequence-MLP mixer has no attention layer
        else:
            resolution = resolve_attention(
                config.runtime.attention_backend,
                pl_module.device,
                getattr(torch, config.runtime.forward_dtype),
                config.arch.head_dim,
                config.total_seq_len,
                agree=self._agree(trainer, pl_module.device) if trainer.world_size > 1 else None,
            )
            # One line: the rank whose check failed says why; rank 0 says so when another rank failed.
            if resolution.warning and (resolution.failed_here or trainer.is_global_zero):
                log.warning("loopformer: warning: %s", resolution.warning)
            set_attention_backend(pl_module.net, resolution.implementation)
            self.resolved = resolution.implementation
        pl_module.attention_backend_resolved = self.resolved
        for logger in trainer.loggers:
            logger.log_hyperparams({RESOLVED_KEY: self.resolved})

    @staticmethod
    def _agree(trainer: L.Trainer, device: torch.device):  # noqa: ANN205
        def every_rank_passed(ok: bool) -> bool:
            flag = torch.tensor(1.0 if ok else 0.0, device=device)
            return bool(trainer.strategy.reduce(flag, reduce_op="min").item() >= 1)

        return every_rank_passed
