"""Where the start-up of `loopformer fit` goes, up to the end of its first training step: the quickstart (its data
already generated), W&B offline, on this machine. Each phase is timed in this process by wrapping the method that
does it; the help of the subcommands, cached or not, is timed as separate processes.

    python benchmarks/startup.py [--data data/sudoku4-minimal]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
marks: list[tuple[str, float]] = []


def mark(name: str) -> None:
    marks.append((name, time.perf_counter()))


def timed(owner: type, method: str, name: str) -> None:
    original = getattr(owner, method)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases.setdefault(name, 0.0)
            phases[name] += time.perf_counter() - start

    setattr(owner, method, wrapper)


phases: dict[str, float] = {}
BUILD = "build the parser (signatures of trainer, model, data)"


def parser_times(command, config_args: list[str]) -> list[tuple[str, float]]:
    """Both sides in this process, after the run above has built it once: the parser as a run builds it now (the
    config classes' field docstrings not read), as ``fit --help`` builds it (read for fit) and as it built it
    before (read for all four subcommands, as --help still does where the order of the command line is unusual)."""
    import contextlib
    import io

    asked_of = command.help_asked_of
    out = []
    for what, flag, help_of in (("as a run builds it (field docs not read)", "--print_config", asked_of),
                                ("as `fit --help` builds it (fit's field docs read)", "--help", asked_of),
                                ("as a run built it before (every subcommand's field docs read)", "--print_config",
                                 lambda args: "*")):  # fmt: skip
        before = phases.pop(BUILD)
        command.help_asked_of = help_of
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                command.LoopformerCLI(args=["fit", *config_args, flag])
            except SystemExit:
                pass
        command.help_asked_of = asked_of
        out.append((what, phases.pop(BUILD)))
        phases[BUILD] = before
    return out


def help_times() -> list[tuple[str, float]]:
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "LOOPFORMER_CACHE_DIR": cache}
        for args, what in ((["--help"], "first"), (["--help"], "cached"), (["fit", "--help"], "first"),
                           (["fit", "--help"], "cached"), (["data", "--help"], ""), (["sweep", "--help"], ""),
                           (["import-checkpoint", "--help"], "")):  # fmt: skip
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "loopformer.cli", *args], env=env, capture_output=True, check=True)
            out.append(
                (f"loopformer {' '.join(args)} {f'({what})' if what else ''}".strip(), time.perf_counter() - start)
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data/sudoku4-minimal"), help="the quickstart's dataset (generated)")
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    work = Path(tempfile.mkdtemp(prefix="loopformer-startup-"))

    start = time.perf_counter()
    import lightning  # noqa: F401
    import torch  # noqa: F401

    phases["import torch + Lightning"] = time.perf_counter() - start
    start = time.perf_counter()
    from loopformer.cli import command

    phases["import loopformer (wandb, jsonargparse, ...)"] = time.perf_counter() - start

    import lightning as L

    from loopformer.data.datamodule import PuzzleDataModule
    from loopformer.module import LoopformerModule
    from loopformer.runs.attention import ResolveAttention
    from loopformer.runs.loggers import WandbLogger

    timed(command.LoopformerCLI, "setup_parser", BUILD)
    timed(command.LoopformerCLI, "parse_arguments", "parse the command line and config files")
    timed(command.LoopformerCLI, "instantiate_classes", "instantiate model, data module, trainer")
    timed(PuzzleDataModule, "_split", "load the dataset (train and test splits)")
    timed(LoopformerModule, "build", "build the network")
    timed(ResolveAttention, "resolve", "attention: choose the backend (kernel self-check where it applies)")
    original_experiment = WandbLogger.experiment.fget

    def experiment(self):
        first = self._experiment is None
        start = time.perf_counter()
        try:
            return original_experiment(self)
        finally:
            if first:
                phases["W&B run start (offline)"] = time.perf_counter() - start

    WandbLogger.experiment = property(experiment)

    class FirstStep(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, *a):
            if trainer.global_step == 0:
                self.start = time.perf_counter()
                mark("first step starts")

        def on_train_batch_end(self, trainer, pl_module, *a):
            if trainer.global_step == 1:
                phases["first training step"] = time.perf_counter() - self.start
                mark("first step ends")
                raise SystemExit(0)

    config_args = ["--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={args.data}",
                   f"--trainer.default_root_dir={work}", "--trainer.enable_progress_bar=false"]  # fmt: skip
    cli_start = time.perf_counter()
    try:
        command.LoopformerCLI(args=["fit", *config_args], trainer_defaults={"callbacks": [FirstStep()]})
    except SystemExit:
        pass
    total = time.perf_counter() - T0
    fit_start = time.perf_counter() - cli_start
    accounted = sum(v for k, v in phases.items() if not k.startswith("import"))
    print(
        f"start-up of `loopformer fit --config configs/quickstart.yaml` up to the end of its first step: {total:.2f} s"
    )
    print("| phase | seconds |\n|---|---:|")
    for name, seconds in phases.items():
        print(f"| {name} | {seconds:.3f} |")
    print(
        f"| the rest (Lightning's trainer and fit start, model summary, start-up lines) | {fit_start - accounted:.3f} |"
    )
    print("\n| building the parser of fit/validate/test/predict, in this process | seconds |\n|---|---:|")
    for name, seconds in parser_times(command, config_args):
        print(f"| {name} | {seconds:.3f} |")
    print("\n| command | seconds (a process each) |\n|---|---:|")
    for name, seconds in help_times():
        print(f"| `{name}` | {seconds:.3f} |")


if __name__ == "__main__":
    main()
