"""data.generate builds a dataset only where the user can tell that is what they asked for."""

from pathlib import Path

import pytest

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
