"""Batches from a puzzle dataset, as the HRM/TRM loader forms them.

Training: each epoch shuffles the groups, picks one puzzle at random inside each group and packs its
examples into global batches; the last incomplete global batch is dropped. Every batch is drawn directly from
its (seed, epoch, index) (``epoch_plan.py``), so an epoch boundary or a resume costs what any batch costs. Every
rank takes its own slice of each global batch and gathers only those rows, so ranks see disjoint examples and the
same number of batches. In the training process (no loader workers) a thread prepares batches ahead
(``prefetch.py``).

Evaluation: the examples in order, one global batch at a time, each rank its slice; rows past the end
are padding (labels all ignored) so every rank yields the same number of full-size batches.

DataLoader workers: worker w of W collates every W-th batch (w, w + W, ...). The DataLoader takes one
batch from each worker in turn, so the order is the same with any number of workers as without.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import numpy as np
import torch

from loopformer.batch import IGNORE_LABEL_ID
from loopformer.data.epoch_plan import SetEpoch
from loopformer.data.format import DatasetError, PuzzleDatasetMetadata, PuzzleSet
from loopformer.data.prefetch import Prefetcher

# A training batch carries its (epoch, index) under this key from the loader (possibly a worker process) to the
# data module, which pops it before the batch reaches the model (PuzzleDataModule.on_before_batch_transfer).
SAMPLER_POSITION = "sampler_position"

Batch = dict[str, torch.Tensor]


def this_worker() -> tuple[int, int]:
    """(worker id, number of workers) of the DataLoader process running this iterator; (0, 1) in the main one."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def collate(
    meta: PuzzleDatasetMetadata, inputs: np.ndarray, labels: np.ndarray, puzzle_ids: np.ndarray, batch_size: int
) -> Batch:
    """Arrays of ``n <= batch_size`` rows -> a padded batch; ignored labels become ``IGNORE_LABEL_ID``."""
    n = inputs.shape[0]
    out_inputs = np.full((batch_size, meta.seq_len), meta.pad_id, dtype=np.int32)
    out_labels = np.full((batch_size, meta.seq_len), IGNORE_LABEL_ID, dtype=np.int64)
    out_ids = np.full((batch_size,), meta.blank_identifier_id, dtype=np.int32)
    out_inputs[:n] = inputs
    out_labels[:n] = labels
    if meta.ignore_label_id is not None:
        out_labels[:n][labels == meta.ignore_label_id] = IGNORE_LABEL_ID
    out_ids[:n] = puzzle_ids
    return {
        "inputs": torch.from_numpy(out_inputs),
        "labels": torch.from_numpy(out_labels),
        "puzzle_identifiers": torch.from_numpy(out_ids),
    }


def batch_split_problem(setting: str, batch_size: int, world_size: int) -> str:
    """Why a batch of ``batch_size`` examples cannot be shared evenly by ``world_size`` processes, or ""."""
    if batch_size % world_size == 0:
        return ""
    return (
        f"{setting}={batch_size} is not divisible by the {world_size} processes (trainer.devices x trainer.num_nodes): "
        f"each takes an equal share of every batch; give a multiple of {world_size}."
    )


class _RankBatches(torch.utils.data.IterableDataset):
    """Batches of ``global_batch_size`` examples over all ranks, of which this rank makes its share."""

    def __init__(
        self, meta: PuzzleDatasetMetadata, sets: dict[str, PuzzleSet], global_batch_size: int, rank: int,
        world_size: int, setting: str,
    ) -> None:  # fmt: skip
        problem = batch_split_problem(setting, global_batch_size, world_size)
        if problem:
            raise DatasetError(problem)
        self.meta, self.sets = meta, sets
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.rank, self.world_size = rank, world_size


class TrainBatches(_RankBatches):
    """Training batches for one rank. Each iteration continues from the last batch trained (or the resume point):
    the rest of that epoch, or the next epoch (``epochs_per_iter`` passes, its order seeded by its number).

    Only the main process learns what was trained (``mark_trained``); DataLoader workers get a copy of this
    object at each iteration's start, so the position lives here, never in a worker's copy."""

    def __init__(
        self,
        meta: PuzzleDatasetMetadata,
        sets: dict[str, PuzzleSet],
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epochs_per_iter: int = 1,
    ) -> None:
        super().__init__(meta, sets, global_batch_size, rank, world_size, "data.global_batch_size")
        if epochs_per_iter < 1:
            raise ValueError(f"data.epochs_per_iter must be >= 1, got {epochs_per_iter}.")
        self.epochs_per_iter = epochs_per_iter
        self.seed = seed
        self.epoch = 0  # the epoch to continue from, until a batch is trained
        self.skip = 0  # batches of it already trained (a resume)
        self.trained: Optional[tuple[int, int]] = None  # (epoch, batches) trained so far
        self.prefetch = 0  # batches prepared ahead in a thread when no loader worker does it (set by the data module)
        self.pin_memory = False
        self._plan: Optional[tuple[int, list[SetEpoch]]] = None

    def __len__(self) -> int:
        parts = self.plan(self.position()[0])
        if not all(part.uniform or part.positions == 0 for part in parts):
            raise TypeError("batches per epoch vary with the puzzles drawn")  # Lightning then shows no total
        return sum(part.num_batches for part in parts)

    def mark_trained(self, tag: torch.Tensor) -> None:
        """Called with a batch's ``SAMPLER_POSITION`` when it is trained on (loaders prefetch ahead)."""
        epoch, index = (int(v) for v in tag)
        self.trained = (epoch, index + 1)

    def has_a_full_batch(self) -> bool:
        """Whether an epoch fills at least one global batch (else training would never take a step)."""
        return self.batches_in(0) > 0

    def position(self) -> tuple[int, int]:
        """(epoch, batches of it done) where the next iteration continues."""
        return self.trained if self.trained is not None else (self.epoch, self.skip)

    def state_dict(self) -> dict:
        epoch, position = self.position()
        return {"epoch": epoch, "position": position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.skip, self.seed = state["epoch"], state["position"], state["seed"]
        self.trained = None

    def plan(self, epoch: int) -> list[SetEpoch]:
        """The epoch's batches, one ``SetEpoch`` per set (the last plan is kept: an epoch is read batch by batch)."""
        if self._plan is None or self._plan[0] != epoch:
            self._plan = (epoch, [
                SetEpoch(s, i, self.seed, epoch, self.epochs_per_iter, self.global_batch_size)
                for i, s in enumerate(self.sets.values())
            ])  # fmt: skip
        return self._plan[1]

    def batches_in(self, epoch: int) -> int:
        return sum(part.num_batches for part in self.plan(epoch))

    def global_batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, PuzzleSet]:
        """(example ids, puzzle ids, set) of batch ``index`` of ``epoch``, drawn directly."""
        for part in self.plan(epoch):
            if index < part.num_batches:
                examples, puzzles = part.batch(index)
                return examples, puzzles, part.s
            index -= part.num_batches
        raise IndexError(f"epoch {epoch} has {self.batches_in(epoch)} batches")

    def local_batch(self, epoch: int, index: int) -> Batch:
        """This rank's rows of a global batch: only they are gathered and collated."""
        examples, puzzles, s = self.global_batch(epoch, index)
        lo, hi = self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size
        mine = examples[lo:hi]
        batch = collate(self.meta, s.inputs[mine], s.labels[mine], s.puzzle_identifiers[puzzles[lo:hi]], hi - lo)
        batch[SAMPLER_POSITION] = torch.tensor([epoch, index])
        return batch

    def __iter__(self) -> Iterator[Batch]:
        worker, workers = this_worker()
        batches = self._batches(worker, workers)
        if workers == 1 and self.prefetch > 0:
            return Prefetcher(batches, self.prefetch, self.pin_memory, owner=self)
        return batches

    def _batches(self, worker: int, workers: int) -> Iterator[Batch]:
        epoch, skip = self.position()
        while True:
            count = self.batches_in(epoch)
            if skip < count:
                # Worker w of W collates every W-th batch of this iteration; the loader takes them in turn.
                for index in range(skip + worker, count, workers):
                    yield self.local_batch(epoch, index)
                return
            if count == 0:  # an epoch without one full batch ends the iteration
                return
            epoch, skip = epoch + 1, 0  # a resume at an epoch's end continues with the next one


class EvalBatches(_RankBatches):
    """Every example once across all ranks, in order; each batch also carries ``example_index``."""

    def __init__(
        self,
        meta: PuzzleDatasetMetadata,
        sets: dict[str, PuzzleSet],
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(meta, sets, global_batch_size, rank, world_size, "data.eval_batch_size")

    def __len__(self) -> int:
        return sum(-(-s.num_examples // self.global_batch_size) for s in self.sets.values())

    def __iter__(self) -> Iterator[Batch]:
        worker, workers = this_worker()
        offset, batches = 0, 0  # examples of the sets before this one; batches so far, over all workers
        for s in self.sets.values():
            example_puzzle = np.repeat(np.arange(s.puzzle_identifiers.size), np.diff(s.puzzle_indices))
            for start in range(0, s.num_examples, self.global_batch_size):
                turn, batches = batches, batches + 1
                if turn % workers != worker:
                    continue
                end = min(s.num_examples, start + self.global_batch_size)
                lo = min(end, start + self.rank * self.local_batch_size)
                hi = min(end, lo + self.local_batch_size)
                batch = collate(
                    self.meta,
                    s.inputs[lo:hi],
                    s.labels[lo:hi],
                    s.puzzle_identifiers[example_puzzle[lo:hi]],
                    self.local_batch_size,
                )
                index = np.full(self.local_batch_size, -1, dtype=np.int64)
                index[: hi - lo] = np.arange(lo, hi) + offset
                batch["example_index"] = torch.from_numpy(index)
                yield batch
            offset += s.num_examples
