"""The files in sweeps/ are valid for W&B's engine, and what the agent runs reaches the model."""

from pathlib import Path

import pytest
import yaml

import sweeps
from loopformer.cli import LoopformerCLI
from loopformer.sweep.spec import agent_command, load_sweep
from sweeps import RunState

ROOT = Path(__file__).resolve().parents[2]
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.name for p in SWEEP_FILES])
def test_sweep_files_are_valid_and_follow_the_recipe(path):
    config = load_sweep(path)
    assert sweeps.schema_violations_from_proposed_config(config) == []
    assert config["program"] == "loopformer"
    assert config["metric"] == {"name": "val/exact_accuracy", "goal": "maximize"}
    assert config["early_terminate"] == {"type": "hyperband", "min_iter": 3, "max_iter": 10, "s": 2, "eta": 3}
    assert config["command"][:3] == ["${env}", "loopformer", "fit"] and config["command"][-1] == "${args}"
    middle = config["command"][3:-1]
    configs = [middle[i + 1] for i, arg in enumerate(middle) if arg in ("--config", "--model", "--model.arch")]
    assert configs and all((ROOT / c).is_file() for c in configs), configs
    assert all(name.startswith("model.arch.stages.") for name in config["parameters"])


def test_grid_enumerates_256_distinct_runs():
    config = load_sweep(ROOT / "sweeps/stages_grid.yaml")
    runs = []
    while (run := sweeps.next_run(config, runs, validate=True)) is not None:
        run.state = RunState.finished
        runs.append(run)
    combos = {tuple(sorted((k, v["value"]) for k, v in r.config.items())) for r in runs}
    assert len(runs) == len(combos) == 256


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.name for p in SWEEP_FILES])
def test_the_agents_command_line_reaches_the_model(path, sudoku4_dir, tmp_path):
    config = load_sweep(path)
    run = sweeps.next_run(config, [], validate=True)
    argv = agent_command(config, run.config)
    assert argv[:3] == ["/usr/bin/env", "loopformer", "fit"]
    sampled_flags = argv[-len(run.config) :]
    assert all(f.startswith("--model.arch.stages.") and "=" in f for f in sampled_flags)
    cwd_args = [a if not a.startswith("configs/") else str(ROOT / a) for a in argv[2:]]
    cli = LoopformerCLI(
        args=cwd_args
        + [
            f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=8",
            "--data.eval_batch_size=8",
            "--data.epochs_per_iter=1",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.strategy=auto",
            "--trainer.precision=32-true",
            "--trainer.fast_dev_run=true",
            "--trainer.enable_progress_bar=false",
            "--model.arch.hidden_size=64",
            "--model.arch.puzzle_emb_ndim=64",
            "--model.train.act.halt_max_steps=2",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    stages = cli.model.hparams.arch["stages"]
    for key, value in run.config.items():
        _, _, _, index, field = key.split(".")
        assert stages[int(index)][field] == value["value"], key
    arch, train = cli.model.net.config.arch, cli.model.train_config
    # one batch: one optimizer step, or with DIS's mask method one per supervision step
    per_batch = train.dis.max_steps if train.algorithm == "dis" and train.dis.loss_method == "mask" else 1
    assert cli.trainer.global_step == per_batch
    assert arch.effective_depth == arch.outer_cycles * sum(s["repeat"] for s in stages)
    if path.stem.endswith("_equal_compute"):  # the budget reaches the model beside the sampled schedule
        twin = load_sweep(path.with_name(path.name.replace("_equal_compute", "")))
        assert config["parameters"] == twin["parameters"] and config["method"] == twin["method"]
        assert cli.model.budget.train_flops > 0 and cli.model.budget.eval_every_flops * 10 == pytest.approx(
            cli.model.budget.train_flops
        )  # 10 reports, as hyperband's max_iter counts


def test_each_equal_compute_sweep_gives_its_default_schedule_the_steps_of_its_twin():
    """The budgets were set to what the recipe's own schedule (3/2/1) spends in the twin file's steps."""
    from loopformer.config_groups import typed
    from loopformer.model.compute import compute_cost
    from loopformer.model.config import ArchConfig, RuntimeConfig
    from loopformer.training.budget import train_flops_per_example
    from loopformer.training.config import TrainConfig, network_config

    cases = {  # config, its dataset's sizes, global batch, the twin's steps and evaluation interval
        "quickstart_stages_equal_compute.yaml": ("configs/quickstart.yaml", (6, 16), 128, 1000, 100),
        "stages_random_equal_compute.yaml": ("configs/loop_transformer-3stage.yaml", (11, 81), 768, 65104, 6510),
    }
    for name, (recipe, (vocab, seq_len), batch, steps, every) in cases.items():
        model = yaml.safe_load((ROOT / recipe).read_text())["model"]
        dims = {"vocab_size": vocab, "seq_len": seq_len, "num_puzzle_identifiers": 1}
        train = typed(TrainConfig, model.get("train", {}))
        config = network_config(typed(ArchConfig, model["arch"]), train, typed(RuntimeConfig, model["runtime"]), dims)
        per_step = train_flops_per_example(compute_cost(config), train) * batch
        command = load_sweep(ROOT / "sweeps" / name)["command"]
        flags = dict(a[2:].split("=", 1) for a in command if a.startswith("--model.budget."))
        assert float(flags["model.budget.train_flops"]) == pytest.approx(steps * per_step, rel=0.01), name
        assert float(flags["model.budget.eval_every_flops"]) == pytest.approx(every * per_step, rel=0.01), name


def test_invalid_sweep_file_is_a_clear_error(tmp_path):
    from loopformer.sweep.spec import SweepFileError

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"method": "grid", "parameters": {"model.arch.stages.0.repeat": {"valuez": [1]}}}))
    with pytest.raises(SweepFileError, match="bad.yaml: not a valid sweep configuration"):
        load_sweep(bad)


def test_the_sweep_command_prints_only_its_own_error(tmp_path):
    """The sweeps engine's pydantic warning on import is not shown; the one-line error is, with exit 2."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\n")
    proc = subprocess.run(
        [sys.executable, "-m", "loopformer.cli", "sweep", str(bad), "--offline", "--count", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"loopformer sweep: error: {bad}: not a valid sweep configuration"), proc.stderr
    assert "Warning" not in proc.stderr
