"""data.generate builds a dataset only where the user can tell that is what they asked for."""

import json
from pathlib import Path

import pytest
import yaml

from loopformer.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs/quickstart.yaml")
SMALL = ["--data.generate.num_train=64", "--data.generate.num_test=16", "--data.global_batch_size=16"]
RUN = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.logger=false"]


def test_a_data_path_typed_on_the_command_line_is_not_generated_silently(tmp_path, capsys):
    typo = tmp_path / "sudoku4-minimall"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", QUICKSTART, f"--data.data_paths={typo}", *RUN])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"loopformer: error: --data.data_paths {typo} holds no dataset")
    assert "pass a --data.generate flag" in err and err.count("\n") == 1
    assert not typo.exists()  # nothing written


def test_asking_for_generation_on_the_command_line_builds_there_and_says_where(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", QUICKSTART, "--data.data_paths=rel/data", *SMALL, *RUN, "--trainer.default_root_dir=."]
    with caplog.at_level("INFO"):
        main(args)
    assert (tmp_path / "rel/data/train/dataset.json").is_file()
    assert f"into {tmp_path / 'rel/data'} ..." in caplog.text  # the absolute path


def test_never_generates_into_a_directory_that_holds_other_files(tmp_path, capsys):
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", QUICKSTART, f"--data.data_paths={occupied}", *SMALL, *RUN])
    assert e.value.code == 2
    assert f"data.data_paths {occupied} exists and is not a dataset" in capsys.readouterr().err
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]


def _generate_args(data, root, *extra):
    return ["fit", "--config", QUICKSTART, f"--data.data_paths={data}", *SMALL, *RUN, f"--trainer.default_root_dir={root}",
            *extra]  # fmt: skip


def test_a_dataset_generated_otherwise_is_not_trained_on_under_other_settings(tmp_path, capsys):
    data = tmp_path / "data"
    main(_generate_args(data, tmp_path / "first"))
    record = json.loads((data / "generator.json").read_text())
    assert record == {"kind": "sudoku", "settings": {"n": 4, "clues": 4, "num_train": 64, "num_test": 16, "seed": 0}}
    main(_generate_args(data, tmp_path / "again"))  # the same settings: trained on as it is
    capsys.readouterr()
    for flag, there in (("--data.generate.clues=5", "clues=4"), ("--data.generate.seed=3", "seed=0")):
        with pytest.raises(SystemExit) as e:
            main(_generate_args(data, tmp_path / "other", flag))
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("loopformer: error: data.generate asks for sudoku with n=4, ") and err.count("\n") == 1
        assert f"but {data} holds a dataset generated otherwise ({there} there)" in err
        assert "--data.generate=null" in err
    assert not (tmp_path / "other").exists()
    # the way out it names: the data as it is, with data.generate null in the run's config
    main(_generate_args(data, tmp_path / "as_it_is", "--data.generate.clues=5", "--data.generate=null"))
    assert "  generate: null\n" in (tmp_path / "as_it_is/config.yaml").read_text()


def test_a_dataset_generated_before_the_settings_were_recorded_is_checked_by_its_metadata(tmp_path, capsys):
    from loopformer.data.generators.sudoku import build_sudoku_dataset

    data = tmp_path / "old"
    build_sudoku_dataset(data, n=4, clues=4, num_train=64, num_test=16, seed=0)  # no generator.json
    main(_generate_args(data, tmp_path / "first"))  # what the metadata says agrees
    capsys.readouterr()
    for flags, there in ((["--data.generate.n=6", "--data.generate.clues=12"], "sequence length 16"),
                         (["--data.generate.num_train=65"], "training puzzles 64")):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(_generate_args(data, tmp_path / "other", *flags))
        assert e.value.code == 2
        assert f"holds a dataset generated otherwise ({there} there)" in capsys.readouterr().err


def test_data_build_records_what_data_generate_would_ask_for(tmp_path, capsys):
    data = tmp_path / "maze"
    with pytest.raises(SystemExit) as e:
        main(["data", "build", "maze-gen", str(data), "--side", "5", "--num-train", "8", "--num-test", "4", "--aug"])
    assert e.value.code == 0
    record = json.loads((data / "generator.json").read_text())
    assert record == {"kind": "maze", "settings": {"side": 5, "num_train": 8, "num_test": 4, "aug": True, "seed": 0}}
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the quickstart's Sudoku settings, asked for on the command line
        main(_generate_args(data, tmp_path / "run", "--data.generate.seed=0"))
    assert f"but {data} holds a dataset generated otherwise (kind maze there)" in capsys.readouterr().err


def test_a_data_path_typed_without_a_generate_flag_is_used_as_it_is(tmp_path):
    from loopformer.data.generators.maze import build_maze_dataset

    mazes = tmp_path / "mazes"
    build_maze_dataset(mazes, side=5, num_train=16, num_test=4)
    # the quickstart config's data.generate (4x4 Sudoku) describes the config's data path, not this one
    main(["fit", "--config", QUICKSTART, f"--data.data_paths={mazes}", "--data.global_batch_size=8", *RUN,
          f"--trainer.default_root_dir={tmp_path / 'run'}"])  # fmt: skip
    assert "  generate: null\n" in (tmp_path / "run/config.yaml").read_text()


def test_runs_starting_together_generate_the_dataset_once(tmp_path, caplog):
    """Sweep trials that start together on one data path: the second waits for the first's dataset and uses it (it
    used to build its own copy and fail renaming it over the first's)."""
    import fcntl
    import os
    import threading

    from loopformer.data.datamodule import PuzzleDataModule
    from loopformer.data.generators.sudoku import SudokuGenerator

    data = tmp_path / "sudoku"
    generator = SudokuGenerator(n=4, clues=4, num_train=32, num_test=8)
    stale = tmp_path / ".sudoku.building-killed"  # left by a generation that was killed a while ago
    stale.mkdir()
    os.utime(stale, (0, 0))
    lock = os.open(tmp_path / ".sudoku.generate.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the first run, generating
    failures = []

    def second_run():
        try:
            PuzzleDataModule(str(data), global_batch_size=8, generate=generator).prepare_data()
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            failures.append(e)

    with caplog.at_level("INFO"):
        waiting = threading.Thread(target=second_run)
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive()  # it waits for the lock
        generator.build(data)  # the first run's dataset appears
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        waiting.join(timeout=30)
    assert not waiting.is_alive() and failures == []
    assert f"Waiting for another run generating {data}" in caplog.text
    assert f"{data}: generated by another run meanwhile; this run uses it." in caplog.text
    assert "Generating" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sudoku"]  # no stale copy, no lock file left


def test_a_data_build_removes_what_a_killed_build_left_and_leaves_one_under_way(tmp_path):
    """A killed `data build` left its hidden directory beside the output (a generation already removed those)."""
    import fcntl
    import os

    from loopformer.data.cli import main as data_main

    killed, under_way, just_made = (tmp_path / f".sudoku.building-{name}" for name in ("killed", "running", "new"))
    for directory in (killed, under_way, just_made):
        directory.mkdir()
        (directory / "train").mkdir()
    for directory in (killed, under_way):
        os.utime(directory, (0, 0))
    holder = os.open(under_way, os.O_RDONLY)  # as the build writing there holds it
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert data_main(["build", "sudoku-gen", str(tmp_path / "sudoku"), "--num-train", "8", "--num-test", "4"]) == 0
    finally:
        os.close(holder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([under_way.name, just_made.name, "sudoku"])


def test_data_build_replaces_a_dataset_only_when_asked_and_never_other_files(tmp_path, capsys):
    import numpy as np

    from loopformer.data.cli import main as data_main

    out = tmp_path / "sudoku"
    build = ["build", "sudoku-gen", str(out), "--num-train", "8", "--num-test", "4"]
    assert data_main(build) == 0
    first = (out / "train/all__inputs.npy").read_bytes()
    capsys.readouterr()
    assert data_main(build) == 2  # it used to write over it without a word
    assert f"error: {out} already holds a dataset; pass --overwrite to replace it" in capsys.readouterr().err
    assert data_main([*build, "--size", "7", "--overwrite"]) == 2  # a build that fails replaces nothing
    assert (out / "train/all__inputs.npy").read_bytes() == first
    assert data_main([*build, "--num-train", "5", "--overwrite"]) == 0
    assert np.load(out / "train/all__inputs.npy").shape == (5, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sudoku"]  # no half-built or replaced copy left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert data_main(["build", "maze-gen", str(mine), "--side", "5", "--overwrite"]) == 2
    assert f"error: {mine} exists and is not a dataset directory" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_data_build_into_the_working_directory_or_through_a_link_keeps_that_directory(tmp_path, monkeypatch):
    import os

    from loopformer.data.cli import main as data_main

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # an empty working directory (or a mount point): filled, not replaced by another
    assert data_main(["build", "sudoku-gen", ".", "--num-train", "8", "--num-test", "4"]) == 0
    assert data_main(["build", "sudoku-gen", ".", "--num-train", "6", "--num-test", "4", "--overwrite"]) == 0
    assert os.path.samefile(os.getcwd(), here) and (here / "train/dataset.json").is_file()
    link = tmp_path / "link"
    link.symlink_to(here)
    assert data_main(["build", "sudoku-gen", str(link), "--num-train", "5", "--num-test", "4", "--overwrite"]) == 0
    assert link.is_symlink() and json.loads((here / "generator.json").read_text())["settings"]["num_train"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "link"]


def _printed_generate(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(["fit", *args, "--print_config"])
    assert e.value.code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)["data"]["generate"]


def test_settings_of_another_kind_pick_that_kind_over_the_files_before(tmp_path, capsys):
    """A maze config file over the quickstart's Sudoku settings (or a mapping flag) generates mazes: its fields pick
    the kind, as in a file of its own (jsonargparse merged it into the Sudoku settings and rejected both kinds)."""
    maze = tmp_path / "maze.yaml"
    maze.write_text("data:\n  data_paths: data/maze9\n  generate: {side: 9, num_train: 500}\n")
    expected = {"side": 9, "num_train": 500, "num_test": 200, "aug": False, "seed": 0}
    assert _printed_generate(capsys, "--config", QUICKSTART, "--config", str(maze)) == expected
    assert _printed_generate(capsys, "--config", QUICKSTART, "--data.generate={side: 9, num_train: 500}") == expected
    assert _printed_generate(capsys, "--config", QUICKSTART, "--data={generate: {side: 9, num_train: 500}}") == expected
    # back again, and settings of the same kind still merge into the ones before
    sudoku = {"n": 4, "clues": 4, "num_train": 20000, "num_test": 1000, "seed": 0}
    assert _printed_generate(capsys, "--config", str(maze), "--config", QUICKSTART) == sudoku
    assert _printed_generate(capsys, "--config", QUICKSTART, "--data.generate={clues: 5}") == {**sudoku, "clues": 5}
    assert _printed_generate(capsys, "--config", str(maze), "--data.generate={seed: 3}") == {**expected, "seed": 3}
