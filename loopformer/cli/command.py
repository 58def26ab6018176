"""The ``loopformer`` command: LightningCLI (fit/validate/test/predict) plus tool subcommands."""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import jsonargparse
import yaml
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from loopformer.checkpoint import atomic
from loopformer.checkpoint.format import CheckpointDirError, read_settings, run_directory_of, store_data_settings
from loopformer.checkpoint.lightning_io import AtomicCheckpointIO
from loopformer.cli.list_overrides import (
    OverrideError,
    apply_overrides,
    edited_list_flags,
    parse_scalar,
    split_list_item_overrides,
)
from loopformer.cli.progress import LineProgress, stdout_is_a_terminal
from loopformer.cli.terminal import ParameterSummary, quiet_third_party_noise
from loopformer.config_groups import group_settings, migrate_flags, migrate_model, notice
from loopformer.data.datamodule import PuzzleDataModule
from loopformer.data.format import DatasetError
from loopformer.errors import ConfigError
from loopformer.files import load_yaml
from loopformer.module import LoopformerModule
from loopformer.runs.directory import ClaimRunDirectory, OutputsInCheckpointRun, run_directory
from loopformer.runs.parent import die_with_parent_if_asked
from loopformer.runs.ranks import RankWatch, lost_rank
from loopformer.runs.stopping import LastCheckpoint, finish_stopped_run, stop_requested, stopped_exit_code
from loopformer.training.nonfinite import NonFiniteError

TOOLS_EPILOG = (
    "other commands (each with its own --help): "
    "loopformer data {build,show} (puzzle datasets), "
    "loopformer sweep (run a W&B sweep file, online or offline), "
    "loopformer import-checkpoint (HRM / TRM / VirtualRecursiveNetwork weights), "
    "loopformer doctor (check this machine: versions, GPUs, attention kernel, CUDA graphs)"
)
_NO_EARLY_EXIT = ("--print_config", "--help", "-h")


# Config fields are documented by the docstring under each one (ArchConfig, TrainConfig, RuntimeConfig, OptimConfig,
# EMAConfig, EvalOptions): --help shows it.
jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)

# Where runs go is decided in one place, trainer.default_root_dir (default runs/): the default logger saves there,
# so a run's directory is <default_root_dir>/loopformer/<run id>/ (checkpoints/, config.yaml, predictions/) and
# W&B's own files go to <default_root_dir>/wandb/; without a logger, checkpoints go to <default_root_dir>/checkpoints.
DEFAULT_ROOT_DIR = "runs"
DEFAULT_LOGGER = {"class_path": "loopformer.runs.loggers.WandbLogger", "init_args": {"project": "loopformer"}}


class SaveConfigToRun(SaveConfigCallback):
    """Writes config.yaml to the run directory (beside checkpoints/), and the fully resolved config into the
    W&B run's config. Lightning would write it to the logger's save_dir, shared by every run of a sweep."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 (Lightning's signature)
        if self.already_saved:
            return
        directory = run_directory(trainer)  # a collective: every rank asks
        if trainer.is_global_zero:
            get_filesystem(directory).makedirs(directory, exist_ok=True)
            path = os.path.join(directory, self.config_filename)
            if "://" in directory:
                self.parser.save(self.config, path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile)
            else:
                atomic.write_text(path, self.parser.dump(self.config, skip_none=False))
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def resolved(self) -> dict[str, Any]:
        if getattr(self, "_resolved", None) is None:
            self._resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        return self._resolved

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:  # noqa: ANN001 (Lightning's)
        """The run's data settings go into every checkpoint: evaluating it needs nothing else."""
        store_data_settings(checkpoint, self.resolved().get("data"))

    def save_config(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001 (Lightning's signature)
        config = self.resolved()
        for logger in trainer.loggers:
            if isinstance(logger, LightningWandbLogger):
                logger.experiment.config.update(config, allow_val_change=True)


class LoopformerCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outputs_in_checkpoint_run: Optional[OutputsInCheckpointRun] = None
        kwargs.setdefault("save_config_callback", SaveConfigToRun)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        trainer_defaults = dict(kwargs.pop("trainer_defaults", None) or {})
        trainer_defaults.setdefault("logger", DEFAULT_LOGGER)
        trainer_defaults.setdefault("default_root_dir", DEFAULT_ROOT_DIR)
        trainer_defaults["callbacks"] = [
            ClaimRunDirectory(),
            RankWatch(),
            ParameterSummary(),
            *trainer_defaults.get("callbacks", []),
        ]
        super().__init__(LoopformerModule, PuzzleDataModule, *args, trainer_defaults=trainer_defaults, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (LightningCLI's signature)
        # --last_checkpoint.every_minutes etc.: the checkpoint on SIGTERM/SIGINT and the time-based last.ckpt
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]):  # noqa: ANN202
        """Every run writes its checkpoints atomically (AtomicCheckpointIO), unless the config names its own
        CheckpointIO."""
        if self._outputs_in_checkpoint_run is not None:
            callbacks = [*callbacks, self._outputs_in_checkpoint_run]
        configured = config.get("callbacks") or []
        given = [*callbacks, *(configured if isinstance(configured, (list, tuple)) else [configured])]
        if config.get("enable_progress_bar") is not False and not stdout_is_a_terminal():
            if not any(isinstance(c, ProgressBar) for c in given):
                callbacks = [*callbacks, LineProgress()]  # a line every few seconds, not tqdm's updates, in a log
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super()._instantiate_trainer({**config, "plugins": plugins}, callbacks)

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (LightningCLI's signature)
        self._cli_args: list[str] = []
        if not (args is None or isinstance(args, (list, tuple))):
            super().parse_arguments(parser, args)
            return
        args = list(sys.argv[1:] if args is None else args)
        check_config_files(args)
        args = migrate_old_settings(args)
        try:
            args = expand_list_item_overrides(parser, args)
            self._cli_args = list(args)
            # Parsed here: LightningCLI's own path warns whenever a list of args comes with a non-empty sys.argv.
            self.config = parser.parse_args(args)
        except jsonargparse.ArgumentError as e:
            raise ConfigError(parse_error_paragraph(str(e), parser, args)) from None
        check_generation_was_asked(self.config, self._cli_args)

    def before_instantiate_classes(self) -> None:
        """The default logger saves under trainer.default_root_dir (unless its save_dir is set to another place;
        "." is Lightning's default for it)."""
        section = self.config[self.subcommand] if self.subcommand else self.config
        trainer = section.trainer
        self._outputs_in_checkpoint_run = None
        if self.subcommand in EVALUATIONS:
            run = run_directory_of(section.get("ckpt_path") or "")
            if run is not None and not _given(self._cli_args, "trainer.default_root_dir"):
                self._outputs_in_checkpoint_run = OutputsInCheckpointRun(run, self.subcommand)
            # the states of training's callbacks (early stopping) do not matter to an evaluation
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used")
        check_devices(trainer.get("accelerator"), trainer.get("devices"), trainer.get("num_nodes"))
        logger = trainer.get("logger")
        check_wandb_installed(logger)
        if getattr(logger, "class_path", None) == DEFAULT_LOGGER["class_path"]:
            if logger.init_args.get("save_dir") in (None, "", "."):
                logger.init_args.save_dir = trainer.default_root_dir or DEFAULT_ROOT_DIR

    def _check_data(self) -> None:
        if hasattr(self.datamodule, "check_paths"):
            self.datamodule.check_paths()

    # before anything of the run starts (its W&B run, its processes): a wrong data path is one line, nothing left
    before_fit = before_validate = before_test = before_predict = _check_data

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):  # noqa: ANN202
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("validate", "test"):
            parser.set_defaults(verbose=False)  # the module prints each evaluation once; no second table
        return parser

    def init_parser(self, **kwargs: Any):  # noqa: ANN201 (LightningCLI's signature)
        if "description" not in kwargs:  # the top-level parser (subcommands come with their own description)
            kwargs["description"] = "Train, evaluate and sweep looped transformers (HRM/TRM family) on puzzles."
            kwargs["epilog"] = TOOLS_EPILOG
        parser = super().init_parser(**kwargs)
        parser.exit_on_error = False  # errors raise: parse_arguments turns them into one paragraph (no usage dump)
        return parser

    def _parse_ckpt_path(self) -> None:
        """Checkpoint hyperparameters replace the config files' model (those of checkpoints from before the
        config groups migrated), but explicit ``--model.*`` flags still win, so ``validate --ckpt_path C
        --model.train.act.halt_max_steps=32`` evaluates with more recursion. ``validate``, ``test`` and ``predict``
        also take the run's data settings from the checkpoint (or its run's config.yaml), unless a ``--config`` or
        ``--data`` gives data settings; ``--data.*`` flags still win."""
        check_ckpt_path(self.config)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams, data, source = read_settings(ckpt_path)
        if hparams:
            self._apply(subcommand, "model", hparams, f"--ckpt_path {ckpt_path}: its hyperparameters")
            self._apply(subcommand, "model", group_flags(self._cli_args, "model"))
        if data is not None and subcommand in EVALUATIONS and not data_given(self._cli_args, subcommand):
            print(f"loopformer: data settings from {source}", file=sys.stderr)
            self._apply(subcommand, "data", data, f"{source}: its data settings")
            self._apply(subcommand, "data", group_flags(self._cli_args, "data"))

    def _apply(self, subcommand: str, group: str, values: dict[str, Any], what: str = "") -> None:
        if not values:
            return
        try:
            self.config = self.parser.parse_object({subcommand: {group: values}}, self.config)
        except jsonargparse.ArgumentError as e:
            prefix = f"{what} do not fit this version's settings: " if what else ""
            raise ConfigError(prefix + parse_error_paragraph(str(e), self.parser, [subcommand])) from None


def _option_keys(parser: Any, args: list[str]) -> list[str]:
    """The dotted keys the (sub)command accepts, for suggestions."""
    subcommand = next((a for a in args if not a.startswith("-")), None)
    subcommands = getattr(parser, "_subcommands_action", None)
    target = subcommands._name_parser_map.get(subcommand, parser) if subcommands is not None else parser
    keys = []
    for action in target._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                keys.append(option[2:])
    return keys


def parse_error_paragraph(message: str, parser: Any, args: list[str]) -> str:
    """jsonargparse's error (which it would print after the whole usage) as one paragraph: what was wrong, and for
    an unknown key the nearest valid ones."""
    import difflib
    import re

    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    text = re.sub(r"\s+", " ", text)
    outer = re.match(r'Parser key "([\w.]+)":', text)
    keyed = re.findall(r'Parser key "([\w.]+)": Expected a (.+?)\. Got value: (\S+)', text)
    bare = re.search(r"Expected a (.+?)\. Got value: (\S+)", text)
    union = re.search(r"Union subtypes Subtypes: \[(.*?)\].*?Given value: (\S+?)\.?(?: |$)", text)
    if outer and union and not (keyed or bare):  # a value none of an Optional's or a Union's types takes
        kinds = [_type_name(t.strip()) for t in union.group(1).split(",")]
        kinds = ["null" if k == "NoneType" else k for k in kinds]
        text = f"{outer.group(1)} expected {' or '.join(kinds)}, got {union.group(2)}"
    elif outer and (keyed or bare):  # a wrong type, perhaps deep inside a list or a union: say the innermost part
        key, expected, got = keyed[-1] if keyed else (outer.group(1), *bare.groups())
        where = f"{outer.group(1)}: " if key != outer.group(1) else ""
        text = f"{where}{key} expected {_type_name(expected)}, got {got}"
    unknown = re.findall(r"--([\w.]+)", text) if "nrecognized" in text else re.findall(r'key "([\w.]+)"', text)
    unknown += re.findall(r"accept option '([\w.]+)'", text)  # a key in a config or architecture file
    keys = _option_keys(parser, args)
    hints = []
    for key in dict.fromkeys(unknown):
        if key in keys:
            continue
        near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        if near:
            hints.append(f"{key}: did you mean {' or '.join(near)}?")
    suffix = (". " + " ".join(hints)) if hints else "."
    return f"{text.rstrip('.')}{suffix} `loopformer <command> --help` lists every option."


def _type_name(expected: str) -> str:
    """jsonargparse's type text, as a user reads it: ``<class 'int'>`` -> an integer, ``Literal['a', 'b']`` -> one
    of a, b."""
    import re

    choices = re.search(r"Literal\[(.*)\]", expected)
    if choices:
        return "one of " + ", ".join(c.strip(" '\"") for c in choices.group(1).split(","))
    simple = re.fullmatch(r"<class '(\w+)'>", expected)
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    return names.get(simple.group(1), simple.group(1)) if simple else expected


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


WANDB_LOGGERS = (DEFAULT_LOGGER["class_path"], "lightning.pytorch.loggers.WandbLogger")


def check_wandb_installed(logger: Any) -> None:
    """A W&B logger (loopformer's default) without the wandb package is one paragraph before anything starts, rather than
    jsonargparse's traceback of the failed instantiation."""
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


CONFIG_EXPECTED = "a loopformer config: a YAML mapping with any of seed_everything, trainer, model, data (see configs/)"


def read_config_file(path: str | Path) -> Any:
    """A ``--config``/``--model`` file's content, parsed once per start-up however many checks read it (a copy: the
    callers edit what they get)."""
    stat = os.stat(path)
    return copy.deepcopy(_parsed_config_file(str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _parsed_config_file(path: str, inode: int, mtime_ns: int, size: int) -> Any:
    return load_yaml(path, ConfigError, CONFIG_EXPECTED)


def check_config_files(args: list[str]) -> None:
    """Every ``--config FILE`` is a readable YAML mapping, or one line naming it (jsonargparse would print the
    whole text, or a traceback for binary content)."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if path.lstrip().startswith("{"):  # an inline config string
            continue
        content = read_config_file(path) if Path(path).is_file() else load_yaml(path, ConfigError, CONFIG_EXPECTED)
        if not isinstance(content, dict):
            found = "nothing" if content is None else f"a {type(content).__name__}"
            raise ConfigError(f"{path}: holds {found}; expected {CONFIG_EXPECTED}.")


def _scalar_flag(key: str, value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return f"--{key}={text.removesuffix(chr(10) + '...').strip()}"


def _flags(prefix: str, values: dict[str, Any]) -> list[str]:
    """``{"act": {"halt_max_steps": 8}}`` under ``model.train`` -> ``["--model.train.act.halt_max_steps=8"]``."""
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flags(f"{prefix}.{key}", value)
        else:
            out.append(_scalar_flag(f"{prefix}.{key}", value))
    return out


def migrate_old_settings(args: list[str]) -> list[str]:
    """Settings under their old names (``config_groups``) in flags, ``--config``, ``--model`` and ``--model.arch``
    files, renamed in place, with one notice line per source. A file is read here and passed on as its migrated text
    (``--config`` accepts a YAML string); an architecture file's moved keys follow it as flags."""
    args, old_flags = migrate_flags(args)
    if old_flags:
        print(notice("the command line", old_flags), file=sys.stderr)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key not in ("config", "model", "model.arch") or (not eq and i + 1 >= len(args)):
            out.append(arg)
            i += 1
            continue
        if not eq:
            value = args[i + 1]
            i += 1
        i += 1
        out += _migrated_file_flags(key, value)
    return out


def _migrated_file_flags(key: str, value: str) -> list[str]:
    path = Path(value)
    if value.lstrip().startswith("{") or path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return [f"--{key}", value]
    content = read_config_file(path)
    if key == "model.arch" and isinstance(content, dict):
        grouped = group_settings(content)
        if len(grouped) == 1:
            return [f"--{key}", value]
        moved = [f"model.arch.{k}" for k in content if k not in grouped["arch"]]
        print(notice(str(path), moved), file=sys.stderr)
        arch = yaml.safe_dump(grouped.pop("arch"), sort_keys=False)
        extra = [flag for group, values in grouped.items() for flag in _flags(f"model.{group}", values)]
        return [f"--{key}", arch, *extra]
    if key == "model" and isinstance(content, dict):  # a model file (configs/vrn/): arch, train, runtime, ...
        content = {"model": content}
    sections = [content] + [
        content[s] for s in ("fit", "validate", "test", "predict") if isinstance(content.get(s), dict)
    ]
    found: list[str] = []
    for section in sections:
        if isinstance(section.get("model"), dict):
            section["model"], old = migrate_model(section["model"])
            found += old
    if not found:
        return [f"--{key}", value]
    print(notice(str(path), found), file=sys.stderr)
    migrated = content["model"] if key == "model" else content
    return [f"--{key}", yaml.safe_dump(migrated, sort_keys=False)]


def _given(args: list[str], key: str) -> bool:
    return any(a == f"--{key}" or a.startswith((f"--{key}=", f"--{key}.")) for a in args)


def check_generation_was_asked(config, args: list[str]) -> None:  # noqa: ANN001 (a jsonargparse Namespace)
    """A config file's ``data.generate`` builds a dataset where that file points. When ``data.data_paths`` comes
    from the command line and no ``--data.generate`` flag does, a missing dataset there is an error (a typo must
    not silently become a new dataset)."""
    subcommand = config.get("subcommand")
    section = config[subcommand] if subcommand else config
    data = section.get("data")
    if data is None or not data.get("generate") or not _given(args, "data.data_paths") or _given(args, "data.generate"):
        return
    paths = data.get("data_paths")
    first = Path(paths if isinstance(paths, (str, os.PathLike)) else paths[0])
    if not (first / "train" / "dataset.json").is_file():
        raise DatasetError(
            f"--data.data_paths {first.resolve()} holds no dataset (no train/dataset.json). The config's data.generate "
            f"builds one only where the config file points; to generate one at {first}, also pass a --data.generate "
            "flag (e.g. --data.generate.seed=0)."
        )


def expand_list_item_overrides(parser, args: list[str]) -> list[str]:
    """Turn ``--model.arch.stages.0.repeat=3`` into one ``--model.arch.stages=[...]`` flag (see list_overrides)."""
    try:
        rest, overrides = split_list_item_overrides(args)
    except OverrideError as e:
        parser.error(str(e))
    if not overrides:
        return args
    first_pass = [a for a in rest if a.split("=", 1)[0] not in _NO_EARLY_EXIT]
    if len(first_pass) != len(rest):  # --print_config takes an optional value
        first_pass = [a for a in first_pass if not a.startswith("--print_config")]
    cfg = parser.parse_args(first_pass)
    section = cfg[cfg.subcommand] if getattr(cfg, "subcommand", None) else cfg

    def lookup(key: str) -> Any:
        if key not in section:
            raise KeyError(key)
        return section[key]

    try:
        edited = apply_overrides(lookup, overrides)
    except OverrideError as e:
        parser.error(str(e))
    return rest + edited_list_flags(edited)


EVALUATIONS = ("validate", "test", "predict")  # the subcommands that evaluate a checkpoint on its run's data


def data_given(args: list[str], subcommand: str) -> bool:
    """Whether the command line gives data settings as a whole: ``--data FILE`` or a ``--config`` with ``data``."""
    for i, arg in enumerate(args):
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key == "data":
            return True
        if key != "config" or (not eq and i + 1 >= len(args)):
            continue
        value = value if eq else args[i + 1]
        content = read_config_file(value) if Path(value).is_file() else yaml.safe_load(value)
        if isinstance(content, dict) and ("data" in content or "data" in (content.get(subcommand) or {})):
            return True
    return False


def group_flags(args: list[str], group: str) -> dict[str, Any]:
    """``--model.a=1 --model.b 2`` -> ``{"a": 1, "b": 2}`` for group ``model`` (values parsed as wandb writes
    them)."""
    out: dict[str, Any] = {}
    prefix = f"--{group}."
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(prefix):
            if "=" in arg:
                key, value = arg[len(prefix) :].split("=", 1)
            elif i + 1 < len(args):
                key, value = arg[len(prefix) :], args[i + 1]
                i += 1
            else:
                break
            parsed = parse_scalar(value)
            if isinstance(parsed, str) and parsed.endswith((".yaml", ".yml")) and Path(parsed).is_file():
                # a whole group from a file (`--model.arch configs/arch/x.yaml`): later flags edit inside it
                parsed = load_yaml(parsed, ConfigError, f"the settings of {prefix}{key}")
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[leaf] = parsed
        i += 1
    return out


def main(argv: Optional[list[str]] = None) -> None:
    """fit/validate/test/predict (``cli.entry.main`` starts the tool subcommands itself, without Lightning)."""
    die_with_parent_if_asked()
    quiet_third_party_noise()
    try:
        LoopformerCLI(args=argv)  # None: LightningCLI reads sys.argv itself
    except (ConfigError, DatasetError, CheckpointDirError) as e:
        # Bad input is the user's to fix: one clear paragraph and a non-zero exit, no traceback.
        print(f"loopformer: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (NonFiniteError, atomic.WriteError) as e:
        print(f"loopformer: error: {e}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:
        # Stopped by SIGTERM or SIGINT (a sweep agent, a scheduler, Ctrl+C): not a finished run.
        finish_stopped_run()
        sys.exit(stopped_exit_code())
    except Exception:
        if lost_rank():  # a collective failed because a peer died: say which, not the collective's traceback
            print(lost_rank(), file=sys.stderr)
            sys.exit(1)
        # After a signal, the other ranks leave as they stop, and a collective here can fail with "connection
        # reset by peer" before the stop is agreed: that is still a stopped run, not a crash.
        if not stop_requested():
            raise
        finish_stopped_run()
        sys.exit(stopped_exit_code())
