"""validate/test/predict from --ckpt_path alone: the checkpoint carries its run's data settings, and the outputs go
into a new subdirectory of the checkpoint's run."""

import numpy as np
import pytest
import torch
import yaml

from loopformer.checkpoint.format import EXTRA_KEY, read_settings
from loopformer.cli import LoopformerCLI, main
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

    # --print_config prints what the command would use: the checkpoint's settings and data, the flags over them
    with pytest.raises(SystemExit) as e:
        main(["validate", f"--ckpt_path={ckpt}", "--model.train.act.halt_max_steps=5", "--print_config"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["arch"]["hidden_size"] == hparams["arch"]["hidden_size"] != 512  # 512: the default
    assert printed["model"]["train"]["act"]["halt_max_steps"] == 5
    assert printed["data"]["data_paths"] == str(sudoku4_dir) and printed["data"]["eval_batch_size"] == 16
    assert len(list(run.glob("validate-*"))) == 1  # nothing run


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


def test_other_data_given_to_a_checkpoint_is_used_as_it_is_and_data_of_another_shape_is_one_line(
    sudoku4_dir, tmp_path, capsys
):
    from loopformer.cli import main
    from loopformer.data.generators.maze import build_maze_dataset

    run = tmp_path / "run"
    LoopformerCLI(args=tiny_fit_args(tmp_path / "generated", run, "--data.generate.num_train=64",
                                     "--data.generate.num_test=16", "--trainer.max_steps=1",
                                     "--trainer.limit_val_batches=0"))  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_settings(ckpt)[1]["generate"]["num_train"] == 64
    # 4x4 Sudoku of other counts than the run's data.generate makes: evaluated as it is (that check used to run
    # before the checkpoint's data settings came in, which brought data.generate back: "generated otherwise")
    validate = LoopformerCLI(args=["validate", f"--ckpt_path={ckpt}", f"--data.data_paths={sudoku4_dir}", *QUIET])
    assert validate.datamodule.generate is None and validate.datamodule.data_paths == [sudoku4_dir]
    # data of another shape: one line before anything of the run starts (it was a ValueError's traceback)
    mazes = tmp_path / "mazes"
    build_maze_dataset(mazes, side=5, num_train=8, num_test=4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["validate", f"--ckpt_path={ckpt}", f"--data.data_paths={mazes}", *QUIET])
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: --ckpt_path {ckpt} was trained on data with vocabulary size 6 and sequence length 16, but "
        "data.data_paths hold 6 and 25: a model runs on data of the shape it was trained on (its run's data, or data "
        "built the same way).\n"
    )
    assert len(list(run.glob("validate-*"))) == 1  # the first evaluation's only


def test_a_checkpoint_evaluated_from_another_directory_finds_its_run_data(tmp_path, monkeypatch, capsys):
    """A run's relative data path is read from the directory the run started in: validate from elsewhere generated
    the quickstart's dataset anew there (or would evaluate another dataset at that relative path)."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    args = tiny_fit_args("data/s4", work / "run", "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
                         "--data.generate={num_train: 96, num_test: 40}")  # fmt: skip
    LoopformerCLI(args=args)
    ckpt = work / "run" / "checkpoints" / "last.ckpt"
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    validate = LoopformerCLI(args=["validate", f"--ckpt_path={ckpt}", *QUIET])
    assert validate.datamodule.data_paths == [work / "data/s4"]
    assert f"(its relative data paths read from {work}, as its run did)" in capsys.readouterr().err
    assert not (elsewhere / "data").exists()


def test_flags_that_change_the_shapes_of_the_checkpoints_weights_are_one_line_before_the_run(
    sudoku4_dir, tmp_path, capsys
):
    """`--model.arch.hidden_size=64` over a 32-wide checkpoint was torch's "size mismatch" traceback once the run
    had started; flags that leave the shapes alone (more recursion, an unchanged value) still apply."""
    run = tmp_path / "run"
    ckpt = _fit(sudoku4_dir, run)
    expected = (
        f"loopformer: error: --ckpt_path {ckpt}: its weights do not fit the network these settings build "
        "(inner.init_z_H is (32,), here (64,), inner.init_z_M is (32,), here (64,)); its architecture is the "
        "checkpoint's but for --model.arch.hidden_size=64: leave out what changes the shapes of its weights.\n"
    )
    validate = ["validate", f"--ckpt_path={ckpt}", "--model.arch.hidden_size=64", *QUIET]
    fit = tiny_fit_args(sudoku4_dir, tmp_path / "again", f"--ckpt_path={ckpt}", "--model.arch.hidden_size=64")
    for command in (validate, fit):  # fit's flags give hidden_size 32 before 64: only the change is named
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(command)
        assert e.value.code == 2 and capsys.readouterr().err.endswith(expected)
    assert not list(run.glob("validate-*")) and not (tmp_path / "again").exists()
    validate = LoopformerCLI(args=["validate", f"--ckpt_path={ckpt}", "--model.arch.stages.0.repeat=4", *QUIET])
    assert validate.model.arch.stages[0].repeat == 4 and validate.trainer.callback_metrics["val/count"].item() == 40
