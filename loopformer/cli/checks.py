"""Checks of a parsed command line that stop a run in one line before anything of it starts: devices and nodes the
machine lacks, a checkpoint path that is no file, a W&B logger without wandb, a dataset to generate that nobody
asked for, an optimizer a checkpoint's state cannot continue as, an evaluation interval beyond the epoch it is
counted in; and which ``--model.arch`` flags change a checkpoint's architecture."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path
from typing import Any, Optional

import yaml

from loopformer.data.common import is_built, split_hint
from loopformer.data.format import DatasetError
from loopformer.errors import ConfigError

CLUSTER_VARIABLES = (
    "MASTER_ADDR",
    "SLURM_JOB_ID",
    "NODE_RANK",
    "TORCHELASTIC_RUN_ID",
    "LSB_JOBID",
    "OMPI_COMM_WORLD_SIZE",
)


def check_devices(accelerator: Any, devices: Any, num_nodes: Any) -> None:
    """Devices or nodes this machine does not have are one line now, before any process is started (Lightning
    would start them, or wait for nodes that never come, and end in a traceback)."""
    import torch

    nodes = 1 if num_nodes is None else int(num_nodes)
    if nodes < 1:
        raise ConfigError(f"--trainer.num_nodes={num_nodes}: expected an integer >= 1.")
    if nodes > 1 and not any(v in os.environ for v in CLUSTER_VARIABLES):
        raise ConfigError(
            f"--trainer.num_nodes={num_nodes}: this process was not started by a multi-node launcher (none of "
            f"{', '.join(CLUSTER_VARIABLES)} is set), so the other nodes would never join; start one process per "
            "node with torchrun or SLURM (configs/trainer/gpu-2x4.yaml says how), or use num_nodes: 1."
        )
    accelerator = str(getattr(accelerator, "class_path", accelerator) or "auto").lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        available, what = torch.cuda.device_count(), "CUDA GPU"
        if available == 0:
            raise ConfigError(
                f"--trainer.accelerator={accelerator}: no CUDA GPU is visible on this machine "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use --trainer.accelerator=cpu."
            )
    elif accelerator == "cpu" or accelerator == "auto":
        available, what = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
            "CPU core",
        )
    else:
        return  # tpu, mps, a custom accelerator: Lightning checks them
    if isinstance(devices, (list, tuple)):
        wanted = len(devices)
        too_high = [d for d in devices if isinstance(d, int) and d >= available]
        if too_high:
            raise ConfigError(
                f"--trainer.devices={list(devices)}: this machine has {available} {what}(s), numbered 0 to "
                f"{available - 1}; {too_high[0]} is not one of them."
            )
    elif isinstance(devices, int) or (isinstance(devices, str) and devices.strip().lstrip("-").isdigit()):
        wanted = int(devices)
        if wanted == 0 or wanted < -1:
            raise ConfigError(
                f"--trainer.devices={devices}: expected a count >= 1, -1 (all), a list of indices or auto."
            )
    else:
        return  # auto
    if wanted > available:
        raise ConfigError(
            f"--trainer.devices={devices}: this machine has {available} {what}(s); ask for at most {available} "
            "(each device is one process)."
        )


# ckpt_path values that Lightning resolves itself rather than reading as a file
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


# loopformer's own W&B logger (the default) and Lightning's
WANDB_LOGGERS = ("loopformer.runs.loggers.WandbLogger", "lightning.pytorch.loggers.WandbLogger")


def check_wandb_installed(logger: Any) -> None:
    """A W&B logger (loopformer's default) without the wandb package is one paragraph before anything starts,
    rather than jsonargparse's traceback of the failed instantiation."""
    loggers = logger if isinstance(logger, list) else [logger]
    if not any(getattr(each, "class_path", None) in WANDB_LOGGERS for each in loggers):
        return
    try:
        installed = importlib.util.find_spec("wandb") is not None
    except ImportError:
        installed = False
    if not installed:
        raise ConfigError(
            "trainer.logger is W&B (loopformer's default), but the wandb package is not installed: `pip install "
            "wandb` (or reinstall loopformer, which requires it), or run without a logger: `--trainer.logger=false` "
            "(checkpoints and config.yaml still go to the run directory)."
        )


SEED_RANGE = (0, 2**32 - 1)  # numpy's, which seed_everything seeds too


def resolve_seed(seed: bool | int) -> bool | int:
    """``seed_everything`` as the run uses it: an integer in numpy's range, ``False`` (no seeding), or for ``True``
    a seed drawn at random, as LightningCLI's help says (Lightning itself would take 0). The processes Lightning
    starts for DDP inherit the first one's seed (``PL_GLOBAL_SEED``); processes started by another launcher
    (torchrun, SLURM, MPI) cannot agree on a drawn seed, so there ``True`` is an error."""
    if seed is False:
        return False
    if seed is True:
        inherited = os.environ.get("PL_GLOBAL_SEED")
        if inherited is not None:
            return int(inherited)
        launched = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
        if any(int(os.environ.get(name) or 1) > 1 for name in launched):
            raise ConfigError(
                "seed_everything: true draws a seed at random, but this is one of several processes started by a "
                "launcher (torchrun, SLURM or MPI), which would each draw another; give every process the same "
                "integer, e.g. --seed_everything=$RANDOM."
            )
        return random.SystemRandom().randint(*SEED_RANGE)
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigError(
            f"seed_everything={seed}: expected an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}] (numpy's seeds), "
            "true for a random one, or false for none."
        )
    return seed


def check_ckpt_path(config) -> None:  # noqa: ANN001 (a jsonargparse Namespace)
    """A local --ckpt_path that is not a file fails now, before data and model are built, in one line."""
    subcommand = config.get("subcommand")
    ckpt_path = config[subcommand].get("ckpt_path") if subcommand else None
    if ckpt_path is not None and not str(ckpt_path).strip():
        raise ConfigError(
            "--ckpt_path is empty: expected a checkpoint file written by `loopformer fit` (e.g. "
            f"<run>/checkpoints/last.ckpt) or `loopformer import-checkpoint`, or one of {', '.join(LIGHTNING_CKPT_NAMES)}."
        )
    if not ckpt_path or "://" in str(ckpt_path) or str(ckpt_path).split(":")[0] in LIGHTNING_CKPT_NAMES:
        return
    path = Path(ckpt_path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"--ckpt_path {ckpt_path} {what}: expected a checkpoint file written by `loopformer fit` (e.g. "
            f"<run>/checkpoints/last.ckpt) or `loopformer import-checkpoint`, or one of {', '.join(LIGHTNING_CKPT_NAMES)}."
        )


def _first_logger(trainer: Any) -> Any:  # noqa: ANN401 (jsonargparse Namespaces)
    """The logger whose directory holds the run's (Lightning places checkpoints by the first), None or False."""
    loggers = trainer.get("logger")
    return (loggers[0] if loggers else None) if isinstance(loggers, list) else loggers


def _save_dir(trainer: Any) -> Path:  # noqa: ANN401 (a jsonargparse Namespace)
    """Where the first logger puts its runs (trainer.default_root_dir unless it names its own save_dir)."""
    init_args = getattr(_first_logger(trainer), "init_args", None) or {}
    return Path(init_args.get("save_dir") or trainer.get("default_root_dir") or ".")


def reused_run_directory(trainer: Any) -> Optional[Path]:  # noqa: ANN401 (a jsonargparse Namespace)
    """The run directory when every run with these settings uses the same one: no logger (the run directory is
    trainer.default_root_dir) or a logger with a fixed id or version; None when each run gets a new one."""
    first = _first_logger(trainer)
    if first is None or first is False:
        return Path(trainer.get("default_root_dir") or ".")
    init_args = getattr(first, "init_args", None) or {}
    version = init_args.get("id") if init_args.get("id") is not None else init_args.get("version")
    if version is None and getattr(first, "class_path", None) in WANDB_LOGGERS:
        version = os.environ.get("WANDB_RUN_ID")  # a W&B agent names the run it starts
    if version is None:
        return None
    name = init_args.get("project") or init_args.get("name") or "lightning_logs"
    version = version if isinstance(version, str) else f"version_{version}"
    return _save_dir(trainer) / str(name) / version


def check_runs_keep_their_checkpoints(subcommand: str, ckpt_path: Any, trainer: Any) -> None:  # noqa: ANN401
    """``--ckpt_path last`` (or ``best``) is Lightning's: the checkpoint of that name in this run's own checkpoint
    directory. Where the run directory is new (a logger without a fixed id or version gets a new one every run),
    there is none, and Lightning would train from step 0, or evaluate untrained weights, after one warning: stop
    instead, naming the checkpoint that was most likely meant. Where the run directory is used again, a fit that
    starts afresh would overwrite the checkpoints of the run before it: stop instead."""
    reused = reused_run_directory(trainer)
    if ckpt_path in ("last", "best") and reused is None:
        root = _save_dir(trainer)
        candidates = sorted(root.glob(f"*/*/checkpoints/{ckpt_path}.ckpt"), key=lambda p: p.stat().st_mtime)
        meant = f" (the most recent under {root}: {candidates[-1]})" if candidates else ""
        outcome = (
            "training would start from step 0" if subcommand == "fit" else f"{subcommand} would run untrained weights"
        )
        raise ConfigError(
            f"--ckpt_path {ckpt_path} means the {ckpt_path} checkpoint in this run's own directory, and every run without "
            f"a fixed id gets a new directory under {root}, so there is none: {outcome}. Give the checkpoint file itself"
            f"{meant}, or give every submission of a run the same id (--trainer.logger.init_args.id=NAME for W&B, "
            "init_args.version=NAME for CSV or TensorBoard), so that `last` finds the checkpoint of the one before."
        )
    if (
        subcommand == "fit"
        and ckpt_path is None
        and reused is not None
        and trainer.get("enable_checkpointing") is not False
        and not trainer.get("fast_dev_run")  # it writes no checkpoint
    ):
        checkpoints = reused / "checkpoints"
        found = sorted(p.name for p in checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []
        if found:
            shown = ", ".join(found[:3]) + (f", ... ({len(found)} in all)" if len(found) > 3 else "")
            raise ConfigError(
                f"{checkpoints} holds the checkpoints of an earlier run ({shown}), which this run, starting at step 0, "
                "would overwrite. Continue that run with --ckpt_path last, or give this one a directory of its own "
                "(another --trainer.default_root_dir or logger id)."
            )


def check_optimizer_continues(ckpt_path: str, stored: Optional[str], optimizer: str) -> None:
    """A fit resumes the checkpoint's optimizer state: only with the optimizer that wrote it (``stored``, where the
    checkpoint records it)."""
    if stored is not None and stored != optimizer:
        raise ConfigError(
            f"--ckpt_path {ckpt_path} was trained with model.optim.optimizer={stored}, and its state (moment "
            f"estimates) cannot continue as {optimizer}: resume with {stored}, or start from its weights with "
            f"--model.init_from {ckpt_path} and a fresh optimizer."
        )


def given(args: list[str], key: str) -> bool:
    """Whether the command line sets ``key``, or a key under it."""
    return any(a == f"--{key}" or a.startswith((f"--{key}=", f"--{key}.")) for a in args)


def check_generation_was_asked(config, args: list[str], require_dataset: bool = True) -> None:  # noqa: ANN001
    """A config file's ``data.generate`` describes the dataset where that file points. When ``data.data_paths``
    comes from the command line and no ``--data.generate`` flag does, it does not apply there: a missing dataset
    is an error (a typo must not silently become a new dataset; unless ``require_dataset`` is false, for
    ``--print_config``), and an existing one is used as it is (the run's config records ``data.generate: null``, not
    settings that did not make its data). ``config`` is a jsonargparse Namespace."""
    subcommand = config.get("subcommand")
    section = config[subcommand] if subcommand else config
    data = section.get("data")
    if data is None or not data.get("generate") or not given(args, "data.data_paths") or given(args, "data.generate"):
        return
    paths = data.get("data_paths")
    first = Path(paths if isinstance(paths, (str, os.PathLike)) else paths[0])
    if require_dataset and not is_built(first):
        raise DatasetError(
            f"--data.data_paths {first.resolve()} holds no dataset (no train/dataset.json). The config's data.generate "
            f"builds one only where the config file points; to generate one at {first}, also pass a --data.generate "
            "flag (e.g. --data.generate.seed=0)." + split_hint(first)
        )
    data.generate = None


def check_trainer_fits_the_algorithm(subcommand: Optional[str], section: Any) -> None:  # noqa: ANN401 (a Namespace)
    """DIS steps the optimizer itself, after every supervision step (``training/dis.py``): Lightning can neither
    accumulate its gradients over batches nor clip them, and says so in a traceback once the run has started."""
    train = (section.get("model") or {}).get("train") or {}
    if subcommand != "fit" or train.get("algorithm") != "dis":
        return
    trainer = section.get("trainer") or {}
    accumulate, clip = trainer.get("accumulate_grad_batches"), trainer.get("gradient_clip_val")
    why = (
        "model.train.algorithm=dis steps the optimizer itself, after every supervision step (VirtualRecursiveNetwork's"
        " Deep Improvement Supervision), so Lightning cannot"
    )
    if accumulate not in (None, 1):
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate}: {why} accumulate its gradients over batches. Remove it; a "
            "larger data.global_batch_size puts more examples into each step."
        )
    if clip not in (None, 0):
        raise ConfigError(f"trainer.gradient_clip_val={clip}: {why} clip its gradients. Remove it.")


def arch_changes(args: list[str], arch: dict[str, Any]) -> list[str]:
    """The ``--model.arch.*`` flags among ``args`` (the last of each key) whose value is not the checkpoint's
    (``arch``, its architecture settings)."""
    last = {}
    for flag in args:
        if flag.startswith("--model.arch.") and "=" in flag:
            last[flag.split("=", 1)[0]] = flag
    changed = []
    for key, flag in last.items():
        stored: Any = arch
        for part in key.removeprefix("--model.arch.").split("."):
            if isinstance(stored, dict) and part in stored:
                stored = stored[part]
            elif isinstance(stored, list) and part.isdigit() and int(part) < len(stored):
                stored = stored[int(part)]
            else:
                stored = None
                break
        try:
            same = stored is not None and yaml.safe_load(flag.split("=", 1)[1]) == stored
        except yaml.YAMLError:
            same = False
        if not same:
            changed.append(flag)
    return changed


def val_interval_beyond_the_epoch(interval: Any, batches: Any) -> str:  # noqa: ANN401 (numbers, or their text)
    return (
        f"trainer.val_check_interval={interval} is more batches than an epoch has ({batches}), and with "
        "trainer.check_val_every_n_epoch set it counts within an epoch: set check_val_every_n_epoch to null (as the "
        "recipes do) to count it across epochs, or give a smaller interval."
    )


def check_val_interval_fits_the_epoch(trainer: dict[str, Any], batches_per_epoch: Optional[int]) -> None:
    """Lightning's check that an evaluation interval counted within an epoch fits in it, made before the run starts
    (Lightning makes it once the run directory and its W&B run exist). Where the batches of an epoch are known: a
    fit on data that is there, with a fixed count."""
    interval, limit = trainer.get("val_check_interval"), trainer.get("limit_train_batches")
    if batches_per_epoch is None or trainer.get("check_val_every_n_epoch") is None or trainer.get("fast_dev_run"):
        return
    if not isinstance(interval, int) or isinstance(interval, bool):
        return
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches_per_epoch = min(batches_per_epoch, limit)
    elif isinstance(limit, float):
        batches_per_epoch = int(batches_per_epoch * limit)
    if 0 < batches_per_epoch < interval:
        raise ConfigError(val_interval_beyond_the_epoch(interval, batches_per_epoch))
