"""validate/test/predict from --ckpt_path alone: the checkpoint carries its run's data settings, and the outputs go
into a new subdirectory of the checkpoint's run."""

import numpy as np
import pytest
import torch

from loopformer.checkpoint.format import EXTRA_KEY, read_settings
from loopformer.cli import LoopformerCLI
from tests.helpers import tiny_fit_args

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def _fit(sudoku4_dir, run):
    args = tiny_fit_args(sudoku4_dir, run, "--trainer.max_steps=2", "--trainer.val_check_interval=2",
                         "--data.eval_batch_size=16", "--model.train.act.halt_max_steps=2")  # fmt: skip
    LoopformerCLI(args=args)
    return run / "checkpoints" / "last.ckpt"


def test_a_checkpoint_evaluates_on_its_run_data_into_its_run_directory(sudoku4_dir, tmp_path, capsys):
    run = tmp_path / "run"
    ckpt = _fit(sudoku4_dir, run)
    hparams, data, source = read_settings(ckpt)
    assert data["data_paths"] == str(sudoku4_dir) and data["eval_batch_size"] == 16 and source == str(ckpt)

    validate = LoopformerCLI(args=["validate", f"--ckpt_path={ckpt}", "--model.eval.depth_curve=[1,2]", *QUIET])
    assert "data settings from" in capsys.readouterr().err
    assert validate.datamodule.data_paths == [sudoku4_dir] and validate.datamodule.eval_batch_size == 16
    (outputs,) = run.glob("validate-*")
    assert sorted(p.name for p in outputs.iterdir()) == [
        "config.yaml", "depth_curve.csv", "depth_curve.png", "predictions", "run.lock"
    ]  # fmt: skip
    assert [p.name for p in (outputs / "predictions").iterdir()] == ["step0000002.png"]
    assert f"data_paths: {sudoku4_dir}" in (outputs / "config.yaml").read_text()

    # a second command gets its own subdirectory; a --data flag still wins over the checkpoint's settings
    predict = LoopformerCLI(args=["predict", f"--ckpt_path={ckpt}", "--data.eval_batch_size=8", *QUIET])
    assert predict.datamodule.eval_batch_size == 8 and predict.datamodule.data_paths == [sudoku4_dir]
    (outputs,) = run.glob("predict-*")
    saved = np.load(outputs / "predictions.npz")
    assert saved["example_index"].tolist() == list(range(40))
    names = sorted(p.name for p in run.iterdir())
    assert names == ["checkpoints", "config.yaml", outputs.name, "predictions", "run.lock",
                     next(run.glob("validate-*")).name]  # fmt: skip
    assert not (tmp_path / "runs").exists() and not (run / "predictions.npz").exists()


@pytest.mark.slow
def test_an_older_checkpoint_takes_the_data_from_its_run_config(sudoku4_dir, tmp_path):
    run = tmp_path / "run"
    ckpt = _fit(sudoku4_dir, run)
    checkpoint = torch.load(ckpt, weights_only=False)
    del checkpoint[EXTRA_KEY]["data"]  # as written before checkpoints carried their data settings
    torch.save(checkpoint, ckpt)
    assert read_settings(ckpt)[1]["data_paths"] == str(sudoku4_dir)
    assert read_settings(ckpt)[2] == str(run / "config.yaml")
    test = LoopformerCLI(args=["test", f"--ckpt_path={ckpt}", *QUIET])
    assert test.datamodule.data_paths == [sudoku4_dir]
    assert len(list(run.glob("test-*"))) == 1


@pytest.mark.slow
def test_a_config_or_root_dir_given_is_used_instead(sudoku4_dir, tmp_path, capsys):
    run = tmp_path / "run"
    ckpt = _fit(sudoku4_dir, run)
    elsewhere = tmp_path / "elsewhere"
    config = tmp_path / "data.yaml"
    config.write_text(f"data:\n  data_paths: {sudoku4_dir}\n  eval_batch_size: 20\n")
    cli = LoopformerCLI(args=["validate", "--config", str(config), f"--ckpt_path={ckpt}",
                              f"--trainer.default_root_dir={elsewhere}", *QUIET])  # fmt: skip
    assert "data settings from" not in capsys.readouterr().err
    assert cli.datamodule.eval_batch_size == 20
    assert not list(run.glob("validate-*")) and (elsewhere / "config.yaml").is_file()
