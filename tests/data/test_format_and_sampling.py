import json

import numpy as np
import pytest
import torch

from loopformer.batch import IGNORE_LABEL_ID
from loopformer.data.format import DatasetError, load_split
from loopformer.data.sampling import SAMPLER_POSITION, EvalBatches, TrainBatches


def _write(split_dir, inputs, labels, puzzle_ids, puzzle_indices, group_indices, **meta_over):
    split_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=5,
        seq_len=inputs.shape[1],
        num_puzzle_identifiers=4,
        total_groups=len(group_indices) - 1,
        mean_puzzle_examples=1.0,
        sets=["all"],
    )
    meta.update(meta_over)
    (split_dir / "dataset.json").write_text(json.dumps(meta))
    for key, arr in dict(
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=puzzle_ids,
        puzzle_indices=puzzle_indices,
        group_indices=group_indices,
    ).items():
        np.save(split_dir / f"all__{key}.npy", arr)


def _grouped(tmp_path):
    """3 groups; puzzles of 1-3 examples; example i has input row filled with (i % 4) + 1."""
    sizes = [2, 1, 3, 1, 2]
    n = sum(sizes)
    inputs = (np.arange(n)[:, None] % 4 + 1).repeat(6, 1).astype(np.int32)
    _write(
        tmp_path / "train",
        inputs,
        inputs.copy(),
        np.array([0, 1, 2, 3, 1], dtype=np.int32),
        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
        np.array([0, 2, 3, 5], dtype=np.int32),
    )
    return load_split(tmp_path / "train")


def test_validation_errors_name_file_and_value(tmp_path):
    good = np.ones((4, 6), dtype=np.int32)
    idx = np.arange(5, dtype=np.int32)
    ids = np.zeros(4, dtype=np.int32)
    cases = [
        (dict(inputs=good * 7), "token id 7 outside"),
        (dict(puzzle_ids=ids + 9), "identifier 9 outside"),
        (dict(puzzle_indices=np.array([0, 2, 1, 3, 4], dtype=np.int32)), "not monotonic"),
        (dict(group_indices=np.array([0, 2, 3], dtype=np.int32)), "must start at 0 and end"),
        (dict(inputs=good.astype(np.float32)), "dtype float32"),
        (dict(labels=np.ones((4, 5), dtype=np.int32)), r"shape \(4, 5\)"),
    ]
    for i, (over, match) in enumerate(cases):
        arrays = dict(inputs=good, labels=good, puzzle_ids=ids, puzzle_indices=idx, group_indices=idx)
        arrays.update(over)
        d = tmp_path / f"case{i}"
        _write(
            d,
            arrays["inputs"],
            arrays["labels"],
            arrays["puzzle_ids"],
            arrays["puzzle_indices"],
            arrays["group_indices"],
        )
        with pytest.raises(DatasetError, match=match) as e:
            load_split(d)
        assert str(d) in str(e.value)
    (tmp_path / "case0" / "all__labels.npy").unlink()
    with pytest.raises(DatasetError, match="all__labels.npy: missing"):
        load_split(tmp_path / "case0")
    (tmp_path / "case0" / "dataset.json").write_text("{}")
    with pytest.raises(DatasetError, match="missing keys pad_id"):
        load_split(tmp_path / "case0")


def test_pickled_arrays_are_refused(tmp_path):
    d = tmp_path / "p"
    _write(
        d,
        np.ones((2, 3), dtype=np.int32),
        np.ones((2, 3), dtype=np.int32),
        np.zeros(2, dtype=np.int32),
        np.arange(3),
        np.arange(3),
    )
    np.save(d / "all__inputs.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="all__inputs.npy"):
        load_split(d)


def test_train_ranks_see_disjoint_slices_of_the_same_global_batches(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")
    single = list(TrainBatches(meta, sets, 32, seed=5))
    ranks = [list(TrainBatches(meta, sets, 32, rank=r, world_size=2, seed=5)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 96 // 32
    for g, a, b in zip(single, ranks[0], ranks[1], strict=True):
        assert torch.equal(torch.cat([a["inputs"], b["inputs"]]), g["inputs"])
    again = list(TrainBatches(meta, sets, 32, seed=5))
    assert all(torch.equal(x["inputs"], y["inputs"]) for x, y in zip(single, again, strict=True))
    other = list(TrainBatches(meta, sets, 32, seed=6))
    assert not all(torch.equal(x["inputs"], y["inputs"]) for x, y in zip(single, other, strict=True))


def _train_through(tb):
    """One iteration, each batch marked trained as the LightningModule marks it."""
    batches = []
    for batch in tb:
        tb.mark_trained(batch[SAMPLER_POSITION])
        batches.append(batch)
    return batches


def test_train_epochs_differ_and_resume_continues_the_order(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")
    tb = TrainBatches(meta, sets, 16, seed=0)
    epoch0, epoch1 = _train_through(tb), _train_through(tb)
    assert not torch.equal(epoch0[0]["inputs"], epoch1[0]["inputs"])
    assert [b[SAMPLER_POSITION].tolist() for b in epoch1] == [[1, i] for i in range(len(epoch1))]
    resumed = TrainBatches(meta, sets, 16, seed=0)
    resumed.load_state_dict({"epoch": 1, "position": 2, "seed": 0})
    rest = list(resumed)
    assert len(rest) == len(epoch1) - 2
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(rest, epoch1[2:], strict=True))


def test_train_packs_puzzle_examples_and_drops_the_last_partial_batch(tmp_path):
    meta, sets = _grouped(tmp_path)
    batches = list(TrainBatches(meta, sets, 4, seed=1))
    for b in batches:
        assert b["inputs"].shape == (4, 6)
        assert torch.all(b["labels"] != IGNORE_LABEL_ID)  # no padding rows in training batches
    with pytest.raises(TypeError):
        len(TrainBatches(meta, sets, 4))


def test_eval_visits_every_example_once_across_ranks(tmp_path):
    meta, sets = _grouped(tmp_path)  # 9 examples
    seen = []
    counts = []
    for rank in range(2):
        batches = list(EvalBatches(meta, sets, 4, rank=rank, world_size=2))
        counts.append(len(batches))
        for b in batches:
            real = b["example_index"] >= 0
            seen += b["example_index"][real].tolist()
            assert torch.all(b["labels"][~real] == IGNORE_LABEL_ID)
            assert torch.all(b["inputs"][~real] == meta.pad_id)
            # puzzle identifiers follow the puzzle each example belongs to
            expected_ids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1, 1])[b["example_index"][real]]
            assert torch.equal(b["puzzle_identifiers"][real].long(), expected_ids)
    assert counts[0] == counts[1] == 3
    assert sorted(seen) == list(range(9))


def test_epochs_per_iter_concatenates_passes_before_dropping_the_remainder(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")  # 96 puzzles
    one = TrainBatches(meta, sets, 40, seed=0)
    five = TrainBatches(meta, sets, 40, seed=0, epochs_per_iter=5)
    assert len(one) == 2 and len(list(one)) == 2  # 96 // 40, 16 puzzles dropped
    batches = list(five)
    assert len(five) == len(batches) == 480 // 40  # only the last partial batch of all 5 passes is dropped
    rows = torch.cat([b["inputs"] for b in batches])
    assert len({r.numpy().tobytes() for r in rows}) == 96  # every puzzle seen


def test_merged_paths_offset_identifiers_and_indices(tmp_path):
    from loopformer.data.format import load_merged

    a_meta, a_sets = _grouped(tmp_path / "a")  # 9 examples, 5 puzzles, 3 groups, 4 identifiers
    _grouped(tmp_path / "b")
    meta, sets = load_merged([tmp_path / "a" / "train", tmp_path / "b" / "train"])
    s = sets["all"]
    assert meta.num_puzzle_identifiers == 8 and meta.total_groups == 6 and meta.total_puzzles == 10
    assert s.num_examples == 18
    assert s.puzzle_identifiers.tolist() == [0, 1, 2, 3, 1, 4, 5, 6, 7, 5]
    assert s.puzzle_indices.tolist() == [0, 2, 3, 6, 7, 9, 11, 12, 15, 16, 18]
    assert s.group_indices.tolist() == [0, 2, 3, 5, 7, 8, 10]
    batches = list(EvalBatches(meta, sets, 18))
    assert batches[0]["puzzle_identifiers"].tolist()[9:] == [4, 4, 5, 6, 6, 6, 7, 5, 5]


def test_merging_paths_that_disagree_is_a_clear_error(tmp_path):
    from loopformer.data.format import load_merged

    _grouped(tmp_path / "a")
    sizes_b = np.ones((2, 6), dtype=np.int32)
    _write(tmp_path / "b" / "train", sizes_b, sizes_b, np.zeros(2, np.int32), np.arange(3), np.arange(3), vocab_size=7)
    with pytest.raises(DatasetError, match=r"b/train/dataset.json: vocab_size=7 disagrees"):
        load_merged([tmp_path / "a" / "train", tmp_path / "b" / "train"])


def test_an_iteration_continues_after_the_last_trained_batch_even_when_not_exhausted(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")
    tb = TrainBatches(meta, sets, 16, seed=0)
    it = iter(tb)
    for _ in range(len(tb)):  # Lightning stops after __len__ batches without exhausting the iterator
        last = next(it)
        tb.mark_trained(last[SAMPLER_POSITION])
    assert last[SAMPLER_POSITION].tolist() == [0, len(tb) - 1]
    assert next(iter(tb))[SAMPLER_POSITION].tolist() == [1, 0]
    # stopped early (limit_train_batches): the next iteration continues that epoch, as a resume would
    tb.mark_trained(torch.tensor([1, 2]))
    assert next(iter(tb))[SAMPLER_POSITION].tolist() == [1, 3]
    assert next(iter(tb))[SAMPLER_POSITION].tolist() == [1, 3]  # nothing trained in between: same batch


def _loader_batches(dataset, workers, mark_trained=False):
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    out = []
    for batch in loader:
        if mark_trained:
            dataset.mark_trained(batch[SAMPLER_POSITION])
        out.append(batch)
    return out


def _same(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("workers", [1, 3])
def test_loader_workers_give_the_batches_of_one_process_in_order(sudoku4_dir, workers):
    meta, sets = load_split(sudoku4_dir / "train")
    one, many = TrainBatches(meta, sets, 32, seed=0), TrainBatches(meta, sets, 32, seed=0)
    for _ in range(2):  # two epochs: the position moves on in the main process, where batches are trained
        expected = _train_through(one)
        got = _loader_batches(many, workers, mark_trained=True)
        assert _same(got, expected)
        assert many.state_dict() == one.state_dict()
    assert got[0][SAMPLER_POSITION].tolist() == [1, 0]

    test_meta, test_sets = load_split(sudoku4_dir / "test")
    for rank in range(2):
        evaluation = EvalBatches(test_meta, test_sets, 6, rank=rank, world_size=2)
        assert _same(_loader_batches(evaluation, workers), list(evaluation))


def test_a_set_smaller_than_one_global_batch_yields_nothing_and_ends(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")  # 96 puzzles
    assert list(TrainBatches(meta, sets, 128, seed=0)) == []


def test_fit_with_a_batch_larger_than_an_epoch_is_a_clear_error(sudoku4_dir):
    from loopformer.data.datamodule import PuzzleDataModule

    dm = PuzzleDataModule(str(sudoku4_dir), global_batch_size=128)
    dm.setup("validate")  # evaluation alone does not need a full training batch
    with pytest.raises(
        DatasetError, match=r"96 training groups .* does not fill one batch of data.global_batch_size=128"
    ):
        dm.setup("fit")
    PuzzleDataModule(str(sudoku4_dir), global_batch_size=128, epochs_per_iter=2).setup("fit")


def test_a_batch_that_does_not_split_over_the_ranks_names_its_setting(sudoku4_dir):
    meta, sets = load_split(sudoku4_dir / "train")
    with pytest.raises(DatasetError, match=r"^data.global_batch_size=10 is not divisible by the 4 processes \("):
        TrainBatches(meta, sets, 10, rank=0, world_size=4)
    with pytest.raises(DatasetError, match=r"^data.eval_batch_size=6 is not divisible by the 4 processes .* of 4\.$"):
        EvalBatches(meta, sets, 6, rank=1, world_size=4)
    assert EvalBatches(meta, sets, 8, rank=1, world_size=4).local_batch_size == 2
