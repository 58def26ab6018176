"""Training-loader throughput on one CPU core at the Sudoku-Extreme-1k-aug-1000 shape (global batch 768).

    python benchmarks/bench_dataloader.py

Builds a dataset with that layout (1000 groups x 1001 puzzles x 81 tokens, uint8, memory-mapped) in a
temporary directory and times loopformer's TrainBatches; the target is >= 20,000 examples/s.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loopformer.data.format import PuzzleDatasetMetadata, PuzzleSet, load_split, save_split
from loopformer.data.sampling import TrainBatches


def build(root: Path, groups: int = 1000, per_group: int = 1001) -> None:
    n = groups * per_group
    rng = np.random.default_rng(0)
    s = PuzzleSet(
        inputs=rng.integers(1, 11, size=(n, 81), dtype=np.uint8),
        labels=rng.integers(2, 11, size=(n, 81), dtype=np.uint8),
        puzzle_identifiers=np.zeros(n, dtype=np.int32),
        puzzle_indices=np.arange(n + 1, dtype=np.int32),
        group_indices=np.arange(groups + 1, dtype=np.int32) * per_group,
    )
    meta = PuzzleDatasetMetadata(0, 0, 0, 11, 81, 1, groups, 1.0, groups, ["all"])
    save_split(root / "train", meta, {"all": s})


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        meta, sets = load_split(Path(tmp) / "train")
        batches = TrainBatches(meta, sets, global_batch_size=768, epochs_per_iter=50, seed=0)
        for _ in batches:  # page the memory map in once, as a long run does
            pass
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 5.0:
            for batch in batches:  # one iteration = 50 passes over the 1000 groups
                count += batch["inputs"].shape[0]
        elapsed = time.perf_counter() - start
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores (1 thread used), numpy {np.__version__}")
    print(
        f"TrainBatches, global batch 768, Sudoku shape: {count / elapsed:,.0f} examples/s ({count / 768 / elapsed:.1f} batches/s)"
    )


if __name__ == "__main__":
    main()
