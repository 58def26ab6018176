"""Each evaluation's metrics (and ``compute/train_flops``, the training compute behind them) appended as one JSON
line to a file: how a run reports to the offline sweep runner,
which passes this callback on the trial's command line (``--trainer.callbacks+=...``, see ``sweep/runner.py``).

At the start of fit, one line ``{"_config": {...}}`` comes first: the run's resolved architecture
(``model.arch``) and its compute fields (``compute/*``, ``compute/train_flops_per_step`` included), what a W&B run keeps as its run config, so that a sweep
report can name each run's schedule and compute."""

from __future__ import annotations

import json

import lightning as L

from loopformer.evaluation.compute_report import TRAIN_FLOPS, TRAIN_FLOPS_PER_STEP


def metrics_file_flag(path: str) -> str:
    """The command-line flag that adds this callback to a ``loopformer fit/validate/test`` run."""
    spec = {"class_path": f"{__name__}.EvalMetricsFile", "init_args": {"path": str(path)}}
    return f"--trainer.callbacks+={json.dumps(spec)}"


CONFIG_KEY = "_config"


class EvalMetricsFile(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or getattr(pl_module, "arch", None) is None:
            return
        from loopformer.config_groups import to_plain
        from loopformer.model.compute import compute_cost

        config = {"model": {"arch": to_plain(pl_module.arch)}, **compute_cost(pl_module.net.config).as_config()}
        config[TRAIN_FLOPS_PER_STEP] = pl_module.train_flops_per_step()
        self._write({CONFIG_KEY: config})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._append(trainer, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._append(trainer, "test")

    def _append(self, trainer: L.Trainer, prefix: str) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        alias = f"{prefix}/exact"  # the progress bar's short name of exact_accuracy
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if (k.startswith(f"{prefix}/") and k != alias) or k == TRAIN_FLOPS
        }
        if metrics:
            self._write({"_step": trainer.global_step, **metrics})

    def _write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
