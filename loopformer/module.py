"""LightningModule: ACT training with the carry kept across steps, evaluation to halting, metrics, optimizer."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from loopformer.arc_eval import ARCCollector
from loopformer.ema import WeightEMA
from loopformer.list_overrides import to_plain
from loopformer.loggers import append_eval_metrics
from loopformer.model import IGNORE_LABEL_ID, ACTCarry, LoopTransformer, LoopTransformerConfig, act_loss
from loopformer.model.config import (
    AttentionBackend,
    ForwardDtype,
    LossType,
    Mixer,
    PosEncoding,
    StageSpec,
    StateSpec,
    default_three_stage_stages,
    default_three_stage_states,
)
from loopformer.predictions import exact_accuracy, merge_batches, save_predictions
from loopformer.run_dir import run_directory
from loopformer.schedule import warmup_cosine

DATASET_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(LoopTransformerConfig) if f.name not in DATASET_FIELDS)
# Plain dicts (jsonargparse serialises these for --print_config); never mutated.
DEFAULT_STATES = [dataclasses.asdict(s) for s in default_three_stage_states()]
DEFAULT_STAGES = [dataclasses.asdict(s) for s in default_three_stage_stages()]
METRIC_NAMES = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss")


def eval_summary(prefix: str, step: int, metrics: dict[str, torch.Tensor]) -> str:
    """One line per evaluation for the terminal, e.g. ``val at step 3000 (1000 puzzles): exact_accuracy 0.962 | ...``."""
    shown = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps")
    parts = " | ".join(f"{k} {metrics[f'{prefix}/{k}'].item():.4g}" for k in shown)
    return f"{prefix} at step {step} ({int(metrics[f'{prefix}/count'].item())} puzzles): {parts}"


def run_to_halt(net: LoopTransformer, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Evaluate a batch: ACT steps until every row halted; each row's outputs are those of its halting step.

    Returns (outputs, steps) with outputs holding logits, q_halt_logits, q_continue_logits.
    """
    carry = net.initial_carry(batch)
    final: Optional[dict[str, torch.Tensor]] = None
    steps = torch.zeros_like(carry.steps)
    done = torch.zeros_like(carry.halted)
    while True:
        carry, outputs = net(carry, batch)
        newly = carry.halted & ~done
        if final is None:
            final = {k: v.clone() for k, v in outputs.items()}
        else:
            for k, v in outputs.items():
                mask = newly.view((-1,) + (1,) * (v.ndim - 1))
                final[k] = torch.where(mask, v, final[k])
        steps = torch.where(newly, carry.steps, steps)
        done = done | carry.halted
        if bool(done.all()):
            return final, steps


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient: training stops at that step."""


class CheckpointDirError(RuntimeError):
    """A checkpoint directory that cannot be written (checked before training starts)."""


def checkpoint_dir_problem(dirpath: Optional[str], needed_bytes: int) -> str:
    """Why checkpoints could not be written to ``dirpath``, or "" when they can."""
    if not dirpath or "://" in str(dirpath):  # remote filesystems are left to fsspec
        return ""
    path = Path(dirpath)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as e:
        return f"checkpoint directory {path} is not writable ({e.strerror or e}); choose another with --trainer.default_root_dir."
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        return (
            f"checkpoint directory {path} has {free / 1e6:.1f} MB free, and one checkpoint of this model needs about "
            f"{needed_bytes / 1e6:.1f} MB; free some space or choose another with --trainer.default_root_dir."
        )
    return ""


class LoopformerModule(L.LightningModule):
    def __init__(
        self,
        states: list[StateSpec] = DEFAULT_STATES,
        stages: list[StageSpec] = DEFAULT_STAGES,
        outer_cycles: int = 3,
        no_grad_cycles: Optional[int] = None,
        readout_state: str = "z_H",
        halt_state: Optional[str] = None,
        hidden_size: int = 512,
        num_heads: int = 8,
        expansion: float = 4.0,
        pos_encodings: PosEncoding = "rope",
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-5,
        puzzle_emb_ndim: int = 0,
        puzzle_emb_len: int = 0,
        mixer: Mixer = "attention",
        forward_dtype: ForwardDtype = "bfloat16",
        halt_max_steps: int = 16,
        halt_exploration_prob: float = 0.1,
        act_inference: bool = False,
        no_ACT_continue: bool = True,
        loss_type: LossType = "stablemax_cross_entropy",
        gradient_checkpointing: bool = False,
        attention_backend: AttentionBackend = "auto",
        lr: float = 1e-4,
        lr_min_ratio: float = 1.0,
        lr_warmup_steps: int = 2000,
        weight_decay: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.95,
        puzzle_emb_lr: float = 1e-2,
        puzzle_emb_weight_decay: float = 0.1,
        num_pictures: int = 4,
        compile: bool = False,
        ema: bool = False,
        ema_rate: float = 0.999,
    ) -> None:
        """
        Args:
            states: Latent states and their modules: ``{name, layers, share_weights_with}``.
            stages: The loop schedule: ``{target, sources, include_inputs, repeat}``, run in order.
            outer_cycles: Passes over the whole schedule per ACT step.
            no_grad_cycles: Leading passes run without gradient (default outer_cycles - 1).
            readout_state: State decoded by the LM head.
            halt_state: State whose first token feeds the Q head (default: readout_state).
            hidden_size: Width of every state.
            num_heads: Attention heads.
            expansion: SwiGLU expansion (inner size rounded up to a multiple of 256).
            pos_encodings: rope, learned or none.
            rope_theta: RoPE base.
            rms_norm_eps: RMSNorm epsilon.
            puzzle_emb_ndim: Puzzle-embedding width (0: no puzzle embedding).
            puzzle_emb_len: Prefix tokens holding it (0: ceil(ndim / hidden)).
            mixer: attention, or mlp across the sequence (TRM's mlp_t).
            forward_dtype: Activation dtype of the forward pass.
            halt_max_steps: ACT steps before a sequence is forced to halt.
            halt_exploration_prob: Probability of a random minimum number of steps in training.
            act_inference: Halt on the Q head during evaluation too (otherwise run halt_max_steps).
            no_ACT_continue: Halt when q_halt > 0 and skip the Q-continue loss (TRM); else q_halt > q_continue.
            loss_type: stablemax_cross_entropy or softmax_cross_entropy.
            gradient_checkpointing: Recompute block activations in backward to save memory.
            attention_backend: auto (Triton kernel on CUDA, SDPA elsewhere), triton, or sdpa.
            lr: Peak learning rate of the network weights.
            lr_min_ratio: Final learning rate of the cosine decay, as a fraction of the peak.
            lr_warmup_steps: Optimizer steps of linear warmup.
            weight_decay: AdamW weight decay of the network weights.
            beta1: AdamW beta1.
            beta2: AdamW beta2.
            puzzle_emb_lr: Peak learning rate of the puzzle embeddings.
            puzzle_emb_weight_decay: Weight decay of the puzzle embeddings.
            num_pictures: Predictions drawn next to their labels at each validation (0: none).
            compile: Compile the looped core with torch.compile (in place: checkpoints keep their keys).
            ema: Keep an exponential moving average of the weights; validate and checkpoint with it.
            ema_rate: EMA decay per optimizer step.
        """
        super().__init__()
        # Plain dicts in the hyperparameters keep checkpoints loadable with torch.load(weights_only=True).
        states = [to_plain(s) for s in states]
        stages = [to_plain(s) for s in stages]
        self.save_hyperparameters()
        # Validate the architecture now, so a bad config fails before any data is read.
        self.arch_config(vocab_size=1, seq_len=1, num_puzzle_identifiers=1)
        self.net: Optional[LoopTransformer] = None
        self.carry: Optional[ACTCarry] = None
        self.dataset_dims: Optional[dict[str, int]] = None
        self._val_sums: Optional[dict[str, torch.Tensor]] = None
        self._carry_restored = False
        self._checkpoint_step: Optional[int] = None  # training step of the checkpoint loaded, if any
        self._picture: Optional[tuple] = None
        self._arc: Optional[ARCCollector] = None
        self.ema: Optional[WeightEMA] = None

    # ------------------------------------------------------------------------------------------------
    def arch_config(self, **dims: int) -> LoopTransformerConfig:
        arch = {k: self.hparams[k] for k in ARCH_FIELDS}
        arch["states"] = [s if isinstance(s, StateSpec) else StateSpec(**dict(s)) for s in arch["states"]]
        arch["stages"] = [s if isinstance(s, StageSpec) else StageSpec(**dict(s)) for s in arch["stages"]]
        return LoopTransformerConfig(**dims, **arch)

    def build(self, dims: dict[str, int]) -> None:
        """Create the network once the dataset's sizes are known."""
        if self.net is not None:
            if dims != self.dataset_dims:
                raise ValueError(f"model was built for dataset sizes {self.dataset_dims}, the data has {dims}.")
            return
        self.dataset_dims = dict(dims)
        self.net = LoopTransformer(self.arch_config(**dims))
        if self.hparams.get("compile", False):
            self.net.inner.compile()

    def configure_model(self) -> None:
        if self.net is None and self._trainer is None:
            return  # load_from_checkpoint: on_load_checkpoint builds from the stored dataset sizes
        if self.net is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "dims"):
                raise RuntimeError("LoopformerModule needs a PuzzleDataModule (its dims size the model).")
            self.build(datamodule.dims)

    def describe(self) -> str:
        cfg = self.net.config
        params = sum(p.numel() for p in self.net.parameters())
        table = getattr(self.net.inner, "puzzle_emb", None)
        emb = table.weights.numel() if table is not None else 0
        lines = [
            f"loopformer: {params:,} parameters + {emb:,} puzzle-embedding weights (sign-SGD), "
            f"{len(self.net.inner.state_modules)} distinct state module(s)",
            "schedule (per outer cycle):",
        ]
        for i, st in enumerate(cfg.stages):
            srcs = " + ".join(st.sources + (["x"] if st.include_inputs else [])) or "nothing"
            lines.append(
                f"  {i}: {st.target} <- {st.target} + ({srcs})  x{st.repeat}  [{cfg.layers_of(st.target)} layer(s)]"
            )
        lines.append(
            f"outer_cycles {cfg.outer_cycles} (no-grad {cfg.resolved_no_grad_cycles}); effective depth per ACT step: "
            f"{cfg.effective_depth} blocks ({cfg.grad_depth} with gradient); up to {cfg.halt_max_steps} ACT steps "
            f"= {cfg.effective_depth * cfg.halt_max_steps} blocks per puzzle"
        )
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # A fresh carry at the start of fit, unless a checkpoint being resumed just restored one.
        if not self._carry_restored:
            self.carry = None
        self._carry_restored = False
        if self.hparams.get("ema", False) and self.ema is None:
            self.ema = WeightEMA(self.net, self.hparams.ema_rate)
        self._check_checkpoint_dirs()
        rank_zero_info(self.describe())
        rank_zero_info(f"run directory: {run_directory(self.trainer)} (checkpoints/, predictions/, config.yaml)")

    def _check_checkpoint_dirs(self) -> None:
        """Fail at the start, not after hours, when a checkpoint could not be written (rank 0 decides)."""
        problem = ""
        if self.trainer.is_global_zero:
            # weights + 2 AdamW moments + EMA + the raw copy kept beside the EMA, in float32
            needed = 5 * 4 * sum(p.numel() for p in self.parameters()) + (1 << 20)
            for cb in self.trainer.checkpoint_callbacks:
                problem = problem or checkpoint_dir_problem(getattr(cb, "dirpath", None), needed)
        problem = self.trainer.strategy.broadcast(problem, src=0)
        if problem:
            raise CheckpointDirError(problem)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # The puzzle embeddings follow with their own rule in the same optimizer step (one global_step), on
        # the same schedule: the multiplier AdamW just used.
        emb = getattr(self.net.inner, "puzzle_emb", None)
        if emb is not None:
            multiplier = optimizer.param_groups[0]["lr"] / self.hparams.lr if self.hparams.lr else 1.0
            gather = self.all_gather if self.trainer.world_size > 1 else None
            emb.sign_sgd_step(self.hparams.puzzle_emb_lr * multiplier, self.hparams.puzzle_emb_weight_decay, gather)
        # Right after the step, before any on_train_batch_end checkpoint is written.
        if self.ema is not None:
            self.ema.update()

    def forward(self, carry: ACTCarry, batch: dict[str, torch.Tensor]):
        return self.net(carry, batch)

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        tag = batch.pop("sampler_position", None)
        sampler = getattr(getattr(self.trainer, "datamodule", None), "train_batches", None)
        if tag is not None and sampler is not None:
            sampler.mark_trained(tag)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.carry is None or self.carry.steps.shape[0] != batch["inputs"].shape[0]:
            self.carry = self.net.initial_carry(batch)
        elif self.carry.steps.device != batch["inputs"].device:  # restored from a checkpoint on the CPU
            self.carry = ACTCarry.from_dict(self.carry.to_dict(), device=batch["inputs"].device)
        self.carry, outputs = self.net(self.carry, batch)
        loss_sum, sums = act_loss(
            outputs, self.carry.current_data["labels"], self.carry.halted, self.carry.steps, self.hparams.loss_type
        )
        # Summed over rows, divided by the batch size; DDP's gradient mean makes it the global batch size.
        loss = loss_sum / batch["inputs"].shape[0]
        self._stop_if_not_finite({"train/loss": loss.detach()})
        count = sums["count"].clamp_min(1)
        # The losses are averaged over ranks (equal batch sizes): the global batch's loss, whatever the rank count.
        losses = {"train/loss": loss.detach(), "train/lm_loss": sums["lm_loss"] / batch["inputs"].shape[0]}
        self.log_dict(losses, on_step=True, on_epoch=False, sync_dist=True, batch_size=batch["inputs"].shape[0])
        log = {}
        if sums["count"] > 0:
            for k in ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps"):
                log[f"train/{k}"] = sums[k].float() / count
        if log:
            self.log_dict(log, prog_bar=False, on_step=True, on_epoch=False, batch_size=batch["inputs"].shape[0])
        self.log("train/exact", log.get("train/exact_accuracy", torch.tensor(0.0)), prog_bar=True, logger=False)
        return loss.float()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norms = [p.grad.detach().float().norm() for p in self.parameters() if p.grad is not None]
        if norms:
            self._stop_if_not_finite({"train/grad_norm": torch.stack(norms).norm()})

    def _stop_if_not_finite(self, values: dict[str, torch.Tensor]) -> None:
        """Every rank takes the same decision (a min-reduce), so none is left waiting in a collective."""
        finite = torch.stack([torch.isfinite(v).all() for v in values.values()]).all().to(torch.float32)
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce(finite, reduce_op="min")
        if finite.item() < 1:
            bad = (
                ", ".join(f"{k} = {v.item()}" for k, v in values.items() if not torch.isfinite(v).all())
                or "another rank"
            )
            raise NonFiniteError(
                f"training stopped at step {self.global_step}: {bad} is not finite. The last checkpoint written "
                "before this step is intact; lower model.lr, check the data, or resume from it with --ckpt_path."
            )

    # ------------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = None
        context = getattr(getattr(self.trainer, "datamodule", None), "arc_context", None)
        self._arc = ARCCollector(*context) if context is not None else None

    def _eval_batch(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        outputs, steps = run_to_halt(self.net, batch)
        halted = torch.ones_like(steps, dtype=torch.bool)
        _, sums = act_loss(outputs, batch["labels"], halted, steps, self.hparams.loss_type)
        return outputs, sums

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        outputs, sums = self._eval_batch(batch)
        if self._arc is not None:
            real = batch["labels"].ne(IGNORE_LABEL_ID).any(-1)
            columns = (
                batch["puzzle_identifiers"],
                batch["inputs"],
                outputs["logits"].argmax(-1),
                outputs["q_halt_logits"],
            )
            self._arc.add(*(t[real].cpu().numpy() for t in columns))
        if batch_idx == 0 and self.hparams.num_pictures > 0:
            real = batch["labels"].ne(IGNORE_LABEL_ID).any(-1)
            take = lambda t: t[real][: self.hparams.num_pictures].cpu().numpy()  # noqa: E731
            self._picture = (take(batch["inputs"]), take(outputs["logits"].argmax(-1)), take(batch["labels"]))
        if self._val_sums is None:
            self._val_sums = {k: torch.zeros((), dtype=torch.float64, device=self.device) for k in sums}
        for k, v in sums.items():
            self._val_sums[k] += v.to(torch.float64)

    test_step = validation_step

    @property
    def trained_steps(self) -> int:
        """Optimizer steps behind the weights: the trainer's count while fitting; outside fit (validate, test
        with --ckpt_path) the trainer counts from 0, so the checkpoint's own step."""
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        return self.global_step if fitting or self._checkpoint_step is None else self._checkpoint_step

    def _log_eval(self, prefix: str) -> None:
        if self._val_sums is None or self.trainer.sanity_checking:
            return
        keys = sorted(self._val_sums)
        totals = torch.stack([self._val_sums[k] for k in keys])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        sums = dict(zip(keys, totals, strict=True))
        count = sums["count"].clamp_min(1)
        # Logged once per evaluation, never during training: hyperband counts these reports.
        metrics = {f"{prefix}/{k}": (sums[k] / count).float() for k in METRIC_NAMES}
        metrics[f"{prefix}/count"] = sums["count"].float()
        if self._arc is not None:
            gathered = None
            if self.trainer.world_size > 1 and torch.distributed.is_initialized():
                gathered = [None] * self.trainer.world_size
                torch.distributed.all_gather_object(gathered, self._arc.rows)
            for k, v in self._arc.compute(gathered).items():
                metrics[f"{prefix}/{k}"] = torch.tensor(v)
        self.log_dict(metrics, sync_dist=False)
        self.log(f"{prefix}/exact", metrics[f"{prefix}/exact_accuracy"], prog_bar=True, logger=False)
        if self.trainer.is_global_zero:
            append_eval_metrics({k: v.item() for k, v in metrics.items()}, self.global_step)
            line = eval_summary(prefix, self.trained_steps, metrics)
            bar = self.trainer.progress_bar_callback
            if hasattr(bar, "print"):  # through the bar, so that its lines stay intact
                bar.print(line)
            else:
                rank_zero_info(line)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")
        self._log_picture()

    def _log_picture(self) -> None:
        """A few predictions next to their labels: a PNG in the log directory, and an image in W&B."""
        picture, self._picture = self._picture, None
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.hparams.num_pictures <= 0 or self.trainer.sanity_checking or not hasattr(datamodule, "metadata"):
            return
        root = Path(run_directory(self.trainer))  # a collective: every rank asks
        if picture is None or not self.trainer.is_global_zero:
            return
        from loopformer.data.show import save_prediction_png

        path = root / "predictions" / f"step{self.trained_steps:07d}.png"
        if not save_prediction_png(datamodule.metadata, *picture, path):
            return
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/predictions", images=[str(path)], step=self.global_step)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def on_test_epoch_start(self) -> None:
        self._val_sums = None

    def _fit_puzzle_embedding_rows(self, checkpoint: dict) -> None:
        """A table with another number of rows (a rebuilt dataset): every row restarts from the mean row, as
        HRM does."""
        key = "net.inner.puzzle_emb.weights"
        expected = getattr(getattr(self.net.inner, "puzzle_emb", None), "weights", None)
        tables = [checkpoint.get("state_dict", {}), checkpoint.get("loopformer", {}).get("raw_state_dict") or {}]
        if expected is None or key not in tables[0] or tables[0][key].shape == expected.shape:
            return
        found = tuple(tables[0][key].shape)
        rank_zero_warn(
            f"the checkpoint's puzzle-embedding table has {found[0]} rows, the data has {expected.shape[0]} puzzle "
            "identifiers: every row starts from the checkpoint's mean row."
        )
        for table in tables:
            if key in table:
                table[key] = table[key].float().mean(0, keepdim=True).expand(expected.shape).clone()

    def on_validation_start(self) -> None:
        # As in HRM/TRM, training resumes with a fresh carry after an evaluation. Dropping it when the
        # evaluation starts also keeps it out of the checkpoint saved after the evaluation, so a resumed
        # run continues exactly as an uninterrupted one.
        self.carry = None
        if self.ema is not None:
            self.ema.swap_in()

    def on_validation_end(self) -> None:
        if self.ema is not None:
            self.ema.swap_out()

    def on_predict_epoch_start(self) -> None:
        self._predicted: list[dict[str, torch.Tensor]] = []

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        outputs, steps = run_to_halt(self.net, batch)
        keep = batch["example_index"] >= 0 if "example_index" in batch else torch.ones_like(steps, dtype=torch.bool)
        rows = {
            "example_index": batch.get("example_index", torch.arange(steps.shape[0]))[keep],
            "inputs": batch["inputs"][keep],
            "preds": outputs["logits"].argmax(-1)[keep],
            "q_halt_logits": outputs["q_halt_logits"][keep],
            "steps": steps[keep],
        }
        if "labels" in batch:
            rows["labels"] = batch["labels"][keep]
        # tokens as int32 (the dataset's own type): an ARC test set holds hundreds of thousands of 900-token rows
        tokens = ("inputs", "preds", "labels")
        self._predicted.append({k: (v.int() if k in tokens else v).detach().cpu() for k, v in rows.items()})
        return rows

    def on_predict_epoch_end(self) -> None:
        """Every rank's rows, in dataset order, to ``<run directory>/predictions.npz``."""
        path = os.path.join(run_directory(self.trainer), "predictions.npz")  # a collective: every rank asks
        batches = self._predicted
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, batches)
            batches = [b for rank_batches in gathered for b in rank_batches]
        if not self.trainer.is_global_zero or not batches:
            return
        rows = merge_batches(batches)
        save_predictions(path, rows)
        accuracy = exact_accuracy(rows)
        scored = f" (exact_accuracy {accuracy:.4g} against the labels)" if accuracy is not None else ""
        rank_zero_info(f"predictions for {rows['preds'].shape[0]} examples{scored}: {path}")

    # ------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        # The puzzle-embedding table is not a parameter: optimizer_step updates it by sign-SGD.
        optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=(hp.beta1, hp.beta2)
        )
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            # Multiplier for the (step + 1)-th update, as the reference trainers count steps from 1.
            optimizer,
            lambda step: warmup_cosine(step + 1, hp.lr_warmup_steps, float(total), hp.lr_min_ratio),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["loopformer"] = {
            "dataset_dims": self.dataset_dims,
            "act_carry": _to_cpu(self.carry.to_dict()) if self.carry is not None else None,
            # ACT exploration draws from torch's generator: a resumed run continues the same stream.
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        if self.ema is not None:
            # Evaluation reads the averaged weights from state_dict; resuming takes the raw ones.
            raw = {k: v for k, v in checkpoint["state_dict"].items()}
            if self.ema._raw is not None:  # saved while validating: the network holds the average
                raw.update({"net." + k: v.detach().cpu().clone() for k, v in self.ema._raw.items()})
            checkpoint["loopformer"]["raw_state_dict"] = raw
            checkpoint["state_dict"] = {**raw, **self.ema.averaged_state("net.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._checkpoint_step = checkpoint.get("global_step")
        extra = checkpoint.get("loopformer", {})
        stored = extra.get("dataset_dims")
        if self.net is None and stored:
            self.build(stored)
        elif stored:
            token_dims = ("vocab_size", "seq_len")
            if any(stored.get(k) != self.dataset_dims[k] for k in token_dims if stored.get(k) is not None):
                raise ValueError(
                    f"the checkpoint was trained on data with {stored}, but data.data_paths have {self.dataset_dims}: "
                    "the vocabulary and the sequence length must match."
                )
        self._fit_puzzle_embedding_rows(checkpoint)
        raw = extra.get("raw_state_dict")
        if raw is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            # Resuming training: continue from the raw weights, with the average as the EMA's state.
            if self.hparams.get("ema", False):
                self.ema = WeightEMA(self.net, self.hparams.ema_rate)
                self.ema.load_averaged_state(checkpoint["state_dict"], "net.")
            checkpoint["state_dict"] = raw
        carry = extra.get("act_carry")
        self.carry = ACTCarry.from_dict(carry) if carry is not None else None
        self._carry_restored = self.carry is not None
        if extra.get("torch_rng") is not None:
            torch.set_rng_state(extra["torch_rng"])
        if extra.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["cuda_rng"])


def _to_cpu(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    return tree
