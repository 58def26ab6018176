"""A training step makes no device-to-host synchronisation of its own between logging intervals: no ``.item()``,
``.tolist()``, ``bool``/``float``/``int`` of a tensor or data-dependent shape (``nonzero``, ``unique``) from
loopformer's code, eager or compiled.

Outside loopformer, the only such call in the window is torch's AdamW reading its step count (a CPU tensor, so no
device sync); Lightning reads logged values only at ``log_every_n_steps`` (CONTRIBUTING.md, Conventions)."""

from pathlib import Path

import lightning as L
import pytest

from loopformer.cli import LoopformerCLI
from loopformer.model import act
from tests.helpers import recorded_syncs, tiny_fit_args

PACKAGE = str(Path(__file__).resolve().parents[1] / "loopformer")


class CountingWindow(L.Callback):
    """Marks the window counted: while steps 2..11 run (step 1 sets things up)."""

    def __init__(self) -> None:
        self.counting = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.counting = 1 <= trainer.global_step <= 10

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.counting = False


@pytest.mark.parametrize("compiled", [False, True])
def test_ten_training_steps_make_no_sync_of_loopformers_own(sudoku4_dir, tmp_path, monkeypatch, compiled):
    monkeypatch.setattr(act, "COMPILE_BACKEND", "aot_eager")  # the Python around the graph is what counts here
    counter = CountingWindow()
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=12", "--trainer.limit_val_batches=0",
                         "--trainer.log_every_n_steps=50", "--trainer.enable_checkpointing=false",
                         f"--model.runtime.compile={str(compiled).lower()}")  # fmt: skip
    # the code that asked, while steps 2..11 run: torch's own calls (AdamW reads its CPU step count) are not ours
    with recorded_syncs(lambda caller: counter.counting and caller.filename.startswith(PACKAGE)) as calls:
        LoopformerCLI(args=args, trainer_defaults={"callbacks": [counter]})
    assert [(name, f"{Path(c.filename).name}:{c.lineno}") for name, c in calls] == []
