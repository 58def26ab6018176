"""Test-time depth curves: each depth's numbers are those of a plain evaluation at that halt_max_steps."""

import csv

import pytest

from loopformer.cli import LoopformerCLI
from tests.helpers import quickstart_fit_args, tiny_fit_args


def _validate(sudoku4_dir, ckpt, root, *extra):
    return LoopformerCLI(
        args=[
            "validate",
            f"--data.data_paths={sudoku4_dir}",
            "--data.eval_batch_size=16",  # 40 examples: the last batch is padded
            f"--ckpt_path={ckpt}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={root}",
            *extra,
        ]
    )


def test_each_depth_equals_an_evaluation_at_that_depth(sudoku4_dir, tmp_path, caplog):
    extra = ["--model.train.act.halt_max_steps=3", "--trainer.max_steps=30", "--trainer.limit_val_batches=0"]
    fit = LoopformerCLI(args=tiny_fit_args(sudoku4_dir, tmp_path / "fit", *extra))
    ckpt = tmp_path / "model.ckpt"
    fit.trainer.save_checkpoint(ckpt)

    with caplog.at_level("INFO"):
        _validate(sudoku4_dir, ckpt, tmp_path / "curve", "--model.eval.depth_curve=[1,2,4]")
    rows = list(csv.DictReader(open(tmp_path / "curve" / "depth_curve.csv")))
    assert [(r["depth"], r["act_inference"]) for r in rows] == [
        (d, a) for d in ("1", "2", "4") for a in ("False", "True")
    ]  # one row per depth, with and without halting
    assert (tmp_path / "curve" / "depth_curve.png").stat().st_size > 1000
    assert "val depth curve:" in caplog.text and "| 4 | Q head |" in caplog.text

    for row in rows:
        act = row["act_inference"] == "True"
        plain = _validate(
            sudoku4_dir, ckpt, tmp_path / f"plain{row['depth']}{act}",
            f"--model.train.act.halt_max_steps={row['depth']}", f"--model.train.act.act_inference={act}",
        ).trainer.callback_metrics  # fmt: skip
        for key in ("exact_accuracy", "accuracy", "steps"):
            assert float(row[key]) == pytest.approx(plain[f"val/{key}"].item(), abs=1e-6), (row, key)
        assert float(row["flops_per_puzzle"]) == pytest.approx(plain["val/flops_per_puzzle"].item(), rel=1e-6)


def test_bad_depths_are_a_config_error(sudoku4_dir, tmp_path, capsys):
    from loopformer.cli import main

    with pytest.raises(SystemExit) as e:
        main([*tiny_fit_args(sudoku4_dir, tmp_path), "--model.eval.depth_curve=[0,2]"])
    assert e.value.code == 2
    assert "model.eval.depth_curve must list ACT depths >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_the_quickstart_thinks_better_with_more_steps(tmp_path):
    fit = LoopformerCLI(args=quickstart_fit_args(tmp_path, "--trainer.max_steps=1000", "--trainer.logger=false"))
    ckpt = tmp_path / "quickstart.ckpt"
    fit.trainer.save_checkpoint(ckpt)
    _validate(tmp_path / "data", ckpt, tmp_path / "curve", "--model.eval.depth_curve=[1,2,4,8]")
    rows = {(int(r["depth"]), r["act_inference"]): r for r in csv.DictReader(open(tmp_path / "curve/depth_curve.csv"))}
    assert len(rows) == 8
    assert float(rows[(1, "False")]["accuracy"]) < float(rows[(8, "False")]["accuracy"])
