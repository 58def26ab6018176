"""``--ckpt_path last``: Lightning's name for the last checkpoint in this run's own directory. A run whose directory
is new (a logger without a fixed id) stops in one line naming the checkpoint it most likely meant, instead of
training from step 0 (or evaluating untrained weights) after a warning; a run with a fixed id continues the one
before it in the same directory (a resubmitted job)."""

import pytest
import torch

from loopformer.cli import main
from tests.helpers import tiny_fit_args


def _args(data_dir, root, *extra):
    """The tiny fit, with the default W&B logger (WANDB_MODE=disabled in the tests) saving under ``root``."""
    return [a for a in tiny_fit_args(data_dir, root, *extra) if a != "--trainer.logger=false"]


def _fit(args):
    import wandb

    try:
        main(args)
    finally:  # as the run's process ends: its W&B run finished, no settings left (Lightning reuses a live wandb.run)
        if wandb.run is not None:
            wandb.run.finish()
        wandb.teardown()


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_last_in_a_new_run_directory_stops_naming_the_checkpoint_meant(subcommand, sudoku4_dir, tmp_path, capsys):
    _fit(_args(sudoku4_dir, tmp_path, "--trainer.max_steps=2"))
    (earlier,) = (tmp_path / "loopformer").iterdir()
    capsys.readouterr()
    args = _args(sudoku4_dir, tmp_path, "--trainer.max_steps=4", "--ckpt_path=last")
    with pytest.raises(SystemExit) as done:
        _fit([subcommand, *args[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    outcome = "training would start from step 0" if subcommand == "fit" else "validate would run untrained weights"
    assert err[0].startswith(
        "loopformer: error: --ckpt_path last means the last checkpoint in this run's own directory"
    )
    assert outcome in err[0]
    assert f"(the most recent under {tmp_path}: {earlier}/checkpoints/last.ckpt)" in err[0]
    assert "--trainer.logger.init_args.id=NAME" in err[0]
    assert list((tmp_path / "loopformer").iterdir()) == [earlier]  # nothing of the stopped run was made


def test_a_fixed_id_makes_last_continue_the_submission_before(sudoku4_dir, tmp_path, caplog, recwarn):
    caplog.set_level("INFO")
    args = _args(sudoku4_dir, tmp_path, "--trainer.logger.init_args.id=job7", "--ckpt_path=last")
    _fit([*args, "--trainer.max_steps=2"])  # the first submission: no checkpoint yet, it starts at step 0
    run = tmp_path / "loopformer" / "job7"
    assert f"--ckpt_path last: no last checkpoint in {run} yet; this run starts at step 0" in caplog.text
    assert not [w for w in recwarn if "no last checkpoint available" in str(w.message)]  # Lightning's, with its hint
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    assert "Restored all states" not in caplog.text
    _fit([*args, "--trainer.max_steps=4"])  # resubmitted: continues from that checkpoint
    assert f"Restored all states from the checkpoint at {run}/checkpoints/last.ckpt" in caplog.text
    assert caplog.text.count("no last checkpoint in") == 1  # said by the first submission only
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
    assert list((tmp_path / "loopformer").iterdir()) == [run]


@pytest.mark.parametrize("reuse", ["--trainer.logger.init_args.id=job8", "--trainer.logger=false"])
def test_a_fresh_fit_where_a_run_left_checkpoints_stops_before_overwriting_them(reuse, sudoku4_dir, tmp_path, capsys):
    args = [*_args(sudoku4_dir, tmp_path, "--trainer.max_steps=2"), reuse]
    _fit(args)
    run = tmp_path / "loopformer" / "job8" if "id=" in reuse else tmp_path
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert "last.ckpt" in before and "config.yaml" in before
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        _fit(args)  # the same command again, without --ckpt_path
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"loopformer: error: {run / 'checkpoints'} holds the checkpoints of an earlier run (")
    assert "Continue that run with --ckpt_path last" in err[0]
    after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before  # its checkpoints and config.yaml untouched
    _fit([*args, "--trainer.enable_checkpointing=false"])  # a run that writes no checkpoint may go there
    ckpts = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    assert ckpts == {name: t for name, t in before.items() if name.endswith(".ckpt")}


def test_fast_dev_run_writes_no_checkpoint_and_can_run_again(sudoku4_dir, tmp_path, caplog):
    """Lightning's fast_dev_run writes no checkpoint; loopformer's last.ckpt at the end (and with a recipe's
    ModelCheckpoint(save_last), Lightning's own too: last-v1.ckpt beside it) were written all the same, and the same
    smoke test on the same directory was then refused as a run that would overwrite an earlier run's checkpoints."""
    recipe_checkpoint = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.monitor=val/exact_accuracy", "--trainer.callbacks.mode=max",
        "--trainer.callbacks.save_last=true",
    ]  # fmt: skip
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.fast_dev_run=true", *recipe_checkpoint)
    caplog.set_level("INFO")
    for _ in range(2):  # loopformer's last.ckpt and the recipe's save_last in one run, and the same run again
        main(args)
        assert not list(tmp_path.rglob("*.ckpt"))
    assert not (tmp_path / "checkpoints").exists()  # nor the directory, made by the check that it can be written
    assert f"run directory: {tmp_path} (fast_dev_run: predictions/ only)" in caplog.text


def _trainer(logger, root="R"):
    from jsonargparse import Namespace

    return Namespace(logger=logger, default_root_dir=root)


def _logger(class_path, **init_args):
    from jsonargparse import Namespace

    return Namespace(class_path=class_path, init_args=Namespace(**init_args))


def test_the_run_directory_is_reused_only_where_nothing_makes_a_new_one(monkeypatch):
    from pathlib import Path

    from loopformer.cli.checks import reused_run_directory

    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    wandb = "loopformer.runs.loggers.WandbLogger"
    csv = "lightning.pytorch.loggers.CSVLogger"
    assert reused_run_directory(_trainer(False)) == Path("R")
    assert reused_run_directory(_trainer([])) == Path("R")
    assert reused_run_directory(_trainer(_logger(wandb, project="p", save_dir="S", id=None))) is None
    assert reused_run_directory(_trainer(_logger(wandb, project="p", save_dir="S", id="a1"))) == Path("S/p/a1")
    assert reused_run_directory(_trainer([_logger(csv, save_dir="S", name="n", version=3)])) == Path("S/n/version_3")
    assert reused_run_directory(_trainer(_logger(csv, save_dir="S", name="n", version=None))) is None
    monkeypatch.setenv("WANDB_RUN_ID", "agent9")  # a W&B agent names the run it starts
    assert reused_run_directory(_trainer(_logger(wandb, project="p", save_dir=None, id=None))) == Path("R/p/agent9")
    assert reused_run_directory(_trainer(_logger(csv, save_dir="S", name="n", version=None))) is None
