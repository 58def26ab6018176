"""What became of a compiled step's CUDA graphs, recorded once training ran its first step: when capture failed and
the step went on compiled without them (``model.act.CompiledStep.give_up_graphs``), the reason goes to the loggers'
hyperparameters (``compile_cuda_graphs``) and to the run directory's config.yaml, as a comment."""

from __future__ import annotations

from typing import Any

import lightning as L

from loopformer.model.act import CompiledStep
from loopformer.runs.directory import record_in_run_config

GRAPHS_KEY = "compile_cuda_graphs"


class RecordCompiledStep(L.Callback):
    def __init__(self) -> None:
        self.recorded = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.recorded:
            return
        self.recorded = True
        steps = [getattr(pl_module.net, "_step", None), getattr(pl_module.act_training_step, "_fn", None)]
        compiled = [s for s in steps if isinstance(s, CompiledStep) and s.graphs_wanted]
        if not compiled:  # the same on every rank: the config decides
            return
        failed = [s.graphs_failed for s in compiled if s.graphs_failed]
        status = f"off ({failed[0]})" if failed else "on"
        for logger in trainer.loggers:
            logger.log_hyperparams({GRAPHS_KEY: status})
        record_in_run_config(trainer, f"compiled step: CUDA graphs {status}" if failed else None)
