import math

import pytest

from loopformer.training.optimization import warmup_cosine


def test_warmup_then_cosine_to_min_ratio():
    assert warmup_cosine(0, 10, 110, 0.1) == 0.0
    assert warmup_cosine(5, 10, 110, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 110, 0.1) == pytest.approx(0.1)


def test_constant_after_warmup_when_total_is_unknown_or_ratio_is_one():
    assert warmup_cosine(50, 10, math.inf, 0.1) == 1.0
    assert warmup_cosine(50, 10, 100, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("algorithm", ["act", "dis"])
def test_the_learning_rate_is_logged_as_train_lr_on_its_schedule(algorithm, sudoku4_dir, tmp_path, monkeypatch):
    """TRM logs `train/lr`; loopformer logged no learning rate at all. It is handed to Lightning only at the steps
    whose logs are written (a host number is copied to the device each time). The training scores' logging interval
    ends at those steps too."""
    import csv

    from loopformer.cli import LoopformerCLI
    from loopformer.module import LoopformerModule
    from loopformer.training.scores import IntervalScores
    from tests.helpers import tiny_fit_args

    handed, intervals_ended = [], []
    log, reset = LoopformerModule.log, IntervalScores.reset
    monkeypatch.setattr(
        LoopformerModule, "log", lambda self, name, *a, **k: (handed.append(name), log(self, name, *a, **k))
    )
    monkeypatch.setattr(IntervalScores, "reset", lambda self: (intervals_ended.append(1), reset(self)))

    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=12", "--trainer.log_every_n_steps=4",
                         "--trainer.limit_val_batches=0", "--model.optim.lr_warmup_steps=6",
                         f"--model.train.algorithm={algorithm}", "--model.train.dis.max_steps=2",
                         f"--model.arch.no_grad_cycles={2 if algorithm == 'act' else 0}")  # fmt: skip
    args = [a for a in args if a != "--trainer.logger=false"]
    LoopformerCLI(args=[*args, "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path}"])
    (metrics,) = tmp_path.rglob("metrics.csv")
    logged = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(open(metrics)) if r.get("train/lr")}
    # that of the batch's (first) optimizer step; DIS steps twice a batch, and logs its steps in batches (manual
    # optimization in Lightning)
    per_batch = 2 if algorithm == "dis" else 1
    assert logged and all(
        v == pytest.approx(3e-3 * warmup_cosine(per_batch * s + 1, 6, 12.0, 0.1), rel=1e-6) for s, v in logged.items()
    ), logged
    assert handed.count("train/lr") == len(logged)  # not once a step
    # the training scores' interval ends where Lightning writes the logs: with DIS it ended every 4 optimizer
    # steps, 3 times in 6 batches, of which Lightning wrote one, so its train/ scores covered 2 batches, not 4
    assert len(intervals_ended) == len(logged)


def test_optimizer_setting_changes_are_read_from_what_a_checkpoint_recorded():
    from loopformer.training.optimization import OptimConfig, optim_changes

    now = OptimConfig(lr=3e-3, lr_warmup_steps=50)
    assert optim_changes(None, now) == [] and optim_changes({}, now) == []
    assert optim_changes({"lr": "3e-3", "lr_warmup_steps": 50, "optimizer": "adamw"}, now) == []  # YAML 1.1's string
    assert optim_changes({"lr": 1e-4, "lr_warmup_steps": 10, "beta2": "x"}, now) == [
        "lr 0.0001 -> 0.003", "lr_warmup_steps 10 -> 50", "beta2 x -> 0.95"
    ]  # fmt: skip
