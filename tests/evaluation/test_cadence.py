"""A fit that ends before its first evaluation says so at its start (it reported no val/ metric without a word)."""

from types import SimpleNamespace

import pytest

from loopformer.evaluation.cadence import no_evaluation_note


def _trainer(**over):
    settings = dict(val_check_interval=500, limit_val_batches=None, fast_dev_run=False, check_val_every_n_epoch=None,
                    max_steps=20, accumulate_grad_batches=1, global_step=0)  # fmt: skip
    return SimpleNamespace(**{**settings, **over})


@pytest.mark.parametrize(
    "over, says",
    [
        ({}, True),
        ({"max_steps": 500}, False),  # its last step evaluates
        ({"max_steps": 300, "accumulate_grad_batches": 2}, False),  # 600 batches: the interval counts batches
        ({"global_step": 450, "max_steps": 600}, False),  # resumed: the evaluation at 500 is this run's
        ({"global_step": 510, "max_steps": 900}, True),  # resumed past it: the next is at 1000
        ({"check_val_every_n_epoch": 1}, False),  # counted per epoch: Lightning's own check
        ({"limit_val_batches": 0}, False),  # no evaluation asked for
        ({"val_check_interval": 1.0}, False),  # a fraction of an epoch
        ({"max_steps": -1}, False),
        ({"fast_dev_run": True}, False),
    ],
)
def test_a_fit_ending_before_its_first_evaluation_is_named(over, says):
    """(DIS batches, which make several optimizer steps each, are below.)"""
    note = no_evaluation_note(_trainer(**over))
    if says:
        steps = over.get("max_steps", 20)
        assert note == (
            f"no evaluation: this run ends at step {steps}, before its first evaluation (every 500 batches: "
            "trainer.val_check_interval); it will report no val/ metric. Give a smaller --trainer.val_check_interval "
            "to evaluate."
        )
    else:
        assert note is None


def test_the_run_says_it_at_its_start(sudoku4_dir, tmp_path, caplog):
    from loopformer.cli import LoopformerCLI
    from tests.helpers import tiny_fit_args

    caplog.set_level("INFO")
    LoopformerCLI(args=tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=2"))  # the quickstart's 500
    assert [m for m in caplog.messages if m.startswith("no evaluation: this run ends at step 2, before")]


@pytest.mark.parametrize("max_steps, says", [(12, True), (36, False), (31, False)])  # 31: the 6th batch reaches 36
def test_batches_of_several_optimizer_steps_count_as_batches(max_steps, says):
    note = no_evaluation_note(_trainer(val_check_interval=6, max_steps=max_steps), steps_per_batch=6)
    assert (note is not None) == says
    if says:
        assert f"ends at step {max_steps}, before its first evaluation (every 6 batches of 6 steps: " in note
