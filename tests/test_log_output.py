"""Output into a file or a pipe (a sweep agent's log, a batch job): plain lines, no carriage-return progress updates,
no ANSI codes; and a run that fails on its input leaves nothing behind but its one line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _loopformer(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    env["WANDB_MODE"] = "offline"
    command = [sys.executable, "-m", "loopformer.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_run_logged_to_a_file_has_plain_lines(sudoku4_dir, tmp_path):
    done = _loopformer(
        ["fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
         "--data.global_batch_size=16", "--data.eval_batch_size=16", "--model.arch.hidden_size=32",
         "--model.arch.puzzle_emb_ndim=32", "--trainer.max_steps=4", "--trainer.val_check_interval=2"],
        tmp_path,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "\x1b" not in out and "\r" not in out, out[-3000:]  # no ANSI codes (wandb's), no tqdm updates
    assert re.search(r"^step 4/4 \(100%\) \| [\d.]+ steps/s \| elapsed \d+s, eta 0s \| .*val/exact", out, re.M), out
    assert len(re.findall(r"^val at step \d", out, re.M)) == 2
    assert re.search(r"^W&B: offline run \w+ in runs/wandb/offline-run-\S+ \(`wandb sync ", out, re.M), out
    assert "wandb: " not in out  # wandb's own lines (with their colour codes) are replaced by that one


def test_a_run_with_a_wrong_data_path_leaves_nothing_behind(tmp_path):
    done = _loopformer(
        ["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--data.data_paths=data/nothing_here",
         "--data.generate=null"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    # its one line alone: not after the Trainer's device lines or the W&B logger's offline notice
    assert done.stderr.splitlines() == [
        "loopformer: error: data/nothing_here/train: dataset split not found; data.data_paths must hold train/ and "
        "test/ (or set data.generate to build a generated dataset there)."
    ]
    assert list(tmp_path.iterdir()) == []  # no runs/, no W&B directory


def test_a_dataset_that_cannot_fill_a_training_batch_stops_the_run_before_it_starts(sudoku4_dir, tmp_path):
    done = _loopformer(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}"],
                       tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [  # found in the data module's setup before: after the W&B run had started
        f"loopformer: error: {sudoku4_dir}: one pass over the 96 training groups (x data.epochs_per_iter=1) does not "
        "fill one batch of data.global_batch_size=128; lower the batch size or raise data.epochs_per_iter."
    ]
    assert list(tmp_path.iterdir()) == []  # no runs/, no W&B directory


def test_the_progress_line_interval_is_an_option(sudoku4_dir, tmp_path, capsys):
    from loopformer.cli import main
    from tests.helpers import tiny_fit_args

    main(tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=5", "--trainer.enable_progress_bar=true",
                       "--trainer.callbacks+=loopformer.cli.progress.LineProgress", "--trainer.callbacks.every_s=0"))  # fmt: skip
    steps = re.findall(r"^step (\d)/5 \(\d+%\) \| [\d.]+ steps/s \| elapsed", capsys.readouterr().out, re.M)
    assert steps == ["1", "2", "3", "4", "5"]  # every step with every_s=0 (the default: one line per 10 s)


def test_an_epoch_shorter_than_the_logging_interval_logs_training_without_a_warning(sudoku4_dir, tmp_path, recwarn):
    import csv

    from loopformer.cli import main
    from tests.helpers import tiny_fit_args

    # 96 training puzzles in batches of 16: 6 steps per epoch, fewer than the quickstart's log_every_n_steps (10)
    main(tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=20", "--trainer.limit_val_batches=0",
                       "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                       f"--trainer.logger.save_dir={tmp_path}"))  # fmt: skip
    (metrics,) = tmp_path.rglob("metrics.csv")
    with open(metrics) as f:
        logged = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert logged == [9, 19]  # every 10 steps, across epochs
    assert not [w for w in recwarn if "smaller than the logging interval" in str(w.message)]


def test_every_logger_writes_under_the_default_root_dir_unless_told_otherwise(
    sudoku4_dir, tmp_path, monkeypatch, capsys
):
    """`--trainer.default_root_dir` moves every logger's files, as the README says: a CSV logger without a save_dir
    wrote its run (checkpoints included) into the working directory. `--print_config` shows where."""
    from loopformer.cli import main
    from tests.helpers import tiny_fit_args

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    root = tmp_path / "root"
    args = tiny_fit_args(sudoku4_dir, root, "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
                         "--trainer.logger=CSVLogger")  # fmt: skip
    args = [a for a in args if a != "--trainer.logger=false"]  # from the default logger, as a user switches it
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]["init_args"]
    assert (printed["save_dir"], printed["name"]) == (str(root), "loopformer")
    main(args)
    assert list(cwd.iterdir()) == []
    (hparams,) = root.rglob("hparams.yaml")  # the CSV logger's
    assert hparams.parent == root / "loopformer" / "version_0"  # as W&B's runs: W&B's name, null, is not inherited
    assert (hparams.parent / "checkpoints" / "last.ckpt").is_file()
