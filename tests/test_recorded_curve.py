"""A refactor changes no numerics: 200 quickstart steps from a fixed seed give the recorded loss curve, bit for bit.

The curve in ``recorded/quickstart_curve.json`` was written by this test with ``LOOPFORMER_RECORD_CURVE=1``.
Re-record it only in a commit that means to change what training computes, and say why in its message.

Bit for bit holds on one machine and software stack: the same code gives a curve that differs in the last bits from
step 1 on another CPU or library build (the recording of 2026-11-29 differs from what its own commit computes on
CI's AMD EPYC machine, whatever the thread count, MKL's CBWR mode, oneDNN's ISA or ATen's CPU capability). So the file
records where it was made, and a failure says whether this machine is that one.
"""

import json
import os
import platform
from pathlib import Path

import lightning as L
import pytest

from loopformer.cli import LoopformerCLI
from tests.helpers import quickstart_fit_args

RECORDED = Path(__file__).with_name("recorded") / "quickstart_curve.json"
STEPS = 200
# What the evaluation computes (metrics added later, such as the compute report, are not numerics of training).
VAL_KEYS = ("val/accuracy", "val/count", "val/exact", "val/exact_accuracy", "val/lm_loss", "val/q_halt_accuracy",
            "val/q_halt_loss", "val/steps")  # fmt: skip


def environment() -> dict[str, str]:
    import numpy
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    return {
        "cpu": cpu or platform.processor() or "?",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "numpy": numpy.__version__,
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[str] = []
        self.val: dict[str, str] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]).hex())

    def on_validation_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        self.val = {k: float(metrics[k]).hex() for k in VAL_KEYS}


def test_quickstart_loss_curve_is_bit_identical_to_the_recorded_one(tmp_path):
    recorder = LossRecorder()
    LoopformerCLI(
        args=quickstart_fit_args(
            tmp_path,
            f"--trainer.max_steps={STEPS}",
            f"--trainer.val_check_interval={STEPS}",
            "--trainer.enable_checkpointing=false",
            "--trainer.logger=false",
        ),
        trainer_defaults={"callbacks": [recorder]},
    )
    got = {"steps": STEPS, "train_loss": recorder.losses, "val": recorder.val}
    assert len(recorder.losses) == STEPS and recorder.val
    if os.environ.get("LOOPFORMER_RECORD_CURVE") == "1":
        RECORDED.parent.mkdir(exist_ok=True)
        RECORDED.write_text(json.dumps({**got, "environment": environment()}, indent=0) + "\n")
        pytest.skip(f"recorded {RECORDED}")
    expected = json.loads(RECORDED.read_text())
    recorded_in = expected.pop("environment", {})
    where = "this machine and stack" if recorded_in == environment() else f"{recorded_in}, this is {environment()}"
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(got["train_loss"], expected["train_loss"], strict=False)) if a != b), None
    )
    assert first_diff is None, (
        f"train loss differs from step {first_diff}: {float.fromhex(got['train_loss'][first_diff])!r} "
        f"vs recorded {float.fromhex(expected['train_loss'][first_diff])!r} (recorded on {where})"
    )
    assert got == expected
