"""The README's promise: the quickstart reaches val/exact_accuracy >= 0.90 on held-out puzzles.

Slow (a few minutes on 2 cores): run with `python -m pytest -m slow`.
"""

import pytest

from loopformer.cli import LoopformerCLI
from tests.helpers import quickstart_fit_args


@pytest.mark.slow
def test_quickstart_reaches_ninety_percent_on_held_out_puzzles(tmp_path):
    cli = LoopformerCLI(args=quickstart_fit_args(tmp_path))
    metrics = cli.trainer.callback_metrics
    assert metrics["val/count"].item() == 1000
    assert metrics["val/exact_accuracy"].item() >= 0.90
