"""Training-loader costs on one CPU core at the Sudoku-Extreme-1k-aug-1000 shape (global batch 768).

    python benchmarks/bench_dataloader.py            # the recipe shape (about a minute, most of it the "before")
    python benchmarks/bench_dataloader.py --smoke    # tiny shape, seconds (the test runs this)

Builds a dataset with that layout (1000 groups x 1001 puzzles x 81 tokens, uint8, memory-mapped) in a temporary
directory, then prints, side by side in one process:

1. the first batch after an epoch boundary and after a resume half-way through an epoch: ``TrainBatches`` (each
   batch drawn directly at its (epoch, index)) against the replay it replaced (the previous sampler redrew every
   batch before the position and skipped it; it lives on below as ``replay_first_batch``);
2. packing: examples/s of whole global batches drawn and collated, against the previous per-puzzle loop;
3. a simulated 50 ms training step fed by the default loader (a prefetch thread) against no prefetch: how long
   the step waits for its batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loopformer.data.format import PuzzleDatasetMetadata, PuzzleSet, load_split, save_split
from loopformer.data.sampling import TrainBatches, collate


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


# -- the previous sampler, kept here as the "before" -----------------------------------------------------------------
def replay_pack(rng: np.random.Generator, order: np.ndarray, s: PuzzleSet, start: int, batch: int):
    """The previous packing: one rng.integers and one rng.choice per puzzle."""
    examples, puzzles, size = [], [], 0
    while start < order.size and size < batch:
        group = order[start]
        puzzle = rng.integers(s.group_indices[group], s.group_indices[group + 1])
        start += 1
        first = int(s.puzzle_indices[puzzle])
        count = int(s.puzzle_indices[puzzle + 1]) - first
        take = min(count, batch - size)
        examples.append(first + rng.choice(count, take, replace=False))
        puzzles.append(np.full(take, puzzle, dtype=np.int64))
        size += take
    return start, np.concatenate(examples), np.concatenate(puzzles)


def replay_first_batch(meta, s: PuzzleSet, batch: int, passes: int, epoch: int, skip: int):
    """The previous way to reach (epoch, skip): redraw the epoch's batches from its start, yield the first after."""
    rng = np.random.Generator(np.random.Philox(key=[0, epoch * 1000]))
    order = np.concatenate([rng.permutation(s.group_indices.size - 1) for _ in range(passes)])
    start, index = 0, 0
    while True:
        start, examples, puzzles = replay_pack(rng, order, s, start, batch)
        if index == skip:
            return collate(meta, s.inputs[examples], s.labels[examples], s.puzzle_identifiers[puzzles], batch)
        index += 1


# -- measurements ----------------------------------------------------------------------------------------------------
def first_batch_seconds(meta, sets, batch: int, passes: int, epoch: int, position: int) -> float:
    sampler = TrainBatches(meta, sets, batch, seed=0, epochs_per_iter=passes)
    sampler.load_state_dict({"epoch": epoch, "position": position, "seed": 0})
    start = time.perf_counter()
    next(iter(sampler))
    return time.perf_counter() - start


def packing_rate(meta, sets, batch: int, seconds: float) -> tuple[float, float]:
    sampler = TrainBatches(meta, sets, batch, seed=0, epochs_per_iter=50)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for b in sampler:
            count += b["inputs"].shape[0]
            if time.perf_counter() - start >= seconds:
                break
    new = count / (time.perf_counter() - start)
    s = next(iter(sets.values()))
    rng = np.random.Generator(np.random.Philox(key=[0, 0]))
    order = np.concatenate([rng.permutation(s.group_indices.size - 1) for _ in range(50)])
    count, at, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds and at + batch <= order.size:
        at, examples, puzzles = replay_pack(rng, order, s, at, batch)
        collate(meta, s.inputs[examples], s.labels[examples], s.puzzle_identifiers[puzzles], batch)
        count += batch
    return new, count / (time.perf_counter() - start)


def step_wait(meta, sets, batch: int, passes: int, prefetch: int, steps: int, step_seconds: float) -> float:
    """Mean seconds a simulated training step (a sleep, which frees the GIL as a real step does) waits for its batch."""
    sampler = TrainBatches(meta, sets, batch, seed=0, epochs_per_iter=passes)
    sampler.prefetch = prefetch
    loader = torch.utils.data.DataLoader(sampler, batch_size=None, num_workers=0)
    iterator = iter(loader)
    next(iterator)
    time.sleep(step_seconds)
    waited = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        next(iterator)
        waited += time.perf_counter() - start
        time.sleep(step_seconds)
    return waited / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="a tiny shape: checks the script, measures nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    groups, per_group, batch = (40, 11, 32) if args.smoke else (1000, 1001, 768)
    passes, replay_passes = (50, 50) if args.smoke else (5000, 500)
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), groups, per_group)
        meta, sets = load_split(Path(tmp) / "train")
        s = sets["all"]
        for b in s.inputs, s.labels:  # page the memory map in once, as a long run does
            b.sum()
        per_epoch = groups * passes // batch
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores (1 thread used), numpy {np.__version__}")
        print(f"shape: {groups} groups x {per_group} puzzles, global batch {batch}")
        print("\n| first batch | epochs_per_iter | drawn directly (ms) | replayed, before (ms) |\n|---|---|---|---|")
        replay_per_epoch = groups * replay_passes // batch
        # At an epoch boundary the replay redrew the whole finished epoch; mid-epoch, the half before the position.
        cases = (("after an epoch boundary", 1, 0, replay_per_epoch - 1), ("after a resume mid-epoch", 0, 0.5, None))
        for label, epoch, frac, replay_skip in cases:
            new = first_batch_seconds(meta, sets, batch, passes, epoch, int(per_epoch * frac))
            start = time.perf_counter()
            replay_first_batch(meta, s, batch, replay_passes, 0, replay_skip or int(replay_per_epoch * frac))
            old = time.perf_counter() - start
            scale = passes / replay_passes
            print(f"| {label} | {passes} | {1e3 * new:.1f} | {1e3 * old * scale:,.0f} "
                  f"(measured {1e3 * old:,.0f} at {replay_passes}, x{scale:g}) |")  # fmt: skip
        new, old = packing_rate(meta, sets, batch, 0.5 if args.smoke else 5.0)
        print(f"\npacking, whole global batches drawn and collated: {new:,.0f} examples/s (before: {old:,.0f})")
        step = 0.05
        print(
            f"\n| loader (simulated {1e3 * step:.0f} ms step) | wait per step (ms) | share of the step |\n|---|---|---|"
        )
        for label, prefetch in (("prefetch 2 (default)", 2), ("prefetch 0", 0)):
            wait = step_wait(meta, sets, batch, passes, prefetch, 10 if args.smoke else 100, step)
            print(f"| {label} | {1e3 * wait:.3f} | {100 * wait / step:.2f}% |")


if __name__ == "__main__":
    main()
