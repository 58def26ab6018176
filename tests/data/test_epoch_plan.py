"""Training batches drawn directly at (epoch, index): the same as walking the epoch from its start, packed as
HRM/TRM pack, and prepared ahead without changing a thing."""

import threading
import time

import numpy as np
import pytest
import torch

from loopformer.data.epoch_plan import SetEpoch
from loopformer.data.format import PuzzleSet, load_split
from loopformer.data.prefetch import Prefetcher
from loopformer.data.sampling import SAMPLER_POSITION, TrainBatches
from tests.data.test_format_and_sampling import _grouped


def _set(example_counts: list[int], group_sizes: list[int]) -> PuzzleSet:
    n = sum(example_counts)
    return PuzzleSet(
        inputs=np.arange(n)[:, None].repeat(3, 1).astype(np.int32),
        labels=np.arange(n)[:, None].repeat(3, 1).astype(np.int32),
        puzzle_identifiers=np.arange(len(example_counts), dtype=np.int32),
        puzzle_indices=np.concatenate([[0], np.cumsum(example_counts)]).astype(np.int32),
        group_indices=np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32),
    )


def _walk(plan: SetEpoch) -> list[tuple[np.ndarray, np.ndarray]]:
    """The epoch read from its start one position at a time, as HRM/TRM's loop packs: each position's puzzle gives
    its examples (in the order of their keys) until the batch is full; the crossing puzzle gives what fits."""
    from loopformer.data.epoch_plan import STREAM_EXAMPLE

    batches, examples, puzzles, drawn = [], [], [], 0
    for j in range(plan.positions):
        puzzle = int(plan.puzzles_at(j, j + 1)[0])
        first, count = int(plan.s.puzzle_indices[puzzle]), int(plan.example_counts[puzzle])
        keys = plan._raw(STREAM_EXAMPLE, drawn, count)
        drawn += count
        take = min(count, plan.batch_size - len(examples))
        picked = first + np.argsort(keys, kind="stable")[:take]
        examples += picked.tolist()
        puzzles += [puzzle] * take
        if len(examples) == plan.batch_size:
            batches.append((np.array(examples), np.array(puzzles)))
            examples, puzzles = [], []
    return batches


@pytest.mark.parametrize(
    "counts, groups, batch",
    [
        ([1] * 12, [3, 1, 5, 3], 5),  # Sudoku-like: one example per puzzle
        ([3] * 10, [2, 2, 4, 2], 7),  # every puzzle 3 examples, 7 is not a multiple
        ([2, 1, 3, 1, 2, 5, 1, 4], [2, 1, 3, 2], 6),  # ARC-like: counts vary
    ],
)
def test_a_batch_drawn_directly_equals_the_epoch_walked_from_its_start(counts, groups, batch):
    s = _set(counts, groups)
    for epoch in range(3):
        plan = SetEpoch(s, 0, seed=3, epoch=epoch, passes=4, global_batch_size=batch)
        walked = _walk(plan)
        assert plan.num_batches == len(walked) > 0
        for k in reversed(range(plan.num_batches)):  # backwards: nothing depends on earlier batches being drawn
            examples, puzzles = plan.batch(k)
            assert examples.shape == puzzles.shape == (batch,)
            np.testing.assert_array_equal(examples, walked[k][0])
            np.testing.assert_array_equal(puzzles, walked[k][1])


def test_every_pass_visits_each_group_once_and_picks_inside_it():
    counts = [2, 1, 3, 1, 2, 5, 1, 4]
    s = _set(counts, [2, 1, 3, 2])
    plan = SetEpoch(s, 0, seed=0, epoch=5, passes=3, global_batch_size=4)
    groups = plan.groups_at(0, plan.positions).reshape(3, 4)
    assert all(sorted(row) == [0, 1, 2, 3] for row in groups)
    assert not all(np.array_equal(groups[0], row) for row in groups[1:])  # each pass shuffled anew
    puzzles = plan.puzzles_at(0, plan.positions)
    g = groups.reshape(-1)
    assert np.all((s.group_indices[g] <= puzzles) & (puzzles < s.group_indices[g + 1]))
    for k in range(plan.num_batches):
        examples, puzzles = plan.batch(k)
        owners = np.searchsorted(s.puzzle_indices, examples, side="right") - 1
        np.testing.assert_array_equal(owners, puzzles)  # every example belongs to its puzzle
        for p in np.unique(puzzles):
            assert len(set(examples[puzzles == p])) == (puzzles == p).sum()  # without replacement


def test_puzzle_picks_are_uniform_within_a_group():
    s = _set([1] * 4, [4])
    plan = SetEpoch(s, 0, seed=1, epoch=0, passes=20000, global_batch_size=8)
    share = np.bincount(plan.puzzles_at(0, plan.positions), minlength=4) / plan.positions
    assert np.all(np.abs(share - 0.25) < 0.01)


def test_seeds_epochs_and_sets_draw_independent_streams():
    s = _set([1] * 64, [1] * 64)
    first = SetEpoch(s, 0, seed=0, epoch=0, passes=1, global_batch_size=64).batch(0)[0]
    for other in [
        dict(seed=1, epoch=0, set_index=0),
        dict(seed=0, epoch=1, set_index=0),
        dict(seed=0, epoch=0, set_index=1),
    ]:
        plan = SetEpoch(s, other["set_index"], seed=other["seed"], epoch=other["epoch"], passes=1, global_batch_size=64)
        assert not np.array_equal(plan.batch(0)[0], first), other


def test_rank_rows_concatenated_are_the_global_batch_with_varying_counts(tmp_path):
    meta, sets = _grouped(tmp_path)
    whole = TrainBatches(meta, sets, 4, seed=2, epochs_per_iter=6)
    ranks = [TrainBatches(meta, sets, 4, rank=r, world_size=2, seed=2, epochs_per_iter=6) for r in range(2)]
    single, parts = list(whole), [list(r) for r in ranks]
    assert len(single) == len(parts[0]) == len(parts[1]) > 3
    for g, a, b in zip(single, *parts, strict=True):
        for key in ("inputs", "labels", "puzzle_identifiers"):
            assert torch.equal(torch.cat([a[key], b[key]]), g[key])


def test_a_resume_anywhere_draws_the_batches_the_uninterrupted_run_trains(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")
    straight = TrainBatches(meta, sets, 16, seed=4, epochs_per_iter=2)
    run = []
    for _ in range(3):  # three epochs, each batch marked trained
        for batch in straight:
            straight.mark_trained(batch[SAMPLER_POSITION])
            run.append(batch)
    for at in (0, 5, len(run) // 3, len(run) // 3 + 1, len(run) - 1):  # epoch starts, middles, the very end
        resumed = TrainBatches(meta, sets, 16, seed=4, epochs_per_iter=2)
        epoch, index = run[at][SAMPLER_POSITION].tolist()
        resumed.load_state_dict({"epoch": epoch, "position": index, "seed": 4})
        got = next(iter(resumed))
        assert all(torch.equal(got[k], run[at][k]) for k in got), at


def test_prefetched_batches_are_the_same_batches_in_the_same_order(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")
    plain = TrainBatches(meta, sets, 16, seed=0, epochs_per_iter=3)
    ahead = TrainBatches(meta, sets, 16, seed=0, epochs_per_iter=3)
    ahead.prefetch = 2
    iterator = iter(ahead)
    assert isinstance(iterator, Prefetcher)
    got, expected = list(iterator), list(plain)
    assert len(got) == len(expected) == 18
    assert all(all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(got, expected, strict=True))


def test_prefetch_raises_the_producers_error_and_stops_when_abandoned():
    def failing():
        yield {"x": torch.zeros(1)}
        raise ValueError("dataset file vanished")

    it = Prefetcher(failing(), depth=2)
    assert torch.equal(next(it)["x"], torch.zeros(1))
    with pytest.raises(ValueError, match="vanished"):
        next(it)

    def endless():
        while True:
            yield {"x": torch.zeros(1)}

    before = threading.active_count()
    it = Prefetcher(endless(), depth=2)
    next(it)
    thread = it._thread
    del it  # Lightning drops the iterator mid-epoch (max_steps, a new epoch)
    deadline = time.time() + 5
    while thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert not thread.is_alive() and threading.active_count() <= before


def test_a_negative_prefetch_is_a_clear_error(sudoku4_dir):
    from loopformer.data.datamodule import PuzzleDataModule
    from loopformer.data.format import DatasetError

    with pytest.raises(DatasetError, match=r"data.prefetch must be >= 0 \(batches prepared ahead\), got -1"):
        PuzzleDataModule(str(sudoku4_dir), prefetch=-1)


def test_stop_all_joins_the_owners_producers_and_a_stopped_prefetcher_ends():
    from loopformer.data.prefetch import stop_all

    def endless():
        while True:
            yield {"x": torch.zeros(1)}

    mine, other = object(), object()
    it = Prefetcher(endless(), depth=2, owner=mine)
    another_runs = Prefetcher(endless(), depth=2, owner=other)
    next(it)
    stop_all(owner=mine)  # what the data module's teardown does
    assert not it._thread.is_alive() and another_runs._thread.is_alive()
    with pytest.raises(StopIteration):
        while True:  # what was prepared can still be taken, then the iterator ends instead of waiting forever
            next(it)
    assert torch.equal(next(another_runs)["x"], torch.zeros(1))
    stop_all()  # what the interpreter's exit does: every producer
    assert not another_runs._thread.is_alive()
