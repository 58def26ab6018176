"""LightningModule: wires Lightning to the run's training algorithm (``training/``), evaluation to halting and the
optimizer. The rest is components it calls: ``evaluation``, ``checkpoint`` (the format), ``ema.EMA`` and ``optim``."""

from __future__ import annotations

import os
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from loopformer.batch import Batch
from loopformer.checkpoint import format as ckpt_format
from loopformer.checkpoint import warm_start
from loopformer.config_groups import to_plain, typed
from loopformer.ema import EMA
from loopformer.evaluation.cadence import no_evaluation_note
from loopformer.evaluation.compute_report import ComputeReport
from loopformer.evaluation.depth_curve import DepthCurve
from loopformer.evaluation.evaluators import (
    ACTMetrics,
    ARCVoting,
    Evaluator,
    PredictionPictures,
    eval_summary,
    run_to_halt,
)
from loopformer.evaluation.options import EvalOptions
from loopformer.evaluation.predictions import PredictionWriter
from loopformer.model import ACTCarry, ArchConfig, LoopTransformer, RuntimeConfig
from loopformer.model.compute import compute_cost
from loopformer.model.summary import describe
from loopformer.model.training_step import ACTTrainingStep
from loopformer.runs.attention import ResolveAttention
from loopformer.runs.compiled import RecordCompiledStep
from loopformer.runs.directory import run_directory
from loopformer.training import training_algorithm
from loopformer.training.budget import BudgetConfig, TrainingBudget, train_flops_per_example
from loopformer.training.config import EMAConfig, TrainConfig, network_config
from loopformer.training.nonfinite import NonFiniteWatch
from loopformer.training.optimization import (
    OptimConfig,
    apply_optim_settings,
    configure_optimizers,
    optim_changes,
    puzzle_embedding_step,
    schedule_change,
    schedule_multiplier,
)
from loopformer.training.scores import IntervalScores, logs_written_this_batch


class LoopformerModule(L.LightningModule):
    def __init__(
        self,
        arch: ArchConfig = ArchConfig(),
        train: TrainConfig = TrainConfig(),
        runtime: RuntimeConfig = RuntimeConfig(),
        optim: OptimConfig = OptimConfig(),
        ema: EMAConfig = EMAConfig(),
        eval: EvalOptions = EvalOptions(),  # --model.eval.*
        budget: BudgetConfig = BudgetConfig(),
        init_from: Optional[str] = None,
        freeze: Optional[list[str]] = None,
    ) -> None:
        """
        Args:
            arch: The looped transformer: states, loop schedule, sizes.
            train: The training algorithm (act or dis) and its settings, the halting included.
            runtime: How the network runs: attention backend, forward dtype, gradient checkpointing, compilation.
            optim: Optimizer, learning-rate schedule and the puzzle embeddings' update.
            ema: An exponential moving average of the weights, for validation and checkpoints.
            eval: What evaluation reports besides its metrics: pictures, ARC pass@k, depth curves.
            budget: Training length and evaluation cadence in training FLOPs (equal-compute sweeps), instead of
                the trainer's steps.
            init_from: Start fit from this checkpoint's network weights (ours or an imported one); the optimizer,
                schedule and step start fresh. Ignored when resuming with --ckpt_path.
            freeze: Parameter-name patterns (fnmatch) kept fixed, e.g. ``inner.puzzle_emb.weights`` or
                ``inner.state_modules.*``; a pattern that matches nothing is an error.
        """
        super().__init__()
        self.arch, self.train_config = typed(ArchConfig, arch), typed(TrainConfig, train)
        self.runtime, self.optim = typed(RuntimeConfig, runtime), typed(OptimConfig, optim)
        self.ema_config, self.eval_options = typed(EMAConfig, ema), typed(EvalOptions, eval)
        self.budget = typed(BudgetConfig, budget)
        self.train_config.check(self.arch)
        self.runtime.check(self.arch)
        # Plain dicts in the hyperparameters keep checkpoints loadable with torch.load(weights_only=True).
        arch, train, runtime = to_plain(self.arch), to_plain(self.train_config), to_plain(self.runtime)
        optim, ema, eval = to_plain(self.optim), to_plain(self.ema_config), to_plain(self.eval_options)
        budget = to_plain(self.budget)
        self.save_hyperparameters()
        self.net: Optional[LoopTransformer] = None
        self.act_training_step: Optional[ACTTrainingStep] = None  # the ACT step with its loss
        self.carry: Optional[ACTCarry] = None
        self.dataset_dims: Optional[dict[str, int]] = None
        self.evaluators: list[Evaluator] = []
        self.predictions: Optional[PredictionWriter] = None
        self._carry_restored = False
        self._checkpoint_step: Optional[int] = None  # training step of the checkpoint loaded, if any
        self._schedule_steps: Optional[float] = None  # the steps the learning-rate schedule spans
        self._checkpoint_schedule_steps: Optional[float] = None  # those of the checkpoint's run, where it says
        self._checkpoint_optim: Optional[dict[str, Any]] = None  # the optimizer settings of the checkpoint's run
        self.compute_report = ComputeReport()
        self.init_from, self.frozen_patterns = init_from, list(freeze or [])
        self._initialised_from: Optional[str] = None  # what init_from loaded, reported at the start of fit
        self._puzzle_table_frozen = False
        self.algorithm = training_algorithm(self.train_config)  # ACT, or DIS (which steps the optimizer itself)
        self.automatic_optimization = self.algorithm.automatic_optimization
        self.nonfinite = NonFiniteWatch()
        self.train_scores = IntervalScores()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> LoopformerModule:  # type: ignore[override]
        """Lightning's, with hyperparameters of checkpoints from before the config groups migrated."""
        groups = ckpt_format.read_hyperparameters(checkpoint_path)
        given = {k: groups[k] for k in ckpt_format.GROUPS if k in groups}
        given["init_from"] = None  # the loaded weights are the ones wanted, not those the run started from
        return super().load_from_checkpoint(checkpoint_path, *args, **{**given, **kwargs})

    # ------------------------------------------------------------------------------------------------
    def build(self, dims: dict[str, int]) -> None:
        """Create the network once the dataset's sizes are known."""
        if self.net is not None:
            if dims != self.dataset_dims:
                raise ValueError(f"model was built for dataset sizes {self.dataset_dims}, the data has {dims}.")
            return
        self.dataset_dims = dict(dims)
        self.net = LoopTransformer(network_config(self.arch, self.train_config, self.runtime, dims))
        if self.frozen_patterns:
            frozen, self._puzzle_table_frozen = warm_start.freeze(self.net, self.frozen_patterns)
            table = " and the puzzle-embedding table" if self._puzzle_table_frozen else ""
            rank_zero_info(
                f"model.freeze: {frozen} parameter tensor(s){table} kept fixed ({', '.join(self.frozen_patterns)})"
            )
        self.act_training_step = ACTTrainingStep(self.net, self.train_config.loss_type, self.train_config.loss_head)
        if self.runtime.compile:
            self.net.compile_step(self.runtime.compile_mode)
            self.act_training_step.compile(self.runtime.compile_mode)

    def meta_network(self, dims: dict[str, int]) -> LoopTransformer:
        """The network these settings build for data of ``dims``, on the meta device: its weights' names and shapes
        for the checks before a run, no memory."""
        with torch.device("meta"):
            return LoopTransformer(network_config(self.arch, self.train_config, self.runtime, dims))

    def check_warm_start(self, dims: dict[str, int]) -> None:
        """``model.init_from`` and ``model.freeze`` against the network these settings build for data of ``dims``,
        before the run starts; ``build`` applies them."""
        if not (self.init_from or self.frozen_patterns):
            return
        net = self.meta_network(dims)
        if self.init_from:
            warm_start.check_initial_weights(
                warm_start.network_weights(self.init_from), net.state_dict(), self.init_from
            )
        if self.frozen_patterns:
            warm_start.freeze(net, self.frozen_patterns)

    def global_batch_size(self) -> int:
        return self.trainer.datamodule.global_batch_size

    def examples_per_step(self) -> int:
        """Examples behind one optimizer step, all processes: the global batch, times the batches Lightning
        accumulates into one step (``trainer.accumulate_grad_batches``)."""
        return self.global_batch_size() * max(1, int(self.trainer.accumulate_grad_batches))

    def train_flops_per_step(self) -> int:
        """Training FLOPs of one optimizer step, all processes (``training/budget.py``), from the config and the
        data's sizes: known before the network is built."""
        dims = self.dataset_dims or self.trainer.datamodule.dims
        config = (
            self.net.config
            if self.net is not None
            else network_config(self.arch, self.train_config, self.runtime, dims)
        )
        return train_flops_per_example(compute_cost(config), self.train_config) * self.examples_per_step()

    def configure_model(self) -> None:
        if self.net is None and self._trainer is None:
            return  # load_from_checkpoint: on_load_checkpoint builds from the stored dataset sizes
        if self.net is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "dims"):
                raise RuntimeError("LoopformerModule needs a PuzzleDataModule (its dims size the model).")
            self.build(datamodule.dims)
            if self.init_from and self.trainer.state.fn == "fit":
                # A checkpoint being resumed is restored after this and replaces these weights (on_fit_start says so).
                self._initialised_from = warm_start.load_initial_weights(self.net, self.init_from)

    def configure_callbacks(self) -> list[L.Callback]:
        callbacks: list[L.Callback] = [ckpt_format.CheckpointDirCheck(), ResolveAttention(), self.compute_report]
        if self.ema_config.enabled:
            callbacks.append(EMA(self.ema_config.rate))
        if self.budget.enabled:
            callbacks.append(TrainingBudget(self.budget))
        if self.runtime.compile:
            callbacks.append(RecordCompiledStep())
        return callbacks

    # -- training --------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # A fresh carry at the start of fit, unless a checkpoint being resumed just restored one.
        if not self._carry_restored:
            self.carry = None
        self._carry_restored = False
        rank_zero_info(describe(self.net))
        if self._initialised_from is not None:
            resumed = self._checkpoint_step is not None
            rank_zero_info(f"model.init_from: {'ignored, resuming instead' if resumed else self._initialised_from}")
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything (none with seed_everything: false)
        # Lightning's fast_dev_run writes no checkpoint, config or log; only the pictures of its evaluation
        contents = (
            "fast_dev_run: predictions/ only"
            if self.trainer.fast_dev_run
            else "checkpoints/, predictions/, config.yaml"
        )
        rank_zero_info(
            f"run directory: {run_directory(self.trainer)} ({contents})"
            + (f"; seed {seed}" if seed is not None else "")
        )

    def on_train_start(self) -> None:
        """A run resumed with another step limit (or budget), or other ``model.optim`` settings, than its
        checkpoint's run: from the first resumed step the learning-rate schedule spans the new length and the
        optimizer takes the new settings (the restored optimizer holds the old ones), and the run says so."""
        note = no_evaluation_note(self.trainer, self.train_config.optimizer_steps_per_batch)
        if note:
            rank_zero_info(note)
        planned, now = self._checkpoint_schedule_steps, self._schedule_steps
        if self._checkpoint_step is None:
            return
        respanned = planned is not None and now is not None and planned != now
        changes = optim_changes(self._checkpoint_optim, self.optim)
        if not (respanned or changes):
            return
        scheduler = self.lr_schedulers()
        if respanned:
            rank_zero_info(schedule_change(self.optim, planned, now, self._checkpoint_step))
        if changes:
            apply_optim_settings(scheduler.optimizer, scheduler, self.net, self.optim)
            rank_zero_info(
                f"model.optim: {', '.join(changes)} (the checkpoint's run had the first): from step "
                f"{self._checkpoint_step} the optimizer follows them, its moment estimates carried over."
            )
        groups = scheduler.optimizer.param_groups
        for group, base, rule in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["lr"] = base * rule(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in groups]

    def forward(self, carry: ACTCarry, batch: Batch):
        return self.net(carry, batch)

    def training_step(self, batch: Batch, batch_idx: int) -> Optional[torch.Tensor]:
        self._log_learning_rate()
        return self.algorithm.training_step(self, batch)

    def _log_learning_rate(self) -> None:
        """``train/lr``: ``model.optim.lr`` on the schedule at this step (the batch's first with DIS), as TRM logs
        it; with muon, the AdamW part's (the Muon part follows the same multiplier). Only at the steps whose logs
        Lightning writes (its own LearningRateMonitor asks the same): a host number becomes a device tensor."""
        if not logs_written_this_batch(self.trainer):
            return
        multiplier = schedule_multiplier(self.optimizers(use_pl_optimizer=False))
        self.log("train/lr", self.optim.lr * multiplier, on_step=True, on_epoch=False, batch_size=1)

    def log_scores(self, sums: dict[str, torch.Tensor], batch_size: int) -> None:
        """Scores over the rows that halted since the last logging interval (``training.scores``)."""
        log = self.train_scores.add(sums)
        self.log_dict(log, prog_bar=False, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("train/exact", log["train/exact_accuracy"], prog_bar=True, logger=False)

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        if logs_written_this_batch(self.trainer) or not self.trainer.log_every_n_steps:  # 0: no logs, check each
            self.train_scores.reset()
            self.nonfinite.check(self.trainer.strategy, self.trainer.world_size)  # where logging syncs anyway

    def on_train_end(self) -> None:
        self.nonfinite.check(self.trainer.strategy, self.trainer.world_size)

    def puzzle_table_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The puzzle-embedding table's sign-SGD step, in the same optimizer step as the other weights."""
        table = self.net.puzzle_table
        if self._puzzle_table_frozen and table is not None:
            table.used.clear()  # frozen: the rows' gradients are not wanted
        else:
            puzzle_embedding_step(
                self.net, optimizer, self.optim, self.all_gather if self.trainer.world_size > 1 else None
            )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norms = [p.grad.detach().float().norm() for p in self.parameters() if p.grad is not None]
        if norms:
            self.nonfinite.observe(self.global_step, "train/grad_norm", torch.stack(norms).norm())

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.puzzle_table_step(optimizer)  # in the same optimizer step (one global_step)

    def configure_optimizers(self) -> Any:
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        self._schedule_steps = float(total)
        return configure_optimizers(self.net, self.optim, total)

    # -- evaluation ------------------------------------------------------------------------------------
    def on_validation_start(self) -> None:
        # As in HRM/TRM, training resumes with a fresh carry after an evaluation. Dropping it when the
        # evaluation starts also keeps it out of the checkpoint saved after the evaluation, so a resumed
        # run continues exactly as an uninterrupted one.
        self.carry = None

    def _start_evaluation(self, pictures: bool) -> None:
        self.evaluators = [ACTMetrics(self.train_config.loss_type)]
        arc_sets = getattr(getattr(self.trainer, "datamodule", None), "arc_sets", None)
        if arc_sets:
            self.evaluators.append(ARCVoting(arc_sets, tuple(self.eval_options.arc_pass_k)))
        if pictures and self.eval_options.num_pictures > 0:
            self.evaluators.append(PredictionPictures(self.eval_options.num_pictures))
        if self.eval_options.depth_curve and self.trainer.state.fn in ("validate", "test"):
            self.evaluators.append(DepthCurve(self.net, self.eval_options.depth_curve))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        outputs, steps = run_to_halt(self.net, batch)
        for evaluator in self.evaluators:
            evaluator.add(batch, outputs, steps, batch_idx)

    test_step = validation_step

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation(pictures=True)

    def on_test_epoch_start(self) -> None:
        self._start_evaluation(pictures=False)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _finish_evaluation(self, prefix: str) -> None:
        evaluators, self.evaluators = self.evaluators, []
        if self.trainer.sanity_checking or not evaluators:
            return
        metrics = evaluators[0].finish(self.trainer, self, prefix)
        if not metrics:  # no batch was evaluated
            return
        for evaluator in evaluators[1:]:
            metrics.update(evaluator.finish(self.trainer, self, prefix))
        metrics.update(self.compute_report.evaluation_metrics(self, prefix, metrics))
        # Logged once per evaluation, never during training: hyperband counts these reports.
        self.log_dict(metrics, sync_dist=False)
        self.log(f"{prefix}/exact", metrics[f"{prefix}/exact_accuracy"], prog_bar=True, logger=False)
        if self.trainer.is_global_zero:
            line = eval_summary(prefix, self.trained_steps, metrics)
            bar = self.trainer.progress_bar_callback
            if hasattr(bar, "print"):  # through the bar, so that its lines stay intact
                bar.print(line)
            else:
                rank_zero_info(line)

    @property
    def trained_steps(self) -> int:
        """Optimizer steps behind the weights: the trainer's count while fitting; outside fit (validate, test
        with --ckpt_path) the trainer counts from 0, so the checkpoint's own step."""
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        return self.global_step if fitting or self._checkpoint_step is None else self._checkpoint_step

    def on_predict_epoch_start(self) -> None:
        self.predictions = PredictionWriter()

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        outputs, steps = run_to_halt(self.net, batch)
        return self.predictions.add(batch, outputs, steps)

    def on_predict_epoch_end(self) -> None:
        self.predictions.finish(self.trainer)

    # -- checkpoints -----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self.nonfinite.check(self.trainer.strategy, self.trainer.world_size)  # before anything is written
        carry = self.carry.to_dict() if self.carry is not None else None
        rank_states = ckpt_format.gather_rank_states(ckpt_format.rank_training_state(carry))
        ckpt_format.write_training_state(checkpoint, self.dataset_dims, rank_states)
        if self._schedule_steps is not None:
            ckpt_format.extras(checkpoint)["schedule_steps"] = self._schedule_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._checkpoint_step = checkpoint.get("global_step")
        self._checkpoint_schedule_steps = checkpoint.get(ckpt_format.EXTRA_KEY, {}).get("schedule_steps")
        self._checkpoint_optim = (checkpoint.get("hyper_parameters") or {}).get("optim")
        stored = checkpoint.get(ckpt_format.EXTRA_KEY, {}).get("dataset_dims")
        if self.net is None and stored:
            self.build(stored)
        elif stored:
            ckpt_format.check_dataset_dims(checkpoint, self.dataset_dims)
        table = getattr(self.net.puzzle_table, "weights", None)
        rows = ckpt_format.refit_puzzle_tables(checkpoint, table.shape) if table is not None else None
        if rows is not None:
            rank_zero_warn(
                f"the checkpoint's puzzle-embedding table has {rows} rows, the data has {table.shape[0]} puzzle "
                "identifiers: every row starts from the checkpoint's mean row."
            )
        if self._trainer is not None and self.trainer.state.fn == "fit":
            ckpt_format.use_raw_weights(checkpoint)  # resuming training: from the raw weights, not their average
        elif not self.ema_config.enabled and ckpt_format.has_raw_weights(checkpoint):
            rank_zero_info(
                "model.ema.enabled=false: evaluating the checkpoint's raw weights, not their moving average."
            )
            ckpt_format.use_raw_weights(checkpoint)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        state = ckpt_format.read_rank_state(checkpoint, rank, world)
        carry = state.get("act_carry")
        self.carry = ACTCarry.from_dict(carry) if carry is not None else None
        self._carry_restored = self.carry is not None
        ckpt_format.restore_generators(state)
