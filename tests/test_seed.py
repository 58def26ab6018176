"""``seed_everything``: what LightningCLI's help promises (true: a random seed), a seed out of numpy's range as one
line, and the seed a run used named in its start-up summary and recorded in its config.yaml."""

import re

import pytest
import yaml

from loopformer.cli.checks import SEED_RANGE, resolve_seed
from loopformer.cli.command import LoopformerCLI
from loopformer.errors import ConfigError
from tests.helpers import tiny_fit_args

LAUNCHER_VARIABLES = ("PL_GLOBAL_SEED", "WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_true_draws_a_seed_in_numpys_range(no_launcher):
    drawn = {resolve_seed(True) for _ in range(8)}
    assert len(drawn) > 1  # random, not Lightning's 0
    assert all(isinstance(s, int) and SEED_RANGE[0] <= s <= SEED_RANGE[1] for s in drawn)


def test_integers_and_false_pass_through(no_launcher):
    assert resolve_seed(0) == 0 and resolve_seed(SEED_RANGE[1]) == SEED_RANGE[1]
    assert resolve_seed(False) is False


def test_the_processes_lightning_starts_take_the_first_ones_seed(no_launcher):
    no_launcher.setenv("PL_GLOBAL_SEED", "1234")
    assert resolve_seed(True) == 1234


@pytest.mark.parametrize("variable", ["WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"])
def test_processes_of_another_launcher_cannot_draw_one(no_launcher, variable):
    no_launcher.setenv(variable, "4")
    with pytest.raises(ConfigError, match=r"would each draw another; give every process the same integer"):
        resolve_seed(True)
    no_launcher.setenv(variable, "1")
    assert SEED_RANGE[0] <= resolve_seed(True) <= SEED_RANGE[1]


@pytest.mark.parametrize("seed", [-5, 2**32])
def test_a_seed_out_of_range_is_an_error_naming_the_range(no_launcher, seed):
    with pytest.raises(ConfigError, match=rf"seed_everything={seed}: expected an integer in \[0, 4294967295\]"):
        resolve_seed(seed)


def test_a_run_names_its_drawn_seed_and_records_it(no_launcher, sudoku4_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    LoopformerCLI(args=tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", "--seed_everything=true"))
    run = tmp_path  # without a logger the run directory is trainer.default_root_dir itself
    recorded = yaml.safe_load((run / "config.yaml").read_text())["seed_everything"]
    assert isinstance(recorded, int) and not isinstance(recorded, bool)
    said = re.search(rf"run directory: {re.escape(str(run))} \(checkpoints/, predictions/, config.yaml\); seed (\d+)",
                     caplog.text)  # fmt: skip
    assert said and int(said.group(1)) == recorded, caplog.text
    assert "Seed set to" not in caplog.text  # Lightning's line, which came before the checks of the settings
