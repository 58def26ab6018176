"""The ``loopformer`` command: LightningCLI (fit/validate/test/predict) plus tool subcommands."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import jsonargparse
import yaml
from jsonargparse._actions import _ActionPrintConfig  # no public hook prints the config after parsing
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from loopformer.checkpoint import atomic
from loopformer.checkpoint.format import (
    EXTRA_KEY,
    CheckpointDirError,
    check_dataset_dims,
    check_weights_fit,
    load_checkpoint,
    read_settings,
    run_directory_of,
    store_data_settings,
)
from loopformer.checkpoint.lightning_io import AtomicCheckpointIO
from loopformer.cli.checks import (
    WANDB_LOGGERS,
    arch_changes,
    check_ckpt_path,
    check_devices,
    check_generation_was_asked,
    check_optimizer_continues,
    check_runs_keep_their_checkpoints,
    check_trainer_fits_the_algorithm,
    check_val_interval_fits_the_epoch,
    check_wandb_installed,
    given,
    resolve_seed,
    val_interval_beyond_the_epoch,
)
from loopformer.cli.config_files import (
    check_config_files,
    data_given,
    generate_kind_resets,
    group_flags,
    migrate_old_settings,
)
from loopformer.cli.flag_scan import help_asked_of
from loopformer.cli.list_overrides import expand_list_item_overrides
from loopformer.cli.parse_errors import parse_error_paragraph
from loopformer.cli.progress import LineProgress
from loopformer.cli.terminal import ParameterSummary, quiet_third_party_noise
from loopformer.cli.trainer_types import counts_before_fractions
from loopformer.data.datamodule import PuzzleDataModule
from loopformer.data.format import DatasetError
from loopformer.errors import ConfigError
from loopformer.files import is_a_terminal
from loopformer.module import LoopformerModule
from loopformer.runs.directory import (
    ClaimRunDirectory,
    FirstStartNotice,
    OutputsInCheckpointRun,
    OutputsNotice,
    run_directory,
)
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


# Where runs go is decided in one place, trainer.default_root_dir (default runs/): the default logger saves there,
# so a run's directory is <default_root_dir>/loopformer/<run id>/ (checkpoints/, config.yaml, predictions/) and
# W&B's own files go to <default_root_dir>/wandb/; without a logger, checkpoints go to <default_root_dir>/checkpoints.
DEFAULT_ROOT_DIR = "runs"
DEFAULT_LOGGER = {"class_path": WANDB_LOGGERS[0], "init_args": {"project": "loopformer"}}


def place_loggers(trainer: Any) -> None:  # noqa: ANN401 (a jsonargparse Namespace)
    """Every logger saves under trainer.default_root_dir unless its save_dir names another place ("." is the
    default of W&B's, CSV's and TensorBoard's). A logger switched to from W&B (``--trainer.logger=CSVLogger``)
    inherits W&B's name, null, which would put its runs straight into save_dir (``<root>/version_N``): they go where
    W&B's go, ``<root>/loopformer/<version>``."""
    logger = trainer.get("logger")
    for each in logger if isinstance(logger, list) else [logger]:
        init_args = getattr(each, "init_args", None)
        if init_args is None:
            continue
        if "save_dir" in init_args and init_args.get("save_dir") in (None, "", "."):
            init_args.save_dir = trainer.default_root_dir or DEFAULT_ROOT_DIR
        if "name" in init_args and init_args.get("name") is None and each.get("class_path") not in WANDB_LOGGERS:
            init_args.name = DEFAULT_LOGGER["init_args"]["project"]


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
        self._mapped_checkpoint: Optional[tuple[str, dict[str, Any]]] = None  # (--ckpt_path, its content)
        self._checkpoint_arch: dict[str, Any] = {}  # its architecture settings, read with its other settings
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
        counts_before_fractions(kwargs.get("trainer_class", Trainer))
        command_line = kwargs.get("args")
        self._help_of = help_asked_of(sys.argv[1:] if command_line is None else command_line)
        super().__init__(LoopformerModule, PuzzleDataModule, *args, trainer_defaults=trainer_defaults, **kwargs)

    def _set_seed(self) -> None:
        section = self.config[self.subcommand] if self.subcommand else self.config
        section["seed_everything"] = resolve_seed(section.get("seed_everything"))
        # Quietly: Lightning's "Seed set to N" came before the checks of the settings, so a run stopped by a bad
        # value printed it above its one-line error. The run's start-up summary names the seed instead.
        seed_log = logging.getLogger("lightning.fabric.utilities.seed")
        level = seed_log.level
        seed_log.setLevel(logging.WARNING)
        try:
            super()._set_seed()
        finally:
            seed_log.setLevel(level)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (LightningCLI's signature)
        # --last_checkpoint.every_minutes etc.: the checkpoint on SIGTERM/SIGINT and the time-based last.ckpt
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]):  # noqa: ANN202
        """Every run writes its checkpoints atomically (AtomicCheckpointIO), unless the config names its own
        CheckpointIO. The data is checked first, before the Trainer prints its devices: a wrong path or a dataset
        that cannot serve the run is one line, and nothing of the run (its logger's run, its processes) starts.
        (Without a subcommand, as an API building the objects, nothing runs, and nothing is checked.)"""
        if self.subcommand is not None and isinstance(self.datamodule, PuzzleDataModule):
            self.datamodule.check_before_start(self.subcommand)
            self._check_checkpoint_fits_the_data()
            if self.subcommand == "fit" and isinstance(self.model, LoopformerModule) and self.datamodule.is_built():
                self.model.check_warm_start(self.datamodule.dims)
            check_val_interval_fits_the_epoch(config, self.datamodule.batches_per_epoch)
        if self._outputs_in_checkpoint_run is not None:
            callbacks = [*callbacks, self._outputs_in_checkpoint_run]
        elif self.subcommand in EVALUATIONS:
            callbacks = [*callbacks, OutputsNotice(self.subcommand)]
        if self.subcommand == "fit" and self.config.fit.get("ckpt_path") == "last":
            warnings.filterwarnings("ignore", message=FirstStartNotice.LIGHTNING_WARNING)
            callbacks = [*callbacks, FirstStartNotice()]
        configured = config.get("callbacks") or []
        every_callback = [*callbacks, *(configured if isinstance(configured, (list, tuple)) else [configured])]
        if config.get("enable_progress_bar") is not False and not is_a_terminal(sys.stdout):
            if not any(isinstance(c, ProgressBar) for c in every_callback):
                callbacks = [*callbacks, LineProgress()]  # a line every few seconds, not tqdm's updates, in a log
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        try:
            trainer = super()._instantiate_trainer({**config, "plugins": plugins}, callbacks)
        except (MisconfigurationException, ValueError) as e:  # the Trainer checking its settings (strategy, devices)
            raise ConfigError(f"trainer: {one_line(e)}") from None
        if self.subcommand is not None and isinstance(self.datamodule, PuzzleDataModule):
            self.datamodule.check_batches_split(self.subcommand, trainer.world_size)
        return trainer

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (LightningCLI's signature)
        self._cli_args: list[str] = []
        if not (args is None or isinstance(args, (list, tuple))):
            super().parse_arguments(parser, args)
            return
        args = list(sys.argv[1:] if args is None else args)
        check_config_files(args)
        args = generate_kind_resets(migrate_old_settings(args))
        try:
            args = expand_list_item_overrides(parser, args)
            self._cli_args = list(args)
            # Parsed here: LightningCLI's own path warns whenever a list of args comes with a non-empty sys.argv.
            # --print_config is answered once the checkpoint's settings are in (_parse_ckpt_path), not here.
            with _ActionPrintConfig.skip_print_config():
                self.config = parser.parse_args(args)
        except jsonargparse.ArgumentError as e:
            raise ConfigError(parse_error_paragraph(str(e), parser, args)) from None

    def before_instantiate_classes(self) -> None:
        """Checks of the parsed config before any class is built (the loggers were placed by _parse_ckpt_path)."""
        section = self.config[self.subcommand] if self.subcommand else self.config
        trainer = section.trainer
        self._outputs_in_checkpoint_run = None
        if self.subcommand in EVALUATIONS:
            run = run_directory_of(section.get("ckpt_path") or "")
            if run is not None and not given(self._cli_args, "trainer.default_root_dir"):
                self._outputs_in_checkpoint_run = OutputsInCheckpointRun(run, self.subcommand)
            # the states of training's callbacks (early stopping) do not matter to an evaluation
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used")
        check_devices(trainer.get("accelerator"), trainer.get("devices"), trainer.get("num_nodes"))
        check_trainer_fits_the_algorithm(self.subcommand, section)
        logger = trainer.get("logger")
        check_wandb_installed(logger)
        check_runs_keep_their_checkpoints(self.subcommand, section.get("ckpt_path"), trainer)

    def instantiate_classes(self) -> None:
        """A class of the config whose package is missing (``--trainer.logger=TensorBoardLogger`` without
        tensorboard) is one line naming both, not jsonargparse's chained tracebacks."""
        try:
            super().instantiate_classes()
        except ValueError as e:
            missing = missing_package(e)
            if missing is None:
                raise
            raise ConfigError(missing) from None

    def _check_checkpoint_fits_the_data(self) -> None:
        """A checkpoint and data of another shape: one line here, not a traceback once the run has started. (Data
        still to be generated is checked when the checkpoint loads.)"""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = self._checkpoint(ckpt_path)
            if self.datamodule.is_built():
                check_dataset_dims(checkpoint, self.datamodule.dims, f"--ckpt_path {ckpt_path}")
            dims = checkpoint.get(EXTRA_KEY, {}).get("dataset_dims")
            if dims and isinstance(self.model, LoopformerModule):
                changed = arch_changes(self._cli_args, self._checkpoint_arch)
                expected = self.model.meta_network(dims).state_dict()
                check_weights_fit(checkpoint, expected, f"--ckpt_path {ckpt_path}", changed)
        self._mapped_checkpoint = None  # its last reader at start-up; Lightning loads it for the run itself

    def _checkpoint(self, path: str) -> dict[str, Any]:
        """The ``--ckpt_path`` checkpoint, memory-mapped once for the start-up checks that read it (its settings,
        whether fit can resume from it, its data's shape), not once per check."""
        if self._mapped_checkpoint is None or self._mapped_checkpoint[0] != path:
            self._mapped_checkpoint = (path, load_checkpoint(path, mmap=True))
        return self._mapped_checkpoint[1]

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):  # noqa: ANN202
        # Config fields are documented by the docstring under each one (ArchConfig, TrainConfig, RuntimeConfig,
        # OptimConfig, EMAConfig, EvalOptions): --help shows it. Reading those docstrings (each class's source,
        # compiled once per subcommand) is most of the time building the parser takes (0.9 s of 1.2 s on 2 cores),
        # so only the subcommand whose help is printed reads them.
        jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=self._help_of in (subcommand, "*"))
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
        """The checkpoint's settings (below), then what a typed ``--data.data_paths`` means for ``data.generate``
        (the checkpoint's included) and where the loggers save; then ``--print_config`` prints the config with them."""
        printing = _ActionPrintConfig.is_print_config_requested(self.parser)  # needs no checkpoint or data there
        with _ActionPrintConfig.skip_print_config():  # _apply parses: it would print a half-applied config
            self._take_checkpoint_settings(check_path=not printing)
            check_generation_was_asked(self.config, self._cli_args, require_dataset=not printing)
        subcommand = self.config.get("subcommand")
        place_loggers((self.config[subcommand] if subcommand else self.config).trainer)
        _ActionPrintConfig.print_config_if_requested(self.parser, self.config)  # what the run would use, and exit

    def _take_checkpoint_settings(self, check_path: bool = True) -> None:
        """Checkpoint hyperparameters replace the config files' model (those of checkpoints from before the
        config groups migrated), but explicit ``--model.*`` flags still win, so ``validate --ckpt_path C
        --model.train.act.halt_max_steps=32`` evaluates with more recursion. ``validate``, ``test`` and ``predict``
        also take the run's data settings from the checkpoint (or its run's config.yaml), unless a ``--config`` or
        ``--data`` gives data settings; ``--data.*`` flags still win."""
        if check_path:
            check_ckpt_path(self.config)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        if subcommand == "fit" and "optimizer_states" not in self._checkpoint(ckpt_path):
            raise ConfigError(
                f"--ckpt_path {ckpt_path} holds weights only (an imported checkpoint, or one saved with "
                "save_weights_only), so fit cannot resume from it: to train from its weights with a fresh optimizer, "
                f"schedule and step, pass --model.init_from {ckpt_path} instead, with an architecture its weights fit "
                f"(`loopformer validate --ckpt_path {ckpt_path} --print_config` prints the checkpoint's)."
            )
        hparams, data, source = read_settings(ckpt_path, self._checkpoint(ckpt_path))
        self._checkpoint_arch = (hparams or {}).get("arch") or {}
        if hparams:
            self._apply(subcommand, "model", hparams, f"--ckpt_path {ckpt_path}: its hyperparameters")
            self._apply(subcommand, "model", group_flags(self._cli_args, "model"))
            if subcommand == "fit":
                stored = (hparams.get("optim") or {}).get("optimizer")
                check_optimizer_continues(ckpt_path, stored, self.config.fit.model.optim.optimizer)
        if subcommand == "fit" and check_path:
            before, now = (data or {}).get("global_batch_size"), self.config.fit.data.global_batch_size
            if before is not None and before != now:
                print(
                    f"loopformer: data.global_batch_size {before} -> {now}: the resumed run cannot be the exact "
                    "continuation of the checkpoint's (the ACT carry restarts; the epoch goes on at the same batch "
                    "index, counted in batches of the new size)",
                    file=sys.stderr,
                )
        if subcommand in EVALUATIONS and data is None and not data_given(self._cli_args, subcommand):
            if not given(self._cli_args, "data.data_paths"):
                paths = self.config[subcommand].data.data_paths
                shown = paths if isinstance(paths, (str, os.PathLike)) else " ".join(map(str, paths))
                print(
                    f"loopformer: --ckpt_path {ckpt_path} carries no data settings (an imported checkpoint, or an "
                    f"older one away from its run): {subcommand} reads data.data_paths {shown}, the default; "
                    "--data.data_paths DIR gives its data",
                    file=sys.stderr,
                )
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


# Lightning's ValueError when fit starts: an evaluation interval beyond the epoch it is counted in
VAL_CHECK_BEYOND_EPOCH = re.compile(
    r"`val_check_interval` \((\S+)\) must be less than or equal to the number of the training batches \((\d+)\)"
)


def lightning_refusal(error: BaseException) -> Optional[str]:
    """A setting Lightning refused once the run had started, as one line; None for any other error."""
    if isinstance(error, MisconfigurationException):
        return one_line(error)
    numbers = VAL_CHECK_BEYOND_EPOCH.search(one_line(error)) if isinstance(error, ValueError) else None
    if numbers is None:
        return None
    return val_interval_beyond_the_epoch(numbers[1], numbers[2])


def missing_package(error: BaseException) -> Optional[str]:
    """``class: why`` where an ImportError among ``error``'s causes kept a configured class from being built."""
    chain, cause = [], error
    while cause is not None and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__  # raised from it: not an error handled on the way (__context__)
    missing = next((e for e in chain if isinstance(e, ImportError)), None)
    if missing is None:
        return None
    class_path = next((m[1] for e in chain if (m := re.search(r"class_path '([\w.]+)'", str(e)))), None)
    why = str(missing).splitlines()[0].strip()
    return f"{class_path or 'a configured class'} cannot be built: {why}"


def wandb_unreachable(error: BaseException) -> Optional[str]:
    """A W&B run that could not start online (no network on a compute node, W&B refusing the login), as one line
    with the ways on; None for any other error. (wandb waits its init_timeout, 90 s, first.)"""
    errors = sys.modules.get("wandb.errors")
    if errors is None or not isinstance(error, errors.Error):
        return None
    what = one_line(error).split(" Consider increasing the init_timeout")[0]  # wandb's advice, not ours
    return (
        f"W&B could not start this run online ({type(error).__name__}: {what}). Where this machine cannot reach W&B, "
        "log offline and upload later: WANDB_MODE=offline (then `wandb sync <run dir>`), or "
        "--trainer.logger.init_args.offline=true."
    )


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())


EVALUATIONS = ("validate", "test", "predict")  # the subcommands that evaluate a checkpoint on its run's data


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
    except Exception as e:
        refused = lightning_refusal(e)
        if refused is not None:  # a setting Lightning refuses once the run has started: bad input, not a crash
            print(f"loopformer: error: {refused}", file=sys.stderr)
            sys.exit(2)
        unreachable = wandb_unreachable(e)
        if unreachable is not None:
            print(f"loopformer: error: {unreachable}", file=sys.stderr)
            sys.exit(1)
        if lost_rank():  # a collective failed because a peer died: say which, not the collective's traceback
            print(lost_rank(), file=sys.stderr)
            sys.exit(1)
        # After a signal, the other ranks leave as they stop, and a collective here can fail with "connection
        # reset by peer" before the stop is agreed: that is still a stopped run, not a crash.
        if not stop_requested():
            raise
        finish_stopped_run()
        sys.exit(stopped_exit_code())
