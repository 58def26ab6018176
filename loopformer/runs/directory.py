"""Where one run's outputs go: the directory that holds its ``checkpoints/``, beside them ``config.yaml`` and
``predictions/``, so that runs sharing a logger's save_dir (a sweep) never overwrite each other's files; and the
claim a run holds on it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from loopformer.checkpoint import atomic
from loopformer.checkpoint.atomic import remove_stale_temporaries, stale_notice
from loopformer.runs.claim import Claim, ClaimedError


def run_directory(trainer: L.Trainer) -> str:
    """``<save_dir>/<name>/<version>`` of the first logger, as Lightning's ModelCheckpoint places
    ``checkpoints/``; ``default_root_dir`` without a logger. A collective: every rank must call it
    (only rank 0 knows a W&B run's id; it is broadcast)."""
    for callback in trainer.callbacks:
        if isinstance(callback, OutputsInCheckpointRun):
            return callback.directory(trainer)
    if not trainer.loggers:
        return trainer.default_root_dir
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    directory = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), version)
    return trainer.strategy.broadcast(directory)


class OutputsInCheckpointRun(L.Callback):
    """``validate``/``test``/``predict`` of a run's checkpoint (``--ckpt_path <run>/checkpoints/x.ckpt``) write
    their outputs (config.yaml, pictures, depth curve, predictions.npz, submission.json) into a new subdirectory of
    that run, ``<run>/<command>-<date>-<time>/``, rather than into a new run directory of their own."""

    def __init__(self, run: Path, command: str) -> None:
        self.run, self.command = Path(run), command
        self.path: Optional[str] = None

    def directory(self, trainer: L.Trainer) -> str:
        """Chosen (and created) once by rank 0; a collective the first time."""
        if self.path is None:
            chosen = str(self._new_subdirectory()) if trainer.is_global_zero else ""
            self.path = trainer.strategy.broadcast(chosen)
        return self.path

    def _new_subdirectory(self) -> Path:
        stem = f"{self.command}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 1000):
            path = self.run / (stem if n == 1 else f"{stem}-{n}")
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"{self.run}: no free name {stem}-N for this {self.command}'s outputs")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        rank_zero_info(f"{self.command} of a checkpoint of run {self.run}: outputs in {self.directory(trainer)}")


class OutputsNotice(L.Callback):
    """``validate``/``test``/``predict`` writing into a run directory of their own (a checkpoint outside a run, an
    imported one, or ``--trainer.default_root_dir`` given): one line naming it, as a fit's start-up summary does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        rank_zero_info(f"{self.command}: outputs in {run_directory(trainer)}")


class FirstStartNotice(L.Callback):
    """``fit --ckpt_path last`` whose run directory has no last checkpoint yet (the first start of a run with a fixed
    id): one line saying that it starts at step 0, in place of Lightning's warning and its hint to set
    ``save_last`` (loopformer always writes ``last.ckpt``)."""

    LIGHTNING_WARNING = r".*ckpt_path=\"last\"\) is set, but there is no last checkpoint available"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            rank_zero_info(
                f"--ckpt_path last: no last checkpoint in {run_directory(trainer)} yet; this run starts at step 0"
            )


def record_in_run_config(trainer: L.Trainer, line: Optional[str]) -> None:
    """A fact about the run (the attention it uses, its CUDA graphs) as a comment at the end of the run directory's
    config.yaml (a comment: the file stays a config that ``--config`` reads), so that it is recorded with W&B off too.
    A collective (the run directory): every rank calls it, with None where there is nothing to write."""
    directory = run_directory(trainer)
    path = Path(directory) / "config.yaml"
    if line is None or not trainer.is_global_zero or "://" in directory or not path.is_file():
        return
    text = path.read_text()
    if f"# {line}\n" not in text:
        atomic.write_text(path, text.rstrip("\n") + f"\n# {line}\n")


RUN_LOCK = "run.lock"


class ClaimRunDirectory(L.Callback):
    """A run holds its directory for its lifetime (``claim.Claim`` on ``run.lock`` in it): a second run on the same
    directory fails at once, naming the holder, instead of overwriting its checkpoints and config. A directory whose
    holder died is taken over with a notice, and the partial files its interrupted writes left are removed."""

    def __init__(self) -> None:
        self.claim: Optional[Claim] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        directory = run_directory(trainer)  # a collective: every rank asks
        problem = ""
        if trainer.is_global_zero and "://" not in directory:
            problem = self._claim(trainer, Path(directory))
        problem = trainer.strategy.broadcast(problem, src=0)
        if problem:
            raise ClaimedError(problem, None)

    def _claim(self, trainer: L.Trainer, directory: Path) -> str:
        self.claim = Claim(directory / RUN_LOCK, f"run directory {directory}")
        try:
            self.claim.acquire()
        except ClaimedError as e:
            self.claim = None
            return (
                f"{e} One directory holds one run's checkpoints and config: wait for that run to end, or give this "
                "one another directory (--trainer.default_root_dir, or the logger's version / W&B id)."
            )
        if self.claim.previous is not None:
            rank_zero_warn(
                f"run directory {directory}: taken over from a run that ended without releasing it "
                f"({self.claim.previous.describe()})."
            )
        places = {directory, directory / "checkpoints"}
        places.update(Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None))
        notice = stale_notice([p for place in sorted(places) for p in remove_stale_temporaries(place)])
        if notice:
            rank_zero_info(notice)
        return ""

    def _release(self) -> None:
        if self.claim is not None:
            self.claim.release()
            self.claim = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release()
