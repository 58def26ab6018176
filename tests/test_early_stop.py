"""StopWhenLearned: training stops after the metric reached the threshold at N evaluations in a row, not before."""

from types import SimpleNamespace

import pytest
import torch

from loopformer.cli import LoopformerCLI
from loopformer.early_stop import StopWhenLearned
from tests.helpers import tiny_fit_args


def _evaluate(callback, value):
    trainer = SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        callback_metrics={"val/exact_accuracy": torch.tensor(value)},
        should_stop=False,
        global_step=7,
    )
    callback.on_validation_end(trainer, None)
    return trainer.should_stop


def test_only_consecutive_evaluations_count():
    cb = StopWhenLearned(threshold=0.99, times=2)
    assert [_evaluate(cb, v) for v in (0.995, 0.98, 0.99, 0.991)] == [False, False, False, True]
    restored = StopWhenLearned(threshold=0.99, times=2)
    restored.load_state_dict(StopWhenLearned(threshold=0.99, times=2).state_dict() | {"streak": 1})
    assert _evaluate(restored, 0.999)  # the streak survives a resume
    with pytest.raises(ValueError, match="times must be >= 1"):
        StopWhenLearned(times=0)


def test_the_quickstart_stops_once_learned(sudoku4_dir, tmp_path, caplog):
    stop = '{"class_path": "loopformer.early_stop.StopWhenLearned", "init_args": {"threshold": 0.0, "times": 2}}'
    args = tiny_fit_args(
        sudoku4_dir,
        tmp_path,
        "--data.eval_batch_size=40",
        "--model.train.act.halt_max_steps=1",
        "--trainer.max_steps=50",
        "--trainer.val_check_interval=2",
        f"--trainer.callbacks=[{stop}]",
    )
    with caplog.at_level("INFO"):
        cli = LoopformerCLI(args=args)
    assert cli.trainer.global_step == 4  # evaluations at steps 2 and 4 both reach the threshold
    assert "val/exact_accuracy >= 0 at 2 evaluations in a row: stopping at step 4" in caplog.text
