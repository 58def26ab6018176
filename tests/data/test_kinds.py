"""Dataset kinds are declared, not guessed: each builder writes its kind and token names into dataset.json, the
builders register their own `data build` commands, and a dataset from before the fields is read with one notice."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from loopformer.data import registry
from loopformer.data.cli import main as data_main
from loopformer.data.format import PuzzleDatasetMetadata
from loopformer.data.generators.maze import build_maze_dataset
from loopformer.data.generators.sudoku import build_sudoku_dataset
from loopformer.data.kinds import dataset_kind, token_names
from loopformer.data.show import show_dataset


def test_generated_datasets_declare_their_kind_and_token_names(tmp_path):
    build_sudoku_dataset(tmp_path / "sudoku", n=4, clues=6, num_train=8, num_test=4, seed=0)
    build_maze_dataset(tmp_path / "maze", side=7, num_train=4, num_test=2, seed=0)
    sudoku = json.loads((tmp_path / "sudoku" / "train" / "dataset.json").read_text())
    maze = json.loads((tmp_path / "maze" / "test" / "dataset.json").read_text())
    assert sudoku["kind"] == "sudoku" and sudoku["token_names"] == ["<pad>", ".", "1", "2", "3", "4"]
    assert maze["kind"] == "maze" and maze["token_names"] == ["<pad>", "#", " ", "S", "G", "o"]


def test_a_dataset_without_a_kind_is_inferred_once_with_a_notice(tmp_path, caplog):
    build_sudoku_dataset(tmp_path / "old", n=4, clues=6, num_train=8, num_test=4, seed=0)
    for split in ("train", "test"):  # as loopformer wrote it before kinds were declared
        path = tmp_path / "old" / split / "dataset.json"
        fields = json.loads(path.read_text())
        del fields["kind"], fields["token_names"]
        path.write_text(json.dumps(fields))
    with caplog.at_level(logging.WARNING, logger="loopformer.data"):
        text = show_dataset(tmp_path / "old", n=1, split="test")
        show_dataset(tmp_path / "old", n=1, split="test")
    notices = [r.getMessage() for r in caplog.records if "declares no kind" in r.getMessage()]
    assert len(notices) == 1 and "read as sudoku" in notices[0] and str(tmp_path / "old") in notices[0]
    assert "|" in text  # drawn as a Sudoku board, boxes and all


def test_a_declared_kind_wins_over_what_the_sizes_suggest():
    meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=6, seq_len=16,
                                 num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1.0)  # fmt: skip
    assert dataset_kind(meta) == "sudoku" and token_names(meta) == ["<pad>", ".", "1", "2", "3", "4"]
    meta.kind, meta.token_names = "grid", ["<pad>", "a", "b", "c", "d", "e"]
    assert dataset_kind(meta) == "grid" and token_names(meta) == ["<pad>", "a", "b", "c", "d", "e"]


def test_every_builder_registers_its_command_and_a_new_one_needs_no_other_file(tmp_path, capsys, monkeypatch):
    assert set(registry.dataset_commands()) == {"sudoku", "sudoku-gen", "maze", "maze-gen", "arc"}

    def arguments(p):
        p.add_argument("out")
        p.add_argument("--size", type=int, default=3)

    built = {}

    def build(args):
        built["args"] = (args.out, args.size)
        return "toy", {"train": 1, "test": 1}

    monkeypatch.setattr(registry, "_COMMANDS", dict(registry._COMMANDS))  # registered for this test only
    registry.register(registry.DatasetCommand("toy", "a toy dataset", arguments, build))
    assert data_main(["build", "toy", str(tmp_path / "toy"), "--size", "5"]) == 0
    building, size = built["args"]  # built beside the output, moved there when complete
    assert Path(building).parent == tmp_path and Path(building).name.startswith(".toy.building-") and size == 5
    assert (tmp_path / "toy").is_dir() and not Path(building).exists()
    assert capsys.readouterr().out.strip() == "toy -> train: 1, test: 1"
    with pytest.raises(ValueError, match="two dataset commands are named 'toy'"):
        registry.register(registry.DatasetCommand("toy", "another", arguments, build))


def test_a_config_generates_mazes_as_well_as_sudoku(tmp_path, capsys):
    """data.generate takes any generator's config (its fields pick the kind): here mazes, into a new directory."""
    from loopformer.cli import LoopformerCLI

    root = Path(__file__).resolve().parents[2]
    cli = LoopformerCLI(args=[
        "fit", "--config", str(root / "configs/quickstart.yaml"), f"--data.data_paths={tmp_path / 'mazes'}",
        "--data.generate=null", "--data.generate", "{side: 7, num_train: 40, num_test: 8, seed: 3}",
        "--data.global_batch_size=8", "--data.eval_batch_size=8", "--trainer.fast_dev_run=true",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
    ])  # fmt: skip
    meta = json.loads((tmp_path / "mazes" / "train" / "dataset.json").read_text())
    assert meta["kind"] == "maze" and meta["seq_len"] == 49
    assert cli.model.net.config.vocab_size == 6 and cli.trainer.global_step == 1


def test_the_terminal_draws_arc_colours_as_their_digits_and_every_cell_one_character_wide():
    from loopformer.data.show import to_text

    # an ARC canvas: colours c as tokens c + 2, the end-of-grid marker 1 below and right of the grid, padding 0
    canvas = [[2, 9, 10, 11], [3, 4, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert to_text(np.array(canvas).ravel(), "arc") == "0789\n12+ \n++  \n    "
    # a grid of another kind: token ids, 10 and above as letters (they were all drawn as 9)
    assert to_text(np.array([0, 9, 10, 35]), "grid") == " 9\nAZ"
