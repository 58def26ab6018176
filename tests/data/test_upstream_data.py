"""Opt-in (tests/upstream_code.py says how): TRM's dataset scripts and ARC evaluator against loopformer's.

TRM's Sudoku and maze scripts (``dataset/build_*_dataset.py``: their ``convert_subset``, the CSV read from disk in
place of the Hugging Face download) write the same arrays and metadata as loopformer's builders, its ARC script the
same puzzles; TRM's ``evaluators/arc.py`` and loopformer's voting give the same pass@k and submission on the same
predictions.
"""

from __future__ import annotations

import importlib
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.upstream_code import checkout, their_code


def _sudoku_csvs(src: Path) -> None:
    from loopformer.data.generators.sudoku import generate_sudoku

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        rows = ["source,question,answer,rating"]
        for i in range(n):
            q, a = generate_sudoku(9, 30, rng)
            rows.append(f"s{i},{''.join('.' if d == 0 else str(d) for d in q)},{''.join(map(str, a))},{i}")
        (src / f"{split}.csv").write_text("\n".join(rows) + "\n")


def _maze_csvs(src: Path) -> None:
    from loopformer.data.common import CHARSET
    from loopformer.data.generators.maze import generate_maze

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        rows = ["source,question,answer,rating"]
        for i in range(n):
            grids = generate_maze(7, rng)
            rows.append(f"s{i}," + ",".join("".join(CHARSET[t - 1] for t in g.ravel()) for g in grids) + ",0")
        (src / f"{split}.csv").write_text("\n".join(rows) + "\n")


BUILDERS = [  # (their script, its settings, our builder's arguments, the CSV writer)
    ("build_sudoku_dataset", {}, {}, _sudoku_csvs),
    ("build_sudoku_dataset", {"min_difficulty": 2}, {"min_difficulty": 2}, _sudoku_csvs),
    ("build_maze_dataset", {}, {}, _maze_csvs),
    ("build_maze_dataset", {"aug": True}, {"aug": True}, _maze_csvs),
]


@pytest.mark.parametrize("script,theirs,ours,write_csvs", BUILDERS, ids=["sudoku", "sudoku-min", "maze", "maze-aug"])
def test_the_dataset_builders_write_what_trms_write(script, theirs, ours, write_csvs, tmp_path):
    """TRM's dataset scripts (``dataset/build_*_dataset.py``) on the same CSV files, read from disk in place of the
    Hugging Face download."""
    from loopformer.data.builders.maze import build_maze_from_csv
    from loopformer.data.builders.sudoku import build_sudoku_from_csv

    repo = checkout("trm")
    src = tmp_path / "csv"
    src.mkdir()
    write_csvs(src)
    hub = types.ModuleType("huggingface_hub")
    hub.hf_hub_download = lambda repo_id, filename, repo_type=None: str(src / filename)
    with their_code(repo / "dataset", huggingface_hub=hub):
        builder = importlib.import_module(script)
        config = builder.DataProcessConfig(source_repo="local", output_dir=str(tmp_path / "theirs"), **theirs)
        for split in ("train", "test"):
            builder.convert_subset(split, config)
    build = build_sudoku_from_csv if "sudoku" in script else build_maze_from_csv
    build(str(src), tmp_path / "ours", **ours)
    for split in ("train", "test"):
        their_meta = json.loads((tmp_path / "theirs" / split / "dataset.json").read_text())
        our_meta = json.loads((tmp_path / "ours" / split / "dataset.json").read_text())
        if theirs.get("aug") and split == "train":
            # TRM writes total_puzzles = its groups even where each group holds 8 puzzles (the dihedral copies);
            # loopformer writes the puzzles, as its merge of several datasets counts them
            assert (their_meta.pop("total_puzzles"), our_meta["total_puzzles"]) == (3, 24)
        assert {k: our_meta[k] for k in their_meta} == their_meta
        for path in sorted((tmp_path / "theirs" / split).glob("*.npy")):
            expected, got = np.load(path), np.load(tmp_path / "ours" / split / path.name)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), (split, path.name)
    assert np.load(tmp_path / "ours" / "train" / "all__inputs.npy").shape[0] >= 3  # something was compared


def test_arc_voting_scores_and_submits_as_trms_evaluator(tmp_path):
    """TRM's ``evaluators/arc.py`` and loopformer's ARC voting on the same predictions of a small augmented ARC
    build: pass@k and submission.json. Predictions are the labels or the labels with one cell changed, so that
    candidates split the votes."""
    from loopformer.data.format import load_split
    from loopformer.evaluation.arc import ARCCollector, ARCSet
    from tests.data.test_arc import _tiny_arc_build

    repo = checkout("trm")
    data, _ = _tiny_arc_build(tmp_path, seed=4, num_aug=3)
    meta, sets = load_split(data / "test")
    examples = sets["all"]
    puzzle_of_example = np.repeat(np.arange(examples.puzzle_identifiers.size), np.diff(examples.puzzle_indices))
    ids = examples.puzzle_identifiers[puzzle_of_example].astype(np.int32)
    inputs, preds = np.array(examples.inputs), np.array(examples.labels)
    rng = np.random.default_rng(0)
    for row in np.flatnonzero(rng.random(len(preds)) < 0.5):  # one cell of the grid to another colour
        cell = rng.choice(np.flatnonzero(preds[row] >= 2))
        preds[row, cell] = (preds[row, cell] - 2 + 1) % 10 + 2
    q_halt = rng.normal(size=len(preds)).astype(np.float32)
    ks = (1, 2, 5)

    ours = ARCCollector([ARCSet("arc", json.loads((data / "identifiers.json").read_text()),
                                json.loads((data / "test_puzzles.json").read_text()))], ks=ks)  # fmt: skip
    ours.add(ids, inputs, preds, q_halt)
    metrics, submissions = ours.compute()

    with their_code(repo):
        arc = importlib.import_module("evaluators.arc")
        arc.dist = types.SimpleNamespace(gather_object=lambda obj, out, dst, group: out.__setitem__(0, obj))
        theirs = arc.ARC(str(data), meta, pass_Ks=ks)
        theirs.update_batch(
            {"inputs": torch.from_numpy(inputs), "puzzle_identifiers": torch.from_numpy(ids)},
            {"preds": torch.from_numpy(preds), "q_halt_logits": torch.from_numpy(q_halt)},
        )
        their_metrics = theirs.result(str(tmp_path), rank=0, world_size=1)
    assert {k: metrics[f"arc/pass@{k}"] for k in ks} == {k: their_metrics[f"ARC/pass@{k}"] for k in ks}
    assert 0 < metrics["arc/pass@1"] < metrics["arc/pass@5"] <= 1
    assert submissions["arc"] == json.loads((tmp_path / "submission.json").read_text())


def _examples_by_puzzle(split_dir: Path, identifiers: list[str]) -> dict[str, list[tuple[bytes, bytes]]]:
    """Each puzzle's examples as (input grid, output grid), wherever on the 30x30 canvas they were placed."""
    from loopformer.data.format import load_split

    def grid(canvas: np.ndarray) -> bytes:
        canvas = canvas.reshape(30, 30)
        rows, cols = np.flatnonzero((canvas >= 2).any(1)), np.flatnonzero((canvas >= 2).any(0))
        cropped = canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] - 2
        return bytes(cropped.shape) + cropped.astype(np.uint8).tobytes()

    _, sets = load_split(split_dir)
    s = sets["all"]
    out: dict[str, list] = {}
    for p, ident in enumerate(s.puzzle_identifiers):
        rows = range(s.puzzle_indices[p], s.puzzle_indices[p + 1])
        out[identifiers[ident]] = sorted((grid(np.asarray(s.inputs[r])), grid(np.asarray(s.labels[r]))) for r in rows)
    return out


def test_the_arc_builder_writes_the_puzzles_trms_writes(tmp_path):
    """TRM's ``dataset/build_arc_dataset.py`` and loopformer's ARC builder without augmentation: the same puzzles
    with the same examples in each split (theirs and ours draw the order and the translations from different random
    streams, so those are compared as sets), the same identifiers, test puzzles and metadata."""
    from tests.data.test_arc import _tiny_arc_build

    repo = checkout("trm")
    ours_dir, _ = _tiny_arc_build(tmp_path, seed=5, num_aug=0)
    with their_code(repo):
        builder = importlib.import_module("dataset.build_arc_dataset")
        config = builder.DataProcessConfig(input_file_prefix=str(tmp_path / "arc-agi"), output_dir=str(tmp_path / "theirs"),
                                           subsets=["training", "evaluation"], test_set_name="evaluation", num_aug=0)  # fmt: skip
        builder.convert_dataset(config)
    theirs_dir = tmp_path / "theirs"
    their_ids = json.loads((theirs_dir / "identifiers.json").read_text())
    our_ids = json.loads((ours_dir / "identifiers.json").read_text())
    assert sorted(their_ids) == sorted(our_ids) and their_ids[0] == our_ids[0] == "<blank>"
    assert json.loads((theirs_dir / "test_puzzles.json").read_text()) == json.loads(
        (ours_dir / "test_puzzles.json").read_text()
    )
    for split in ("train", "test"):
        theirs = _examples_by_puzzle(theirs_dir / split, their_ids)
        assert theirs == _examples_by_puzzle(ours_dir / split, our_ids) and theirs, split
        their_meta = json.loads((theirs_dir / split / "dataset.json").read_text())
        our_meta = json.loads((ours_dir / split / "dataset.json").read_text())
        assert {k: our_meta[k] for k in their_meta} == their_meta, split
