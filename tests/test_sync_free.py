"""A training step makes no device-to-host synchronisation of its own between logging intervals: no ``.item()``,
``.tolist()``, ``bool(tensor)`` or data-dependent shape (``nonzero``, ``unique``) from loopformer's code."""

import traceback
from pathlib import Path

import lightning as L
import torch

from loopformer.cli import LoopformerCLI
from tests.helpers import tiny_fit_args

PACKAGE = str(Path(__file__).resolve().parents[1] / "loopformer")
SYNCS = ("item", "tolist", "__bool__", "nonzero", "unique")


class CountSyncs(L.Callback):
    """Counts sync calls made while steps 2..11 run (step 1 sets things up), by the package file that made them."""

    def __init__(self) -> None:
        self.counting = False
        self.calls: list[tuple[str, str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.counting = 1 <= trainer.global_step <= 10

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.counting = False


def test_ten_training_steps_make_no_sync_of_loopformers_own(sudoku4_dir, tmp_path, monkeypatch):
    counter = CountSyncs()
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            if counter.counting:
                # the code that asked: torch's own calls (AdamW reads its CPU step count) are not ours
                caller = traceback.extract_stack()[-2]
                if caller.filename.startswith(PACKAGE):
                    counter.calls.append((_name, f"{Path(caller.filename).name}:{caller.lineno}"))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    args = tiny_fit_args(sudoku4_dir, tmp_path, "--trainer.max_steps=12", "--trainer.limit_val_batches=0",
                         "--trainer.log_every_n_steps=50", "--trainer.enable_checkpointing=false")  # fmt: skip
    LoopformerCLI(args=args, trainer_defaults={"callbacks": [counter]})
    assert counter.calls == []
