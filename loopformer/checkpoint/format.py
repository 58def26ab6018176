"""The checkpoint format: the one module that writes and reads what loopformer adds to a Lightning checkpoint.

A loopformer checkpoint is a Lightning checkpoint (``state_dict``, ``hyper_parameters``, optimizer and loop
state) plus ``checkpoint["loopformer"]``:

================  ==========================================================================================
key               what
================  ==========================================================================================
dataset_dims      ``{vocab_size, seq_len, num_puzzle_identifiers}``: the sizes the network was built for
act_carry         the ACT carry of training (``ACTCarry.to_dict()``), or None                    } rank 0's
torch_rng         torch's CPU generator (ACT exploration draws from it), so a resume continues  } (the only
cuda_rng          the CUDA generators, or None                                                  } one alone)
per_rank          with several processes: ``[{act_carry, torch_rng, cuda_rng}]`` for every rank, in rank order
                  (each rank's carry holds its own rows), or None
raw_state_dict    with EMA: the raw weights (``state_dict`` then holds the averaged ones, which evaluation reads)
imported_from     ``"<source>:<file>"`` for a checkpoint written by ``loopformer import-checkpoint``
data              the run's ``data`` settings as the command line resolved them (``data_paths``, batch sizes,
                  ``generate``): ``validate``/``test``/``predict`` with ``--ckpt_path`` alone evaluate on them
data_paths_from   the working directory the run read its relative ``data_paths`` from (evaluated from another
                  directory, a checkpoint still finds its run's data there)
schedule_steps    the steps the run's learning-rate schedule spans (a resume with another limit says so)
================  ==========================================================================================

``hyper_parameters`` holds the module's arguments as plain dicts: ``{arch, train, runtime, optim, ema, eval, budget}``.
Checkpoints written before those groups existed hold the same fields flat, or the training and runtime settings in
``arch`` and EMA, evaluation and compilation in ``run``; ``read_hyperparameters`` moves them into their groups (``migrate_hyperparameters``,
``config_groups.migrate_model``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from loopformer.checkpoint.fitting import refit_puzzle_table
from loopformer.config_groups import DIS_SWITCH, MOVED_FROM_ARCH, MOVED_FROM_RUN, migrate_model, to_plain
from loopformer.errors import ConfigError
from loopformer.evaluation.options import EvalOptions
from loopformer.files import load_torch, load_yaml
from loopformer.model.act import PUZZLE_TABLE_KEY
from loopformer.model.config import ArchConfig, RuntimeConfig
from loopformer.training.budget import BudgetConfig
from loopformer.training.config import EMAConfig, TrainConfig
from loopformer.training.optimization import OptimConfig

EXTRA_KEY = "loopformer"
NET_PREFIX = "net."  # the LightningModule holds the LoopTransformer as ``net``
RAW_KEY, AVERAGED_KEY = "raw_state_dict", "averaged_state_dict"  # the latter only in memory, while resuming
GROUPS = {
    "arch": ArchConfig,
    "train": TrainConfig,
    "runtime": RuntimeConfig,
    "optim": OptimConfig,
    "ema": EMAConfig,
    "eval": EvalOptions,
    "budget": BudgetConfig,
}


def extras(checkpoint: dict) -> dict[str, Any]:
    """``checkpoint["loopformer"]``, created empty when absent."""
    return checkpoint.setdefault(EXTRA_KEY, {})


RANK_STATE_KEYS = ("act_carry", "torch_rng", "cuda_rng")


def rank_training_state(act_carry: Optional[dict]) -> dict:
    """This process's part of the training state: its ACT carry and its generators."""
    return {
        "act_carry": _to_cpu(act_carry) if act_carry is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def gather_rank_states(mine: dict) -> list[dict]:
    """Every rank's training state, in rank order (a collective: every rank calls it, as every rank runs
    ``on_save_checkpoint``); ``[mine]`` in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def write_training_state(checkpoint: dict, dataset_dims: Optional[dict], rank_states: list[dict]) -> None:
    """What a resumed run needs beyond Lightning's own state: the dataset sizes, every rank's carry and
    generators."""
    extras(checkpoint).update(
        dataset_dims=dataset_dims, **rank_states[0], per_rank=rank_states if len(rank_states) > 1 else None
    )


def read_rank_state(checkpoint: dict, rank: int, world_size: int) -> dict:
    """This rank's carry and generators. Resumed with the world size it was saved with, each rank continues its
    own; otherwise (or from a checkpoint that kept rank 0's only) rank 0 continues rank 0's and every other rank
    starts a fresh carry from its own generators: its rows are not the ones it would have had."""
    extra = checkpoint.get(EXTRA_KEY, {})
    per_rank = extra.get("per_rank") or [{k: extra.get(k) for k in RANK_STATE_KEYS}]
    if len(per_rank) == world_size or rank == 0:
        return per_rank[rank] if rank < len(per_rank) else per_rank[0]
    return {"act_carry": None, "torch_rng": None, "cuda_rng": None}


def restore_generators(state: dict) -> None:
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def store_averaged_weights(checkpoint: dict, raw: dict, averaged: dict) -> None:
    """EMA: evaluation reads the averaged weights from ``state_dict``; resuming takes the raw ones."""
    extras(checkpoint)[RAW_KEY] = raw
    checkpoint["state_dict"] = {**raw, **averaged}


def has_raw_weights(checkpoint: dict) -> bool:
    """The checkpoint was written with EMA: its ``state_dict`` holds the average, the raw weights are beside it."""
    return checkpoint.get(EXTRA_KEY, {}).get(RAW_KEY) is not None


def use_raw_weights(checkpoint: dict) -> None:
    """Resuming training from an EMA checkpoint (or evaluating it without EMA): the raw weights go into the network,
    the average is set aside for the EMA callback (``averaged_weights``)."""
    extra = checkpoint.get(EXTRA_KEY, {})
    raw = extra.get(RAW_KEY)
    if raw is not None:
        extra[AVERAGED_KEY] = checkpoint["state_dict"]
        checkpoint["state_dict"] = raw


def averaged_weights(checkpoint: dict) -> Optional[dict[str, torch.Tensor]]:
    return checkpoint.get(EXTRA_KEY, {}).get(AVERAGED_KEY)


def weight_tables(checkpoint: dict) -> list[dict[str, torch.Tensor]]:
    """Every state dict of weights a checkpoint holds: ``state_dict``, and with EMA the raw weights too."""
    raw = checkpoint.get(EXTRA_KEY, {}).get(RAW_KEY)
    return [checkpoint.get("state_dict", {})] + ([raw] if raw is not None else [])


def module_hyperparameters(groups: dict[str, Any]) -> dict[str, Any]:
    """What ``LoopformerModule(**groups)`` stores as its hyperparameters: every group as a plain dict (those not
    given at their defaults), no warm start, nothing frozen. Written for checkpoints made without a module (the
    importer)."""
    plain = {name: to_plain(groups.get(name) or cls()) for name, cls in GROUPS.items()}
    return {**plain, "init_from": None, "freeze": None}


def refit_puzzle_tables(checkpoint: dict, shape: torch.Size) -> Optional[int]:
    """Every puzzle-embedding table the checkpoint holds (with EMA, the raw one too), fitted to ``shape`` by
    ``fitting.refit_puzzle_table``; returns the stored row count when the tables were refitted, else None."""
    key = NET_PREFIX + PUZZLE_TABLE_KEY
    rows = [refit_puzzle_table(table, key, shape) for table in weight_tables(checkpoint)]
    return rows[0]


def check_dataset_dims(checkpoint: dict, dims: dict[str, int], where: str = "the checkpoint") -> None:
    """The data's vocabulary and sequence length are those the checkpoint was trained on (the number of puzzle
    identifiers may differ: ``refit_puzzle_tables``)."""
    stored = checkpoint.get(EXTRA_KEY, {}).get("dataset_dims") or {}
    if any(stored.get(k) != dims[k] for k in ("vocab_size", "seq_len") if stored.get(k) is not None):
        raise ConfigError(
            f"{where} was trained on data with vocabulary size {stored.get('vocab_size')} and sequence length "
            f"{stored.get('seq_len')}, but data.data_paths hold {dims['vocab_size']} and {dims['seq_len']}: a model "
            "runs on data of the shape it was trained on (its run's data, or data built the same way)."
        )


def check_weights_fit(checkpoint: dict, expected: dict[str, torch.Tensor], where: str, changed: list[str]) -> None:
    """The checkpoint's network weights load into a network whose state dict is ``expected`` (the puzzle table's
    row count aside: ``refit_puzzle_tables``); ``changed`` names the flags that changed the checkpoint's
    architecture, for the message."""
    from loopformer.checkpoint.fitting import misfit, rows_aside

    weights = {k[len(NET_PREFIX) :]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(NET_PREFIX)}
    details = misfit(rows_aside(weights, expected, PUZZLE_TABLE_KEY), expected, limit=2)
    if not details:
        return
    cause = (
        f"; its architecture is the checkpoint's but for {' '.join(changed)}: leave out what changes the shapes of "
        "its weights"
        if changed
        else ""
    )
    raise ConfigError(f"{where}: its weights do not fit the network these settings build ({details}){cause}.")


def imported_checkpoint(
    state_dict: dict[str, torch.Tensor], hyper_parameters: dict[str, Any], dataset_dims: dict, imported_from: str
) -> dict[str, Any]:
    """A checkpoint holding weights converted from another codebase, for ``validate/test/predict/fit --ckpt_path``."""
    return {
        "state_dict": state_dict,
        "hyper_parameters": hyper_parameters,
        EXTRA_KEY: {"dataset_dims": dataset_dims, "act_carry": None, "imported_from": imported_from},
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
    }


# ---------------------------------------------------------------------------------------------------
def migrate_hyperparameters(hparams: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Flat hyperparameters (checkpoints written before the ``arch``/``optim``/``run`` groups) -> grouped.

    Returns (hparams, migrated)."""
    if not hparams or any(group in hparams for group in ("arch", "optim", "run")):
        return hparams, False
    owner = {f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}
    owner.update({key: "arch" for key in (*MOVED_FROM_ARCH, DIS_SWITCH)})  # then moved on by migrate_model
    owner.update({key: "run" for key in MOVED_FROM_RUN})
    grouped: dict[str, Any] = {}
    for key, value in hparams.items():
        if key in owner:
            grouped.setdefault(owner[key], {})[key] = value
        else:
            grouped[key] = value
    return grouped, True


class CheckpointFileError(ConfigError):
    """A file given as a checkpoint that is not one (named in the message)."""


CHECKPOINT_EXPECTED = "a loopformer checkpoint (written by `loopformer fit` or `loopformer import-checkpoint`)"


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint file read on the CPU (weights only), or ``CheckpointFileError`` in one line; ``mmap``: its
    tensors mapped rather than read (see ``files.load_torch``)."""
    checkpoint = load_torch(path, CheckpointFileError, CHECKPOINT_EXPECTED, mmap=mmap)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        kind = "a dict without a state_dict" if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}"
        raise CheckpointFileError(
            f"{path}: a PyTorch file holding {kind}, not {CHECKPOINT_EXPECTED}; weights saved by TRM, HRM or "
            "VirtualRecursiveNetwork go through `loopformer import-checkpoint` first."
        )
    return checkpoint


def read_hyperparameters(path: str | Path) -> dict[str, Any]:
    """The module arguments stored in a checkpoint, grouped (old flat ones migrated, with a one-line notice). The
    weights are mapped, not read: Lightning reads them once, when it restores the checkpoint."""
    return read_settings(path)[0]


RUN_CONFIG = "config.yaml"  # beside checkpoints/ in a run directory (cli.command.SaveConfigToRun writes it)


def store_data_settings(checkpoint: dict, data: Optional[dict[str, Any]]) -> None:
    """The run's data settings, and the directory its relative data paths were read from (the working directory):
    a checkpoint evaluated from another directory still finds its run's data."""
    extras(checkpoint).update(data=data, data_paths_from=os.getcwd())


def _anchored_data_paths(data: dict[str, Any], base: Optional[str]) -> tuple[dict[str, Any], bool]:
    """``data`` with each relative data path that names a directory under ``base`` made absolute there (the data the
    run trained on); others as they were. Also whether any changed."""
    paths = data.get("data_paths")
    if base is None or paths is None:
        return data, False
    listed = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    anchored = [str(Path(base, p)) if not Path(p).is_absolute() and Path(base, p).is_dir() else p for p in listed]
    if anchored == listed:
        return data, False
    return {**data, "data_paths": anchored[0] if isinstance(paths, (str, os.PathLike)) else anchored}, True


def read_settings(
    path: str | Path, checkpoint: Optional[dict[str, Any]] = None
) -> tuple[dict[str, Any], Optional[dict[str, Any]], str]:
    """``(model hyperparameters, data settings, where the data settings came from)``. The data settings are the
    checkpoint's own (its relative data paths read from the directory its run read them from, where they are there),
    or, for a checkpoint written before it carried them, the ``data`` of the ``config.yaml`` of the run directory it
    sits in (``<run>/checkpoints/x.ckpt``); None when neither has them (an import). ``checkpoint``: the file at
    ``path`` already loaded, if the caller has it."""
    checkpoint = load_checkpoint(path, mmap=True) if checkpoint is None else checkpoint
    data, source = checkpoint.get(EXTRA_KEY, {}).get("data"), str(path)
    if isinstance(data, dict):
        data, anchored = _anchored_data_paths(data, checkpoint[EXTRA_KEY].get("data_paths_from"))
        if anchored:
            source += f" (its relative data paths read from {checkpoint[EXTRA_KEY]['data_paths_from']}, as its run did)"
    run = run_directory_of(path)
    if data is None and run is not None and (run / RUN_CONFIG).is_file():
        source = str(run / RUN_CONFIG)
        content = load_yaml(source, ConfigError, "the run's resolved config")
        data = content.get("data") if isinstance(content, dict) else None
    return _hyperparameters(path, checkpoint), data if isinstance(data, dict) else None, source


def run_directory_of(path: str | Path) -> Optional[Path]:
    """The run directory a checkpoint was saved in (``<run>/checkpoints/<name>.ckpt``), or None."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def _hyperparameters(path: str | Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    hparams = dict(checkpoint.get("hyper_parameters", {}))
    hparams.pop("_instantiator", None)
    hparams, migrated = migrate_hyperparameters(hparams)
    hparams, moved = migrate_model(hparams)
    if migrated or moved:
        rank_zero_info(
            f"{path}: hyperparameters from before the arch/train/runtime/optim/ema/eval groups, read into those groups."
        )
    return hparams


# ---------------------------------------------------------------------------------------------------
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


class CheckpointDirCheck(L.Callback):
    """Fail at the start, not after hours, when a checkpoint could not be written (rank 0 decides)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        problem = ""
        if trainer.is_global_zero and not trainer.fast_dev_run:  # fast_dev_run writes no checkpoint
            # weights + 2 AdamW moments + EMA + the raw copy kept beside the EMA, in float32
            needed = 5 * 4 * sum(p.numel() for p in pl_module.parameters()) + (1 << 20)
            for cb in trainer.checkpoint_callbacks:
                problem = problem or checkpoint_dir_problem(getattr(cb, "dirpath", None), needed)
        problem = trainer.strategy.broadcast(problem, src=0)
        if problem:
            raise CheckpointDirError(problem)


def _to_cpu(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    return tree
