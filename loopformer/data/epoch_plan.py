"""Where each training batch of an epoch comes from, addressed by (seed, epoch, batch index).

An epoch of one puzzle set is ``passes`` shuffled passes over its groups, read as one sequence of group
positions. Position j draws one puzzle of its group; the puzzle's examples fill the global batch in a random
order, the group that crosses the batch size gives only the examples that still fit, and the next batch starts
at the next position (HRM/TRM's packing). Every random number comes from a counter-based stream (numpy's Philox
with the key (seed, epoch) and the counter (value index, pass, set, stream)), so any batch is drawn directly:

- the order of pass p: a permutation from its own stream;
- the puzzle at position j: value j of the puzzle stream, scaled to the group's puzzles;
- the example order: one value per candidate example (value i for the i-th example of the epoch), sorted
  within each puzzle.

Batch boundaries follow from the puzzles' example counts. When every puzzle of a set holds the same number of
examples (Sudoku, mazes: one), batch k starts at position ``k * ceil(batch / count)``: reaching any batch draws only
that batch. Otherwise (ARC) the boundaries come from one vectorised pass over the epoch's puzzle picks, made once
per epoch.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from loopformer.data.format import PuzzleSet

STREAM_ORDER, STREAM_PUZZLE, STREAM_EXAMPLE = 1, 2, 3
PHILOX_LANES = 4  # Philox4x64 yields 4 values per counter step
UNIT = 2.0**-53  # raw 64-bit value -> [0, 1) from its top 53 bits


class SetEpoch:
    """One puzzle set's batches in one epoch."""

    def __init__(
        self, s: PuzzleSet, set_index: int, seed: int, epoch: int, passes: int, global_batch_size: int
    ) -> None:
        self.s, self.set_index, self.seed, self.epoch = s, set_index, seed, epoch
        self.batch_size = global_batch_size
        self.groups = s.group_indices.size - 1
        self.positions = self.groups * passes
        counts = np.diff(s.puzzle_indices)
        self.example_counts = counts
        self.uniform = counts.size > 0 and bool(np.all(counts == counts[0]))
        self._orders: dict[int, np.ndarray] = {}

    # -- random streams ------------------------------------------------------------------------------------------
    def _raw(self, stream: int, start: int, count: int, lane: int = 0) -> np.ndarray:
        """Values ``start .. start + count`` of one stream (uint64)."""
        block, offset = divmod(start, PHILOX_LANES)
        generator = np.random.Philox(counter=[block, lane, self.set_index, stream], key=[self.seed, self.epoch])
        return generator.random_raw(count + offset)[offset:]

    def _order(self, pass_index: int) -> np.ndarray:
        order = self._orders.get(pass_index)
        if order is None:
            if len(self._orders) > 4:  # a batch spans at most a few passes; keep the memory flat
                self._orders = {}
            key = [self.seed, self.epoch]
            rng = np.random.Generator(np.random.Philox(counter=[0, pass_index, self.set_index, STREAM_ORDER], key=key))
            order = self._orders[pass_index] = rng.permutation(self.groups)
        return order

    def groups_at(self, start: int, stop: int) -> np.ndarray:
        positions = np.arange(start, stop)
        passes, offsets = np.divmod(positions, self.groups)
        out = np.empty(positions.size, dtype=np.int64)
        for p in np.unique(passes):
            mask = passes == p
            out[mask] = self._order(int(p))[offsets[mask]]
        return out

    def puzzles_at(self, start: int, stop: int) -> np.ndarray:
        groups = self.groups_at(start, stop)
        lo = self.s.group_indices[groups].astype(np.int64)
        size = self.s.group_indices[groups + 1].astype(np.int64) - lo
        u = (self._raw(STREAM_PUZZLE, start, stop - start) >> np.uint64(11)).astype(np.float64) * UNIT
        return lo + np.minimum((u * size).astype(np.int64), size - 1)

    # -- boundaries ----------------------------------------------------------------------------------------------
    @cached_property
    def _boundaries(self) -> tuple[np.ndarray, np.ndarray]:
        """(start position of each batch and the end of the last, examples before each position): variable counts."""
        counts = self.example_counts[self.puzzles_at(0, self.positions)]
        before = np.concatenate([[0], np.cumsum(counts)])  # examples before position j
        starts = [0]
        while True:
            a = starts[-1]
            last = int(np.searchsorted(before, before[a] + self.batch_size, side="left"))  # first j: before[j] >= +B
            if last > self.positions:
                break
            starts.append(last)
        return np.array(starts, dtype=np.int64), before

    @property
    def num_batches(self) -> int:
        if self.positions == 0:
            return 0
        if self.uniform:
            return self.positions // math.ceil(self.batch_size / int(self.example_counts[0]))
        return self._boundaries[0].size - 1

    def span(self, k: int) -> tuple[int, int, int]:
        """Batch k's positions [start, stop) and the examples drawn before it in this epoch."""
        if self.uniform:
            count = int(self.example_counts[0])
            per_batch = math.ceil(self.batch_size / count)
            return k * per_batch, (k + 1) * per_batch, k * per_batch * count
        starts, before = self._boundaries
        return int(starts[k]), int(starts[k + 1]), int(before[starts[k]])

    # -- one batch -----------------------------------------------------------------------------------------------
    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(example ids, puzzle ids) of global batch k, ``batch_size`` of each."""
        start, stop, examples_before = self.span(k)
        puzzles = self.puzzles_at(start, stop)
        first = self.s.puzzle_indices[puzzles].astype(np.int64)
        if self.uniform and self.example_counts[0] == 1:
            return first, puzzles
        counts = self.example_counts[puzzles].astype(np.int64)
        take = counts.copy()
        take[-1] = self.batch_size - (counts[:-1].sum())  # the crossing puzzle gives what still fits
        total = int(counts.sum())
        owner = np.repeat(np.arange(puzzles.size), counts)  # candidate example -> its position in the batch
        slot_start = np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        keys = self._raw(STREAM_EXAMPLE, examples_before, total)
        order = np.lexsort((keys, owner))  # within each puzzle, its examples in random order
        rank = np.arange(total) - slot_start  # place within its puzzle after sorting
        keep = rank < take[owner]
        examples = np.repeat(first, counts)[keep] + (order - slot_start)[keep]
        return examples, np.repeat(puzzles, take)
