"""The README's promise: the quickstart reaches val/exact_accuracy >= 0.90 on held-out puzzles.

Slow (a few minutes on 2 cores): run with `python -m pytest -m slow`.
"""

from pathlib import Path

import pytest

from loopformer.cli import LoopformerCLI

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_reaches_ninety_percent_on_held_out_puzzles(tmp_path):
    cli = LoopformerCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_paths={tmp_path / 'data'}",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert metrics["val/count"].item() == 1000
    assert metrics["val/exact_accuracy"].item() >= 0.90
