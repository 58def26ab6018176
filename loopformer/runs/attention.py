"""Which attention implementation a run uses, decided once at its start (fit, validate, test or predict), after the
fused kernel checked itself on the device (``kernels.selfcheck``), the same way on every rank."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from loopformer.kernels.dispatch import resolve_attention
from loopformer.runs.directory import record_in_run_config

RESOLVED_KEY = "attention_backend_resolved"
REASON_KEY = "attention_backend_reason"


log = logging.getLogger("loopformer.attention")


class ResolveAttention(L.Callback):
    """Resolves ``pl_module.net.attention`` (the one place the choice is kept), once per network."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolve(trainer, pl_module)

    def resolve(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        choice, config = pl_module.net.attention, pl_module.net.config
        if choice.resolved is not None:
            return
        reason = ""
        if config.arch.mixer != "attention":
            choice.resolved = "none"  # the sequence-MLP mixer has no attention layer
            reason = "the sequence-MLP mixer has no attention"
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
            choice.resolved, reason = resolution.implementation, resolution.reason
        choice.reason = reason
        line = f"attention: {choice.resolved} ({reason})" if reason else f"attention: {choice.resolved}"
        rank_zero_info(line)
        for logger in trainer.loggers:
            logger.log_hyperparams({RESOLVED_KEY: choice.resolved, REASON_KEY: reason})
        record_in_run_config(trainer, line)

    @staticmethod
    def _agree(trainer: L.Trainer, device: torch.device):  # noqa: ANN205
        def every_rank_passed(ok: bool) -> bool:
            flag = torch.tensor(1.0 if ok else 0.0, device=device)
            return bool(trainer.strategy.reduce(flag, reduce_op="min").item() >= 1)

        return every_rank_passed
