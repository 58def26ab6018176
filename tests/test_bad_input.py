"""Bad values on the command line: every one stops before any process is started or any batch is drawn, with one
line naming the key and what was expected (and for an unknown key the nearest valid ones), exit 2. Table-driven:
integer options at 0, negative and of the wrong type, devices the machine does not have, missing paths."""

import importlib.util
import os

import pytest
import torch

from loopformer.cli import main
from loopformer.cli.checks import CLUSTER_VARIABLES
from loopformer.data.cli import main as data_main
from tests.helpers import ROOT, tiny_fit_args

CASES = {
    # flag(s): a phrase the one line must hold
    "--trainer.devices=64": "--trainer.devices=64: this machine has",
    "--trainer.devices=0": "--trainer.devices=0: expected a count >= 1",
    "--trainer.devices=-3": "--trainer.devices=-3: expected a count >= 1",
    "--trainer.num_nodes=2": "--trainer.num_nodes=2: this process was not started by a multi-node launcher",
    "--trainer.num_nodes=0": "--trainer.num_nodes=0: expected an integer >= 1",
    "--trainer.max_steps=abc": "trainer.max_steps expected",
    "--data.global_batch_size=0": "data.global_batch_size=0: expected an integer >= 1",
    "--data.global_batch_size=-1": "data.global_batch_size=-1: expected an integer >= 1",
    "--data.global_batch_size=abc": "data.global_batch_size expected an integer, got abc",
    "--data.eval_batch_size=0": "data.eval_batch_size=0: expected an integer >= 1",
    "--data.epochs_per_iter=0": "data.epochs_per_iter=0: expected an integer >= 1",
    "--data.num_workers=-1": "data.num_workers=-1: expected an integer >= 0",
    "--data.prefetch=-1": "data.prefetch must be >= 0",
    "--data.data_paths=/nonexistent/dataset": "/nonexistent/dataset",
    "--ckpt_path=/nonexistent/last.ckpt": "--ckpt_path /nonexistent/last.ckpt does not exist",
    "--model.arch.hidden_size=0": "model.arch.hidden_size must be a positive integer",
    "--model.arch.outer_cycles=-2": "model.arch.outer_cycles must be a positive integer",
    "--model.arch.stages.0.repeat=abc": "repeat expected an integer, got abc",
    "--model.arch.stages.0.repeat=-1": "model.arch.stages.0: repeat must be an integer >= 0",
    "--model.arch.stages.7.repeat=1": "index 7 is out of range: model.arch.stages has 3 item(s)",
    "--model.arch.hiden_size=3": "model.arch.hiden_size: did you mean model.arch.hidden_size",
    "--trainer.no_such_opt=3": "trainer.no_such_opt: did you mean",
    "--model.train.algorithm=dls": "model.train.algorithm expected one of act, dis, got dls",
    "--model.train.act.halt_max_steps=0": "model.train.act.halt_max_steps must be >= 1",
    "--model.eval.depth_curve=[0,abc]": "model.eval.depth_curve expected an integer, got abc",
    "--model.eval.num_pictures=-1": "model.eval.num_pictures must be >= 0",
    "--model.ema.rate=1.5": "model.ema.rate must lie in (0, 1)",
    "--seed_everything=-5": "seed_everything=-5: expected an integer in [0, 4294967295]",
    "--last_checkpoint.every_minutes=-1": "last_checkpoint.every_minutes must be >= 0 (0: never), got -1.0",
    "--last_checkpoint.grace_seconds=0": "last_checkpoint.grace_seconds must be > 0, got 0.0",
    "--data.generate.num_train=-3": "data.generate: num_train must be >= 1, got -3",
    "--data.generate.clues=0": "data.generate: clues=0 must lie in [1, 16] for a 4x4 sudoku",
    "--data.generate={sid: 9}": "data.generate expected SudokuGenerator settings (n, clues, num_train, num_test, "
    "seed) or MazeGenerator settings (side, num_train, num_test, aug, seed) or null, got {'sid': 9}: no type has a "
    "field 'sid' (did you mean side?)",
    "--data.generate.sid=9": "or null, got --data.generate.sid=9: no type has a field 'sid' (did you mean side?)",
    "--trainer.strategy=fsdp": "trainer: The strategy `fsdp` requires a GPU accelerator",
    "--trainer.accelerator=mps": "trainer: `MPSAccelerator` can not run on your system",
    "--trainer.logger=CSVLogger": "trainer.logger: CSVLogger requires save_dir; give it (--trainer.logger.save_dir=...)",
    "--trainer.precision=abc": "trainer.precision expected one of 64, 32, 16, transformer-engine,",
    "--trainer.logger=5": "trainer.logger expected Logger or Iterable[Logger] or true or false or null, got 5.",
    "--model.optim.lr=-1": "model.optim.lr must be >= 0, got -1.0",
    "--model.optim.puzzle_emb_lr=-1e-2": "model.optim.puzzle_emb_lr must be >= 0, got -0.01",
    "--model.optim.weight_decay=-0.1": "model.optim.weight_decay must be >= 0, got -0.1",
    "--model.optim.beta2=1": "model.optim.beta2 must lie in [0, 1), got 1.0",
    "--model.optim.lr_min_ratio=-1": "model.optim.lr_min_ratio (the final learning rate as a fraction of the peak)",
    "--model.optim.lr_warmup_steps=-5": "model.optim.lr_warmup_steps must be >= 0, got -5",
    "--model.arch.expansion=-1": "model.arch.expansion must be > 0, got -1.0",
    "--model.arch.rms_norm_eps=0": "model.arch.rms_norm_eps must be > 0, got 0.0",
    "--model.budget.train_flops=0": "model.budget.train_flops=0: expected a number of FLOPs > 0",
    "--model.budget.eval_every_flops=-1e9": "model.budget.eval_every_flops=-1e+09: expected a number of FLOPs > 0",
    "--model.budget.train_flops=lots": "model.budget.train_flops expected",
}


@pytest.mark.parametrize("flag", list(CASES))
def test_a_bad_value_is_one_line_and_exit_2(flag, sudoku4_dir, tmp_path, capsys, monkeypatch):
    if flag.startswith("--trainer.devices=64") and (os.cpu_count() or 1) >= 64:
        pytest.skip("this machine has 64 cores")
    if flag in ("--trainer.strategy=fsdp", "--trainer.accelerator=mps") and torch.cuda.is_available():
        pytest.skip("the machine has a GPU")
    for name in CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", flag)
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2
    assert len(err) == 1 and err[0].startswith("loopformer: error: "), err
    assert CASES[flag] in err[0], err[0]
    assert not (tmp_path / "loopformer").exists()  # nothing was started


@pytest.mark.parametrize(
    "flag,message",
    [("--data.global_batch_size=15", "data.global_batch_size=15 is not divisible by the 2 processes"),
     ("--data.eval_batch_size=7", "data.eval_batch_size=7 is not divisible by the 2 processes")],
)  # fmt: skip
def test_a_batch_the_processes_cannot_share_evenly_is_one_line_before_they_start(
    flag, message, sudoku4_dir, tmp_path, capsys
):
    """It was a traceback in every rank once DDP had started them."""
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", "--trainer.accelerator=cpu",
                         "--trainer.devices=2", "--trainer.strategy=ddp", flag)  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()  # the Trainer's lines on its devices come first
    assert done.value.code == 2
    assert err[-1] == (
        f"loopformer: error: {message} (trainer.devices x trainer.num_nodes): each takes an equal share of every "
        "batch; give a multiple of 2."
    )
    assert not (tmp_path / "checkpoints").exists()  # nothing was started


def test_a_model_file_given_with_config_names_the_flag_that_takes_it(sudoku4_dir, tmp_path, capsys):
    """configs/vrn/*.yaml hold a model's settings (arch:, train:, runtime:): given with --config, the error named the
    key alone ("does not accept option 'train.dis.mask_penalty_weight'")."""
    model_file = ROOT / "configs/vrn/loop_transformer_dis.yaml"
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(model_file), f"--data.data_paths={sudoku4_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    assert (
        f"{model_file} holds a model's settings (its train: is model.train): give it with --model {model_file}, "
        "after the recipe's --config."
    ) in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_a_gpu_run_on_a_machine_without_one_is_one_line(sudoku4_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.accelerator=gpu"))
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and "no CUDA GPU is visible on this machine" in err[0]


@pytest.mark.parametrize("count", ["0", "-3"])
def test_data_show_with_no_examples_to_show_is_one_line(sudoku4_dir, capsys, count):
    assert data_main(["show", str(sudoku4_dir), "--count", count]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"loopformer data show: error: --count {count}: expected an integer >= 1 (examples to show)."]


TOOL_CASES = {
    # a tool subcommand's arguments: its argparse error line
    "data build sudoku-gen OUT --num-train -3": "sudoku-gen: error: argument --num-train: expected an integer >= 1, got -3",
    "data build maze-gen OUT --num-test 0": "maze-gen: error: argument --num-test: expected an integer >= 1, got 0",
    "data build sudoku SRC OUT --num-aug -1": "sudoku: error: argument --num-aug: expected an integer >= 0, got -1",
    "data build maze SRC OUT --subsample-size 0": "maze: error: argument --subsample-size: expected an integer >= 1, got 0",
    "data build arc SRC OUT --num-aug x": "arc: error: argument --num-aug: expected an integer >= 0, got 'x'",
    "sweep FILE --count 0": "sweep: error: argument --count: expected an integer >= 1, got 0",
    "import-checkpoint --from trm SRC OUT --seq-len 0": "argument --seq-len: expected an integer >= 1, got 0",
    "doctor --seq-len -1": "doctor: error: argument --seq-len: expected an integer >= 1, got -1",
    "doctor --head-dim 48": "doctor: error: argument --head-dim: the fused kernel supports head dims 32, 64, 128; a model "
    "of head dim 48 runs PyTorch SDPA, so there is no kernel to check",
}


@pytest.mark.parametrize("command", list(TOOL_CASES))
def test_a_tool_argument_out_of_range_is_one_line_and_exit_2(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main([str(tmp_path / w.lower()) if w.isupper() else w for w in command.split()])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2
    assert err[-1].startswith("loopformer ") and err[-1].endswith(TOOL_CASES[command]), err
    assert not list(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize("logger", ["loopformer.runs.loggers.WandbLogger", "lightning.pytorch.loggers.WandbLogger"])
def test_a_wandb_logger_without_wandb_installed_is_one_paragraph(logger, sudoku4_dir, tmp_path, capsys, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as done:
        main(tiny_fit_args(sudoku4_dir, tmp_path, f"--trainer.logger={logger}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(
        "loopformer: error: trainer.logger is W&B (loopformer's default), but the wandb package is not "
    )
    assert "`--trainer.logger=false`" in err[0] and not (tmp_path / "loopformer").exists()


@pytest.mark.parametrize(
    "flag,message",
    [("--trainer.accumulate_grad_batches=2", "cannot accumulate its gradients over batches. Remove it; a larger"),
     ("--trainer.gradient_clip_val=0.5", "cannot clip its gradients. Remove it.")],
)  # fmt: skip
def test_trainer_settings_dis_cannot_take_are_one_line_before_the_run(flag, message, sudoku4_dir, tmp_path, capsys):
    """DIS steps its optimizer itself: Lightning refused these in a traceback once the run had started."""
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", "--model.train.algorithm=dis", flag)
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"loopformer: error: {flag[2:]}: model.train.algorithm=dis steps the optimizer itself")
    assert message in err[0] and not (tmp_path / "loopformer").exists()


@pytest.mark.parametrize("limit", [None, "--trainer.limit_train_batches=2", "--trainer.limit_train_batches=0.5"])
def test_an_evaluation_interval_beyond_an_epoch_it_counts_in_is_one_line_before_the_run(
    limit, sudoku4_dir, tmp_path, capsys
):
    """Lightning's ValueError once fit starts (a traceback; then one line, after the run directory was made), now
    one line before anything starts."""
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", "--trainer.check_val_every_n_epoch=1")
    with pytest.raises(SystemExit) as done:
        main(args + ([limit] if limit else []))  # the quickstart's interval, 500 batches: the data has 6
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    batches = {None: 6, "--trainer.limit_train_batches=2": 2, "--trainer.limit_train_batches=0.5": 3}[limit]
    assert err == [
        f"loopformer: error: trainer.val_check_interval=500 is more batches than an epoch has ({batches}), and with "
        "trainer.check_val_every_n_epoch set it counts within an epoch: set check_val_every_n_epoch to null (as the "
        "recipes do) to count it across epochs, or give a smaller interval."
    ]
    assert not (tmp_path / "loopformer").exists() and not list(tmp_path.iterdir())  # nothing of the run made
    main(args + ["--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"])  # an interval that fits runs
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_a_setting_lightning_refuses_once_the_run_has_started_is_one_line(sudoku4_dir, tmp_path, capsys, monkeypatch):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from loopformer.module import LoopformerModule

    def refuse(self):
        raise MisconfigurationException("`Trainer(x=1)` is not supported\nwith this.")

    monkeypatch.setattr(LoopformerModule, "on_fit_start", refuse)
    with pytest.raises(SystemExit) as done:
        main(tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1"))
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "loopformer: error: `Trainer(x=1)` is not supported with this."
    )


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")), reason="tensorboard is installed"
)
def test_a_logger_whose_package_is_missing_is_one_line(sudoku4_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=1", "--trainer.logger=TensorBoardLogger")
        main([a for a in args if a != "--trainer.logger=false"])  # the default logger's save_dir carries over
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "loopformer: error: lightning.pytorch.loggers.TensorBoardLogger cannot be built: Neither `tensorboard` nor "
        "`tensorboardX` is available. Try `pip install`ing either."
    ]
    assert not (tmp_path / "loopformer").exists()
