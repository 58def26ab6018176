"""Train the quickstart and print its learning curve: wall time, step and held-out accuracy at every evaluation.

    python benchmarks/quickstart_curve.py [extra loopformer flags]

Run it on an otherwise idle machine; the numbers go to BENCHMARKS.md with the machine named.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import lightning as L
import torch

from loopformer.cli import LoopformerCLI


class CurveRecorder(L.Callback):
    def __init__(self) -> None:
        self.start = None
        self.rows: list[tuple[float, int, float, float]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.start is None:
            return
        m = trainer.callback_metrics
        row = (
            time.perf_counter() - self.start,
            trainer.global_step,
            float(m["val/exact_accuracy"]),
            float(m["val/accuracy"]),
        )
        self.rows.append(row)
        print(f"[curve] {row[0]:7.1f}s  step {row[1]:5d}  exact {row[2]:.3f}  token {row[3]:.3f}", flush=True)


def main() -> None:
    recorder = CurveRecorder()
    args = ["fit", "--config", "configs/quickstart.yaml", "--trainer.enable_progress_bar=false", *sys.argv[1:]]
    start = time.perf_counter()
    LoopformerCLI(args=args, trainer_defaults={"callbacks": [recorder]})
    total = time.perf_counter() - start
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"threads: {torch.get_num_threads()}; total wall time including data generation: {total:.0f}s")
    print("| wall time (s, from first step) | step | val/exact_accuracy | val/accuracy |")
    print("|---:|---:|---:|---:|")
    for t, step, exact, acc in recorder.rows:
        print(f"| {t:.0f} | {step} | {exact:.3f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
