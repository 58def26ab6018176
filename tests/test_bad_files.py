"""Every file the package reads, handed a text file, an empty file, a truncated valid file or random bytes, stops
with one line naming the file (its reader's error class, exit 2 from the command), never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from loopformer.checkpoint.format import CheckpointFileError, load_checkpoint
from loopformer.checkpoint.importer import CheckpointImportError, import_checkpoint
from loopformer.cli.config_files import EXPECTED_BY_FLAG, migrate_old_settings
from loopformer.data.builders.arc import load_arc_subset
from loopformer.data.builders.maze import read_maze_csv
from loopformer.data.builders.sudoku import read_sudoku_csv
from loopformer.data.format import DatasetError, PuzzleDatasetMetadata, load_split
from loopformer.errors import ConfigError
from loopformer.sweep.spec import SweepFileError, load_sweep
from loopformer.sweep.state import load_state

ROOT = Path(__file__).resolve().parents[1]
TRM_ARCH = {"H_cycles": 2, "L_cycles": 2, "L_layers": 1, "hidden_size": 32, "num_heads": 2, "expansion": 2.0}


def _checkpoint(path: Path) -> None:
    torch.save({"state_dict": {"net.w": torch.ones(3)}, "hyper_parameters": {}, "global_step": 1}, path)


def _state_dict(path: Path) -> None:
    torch.save({"_orig_mod.model.inner.lm_head.weight": torch.ones(4, 32)}, path)


def _arch(path: Path) -> None:
    path.write_text(yaml.safe_dump({"arch": TRM_ARCH}))


def _dataset_json(path: Path) -> None:
    meta = {"seq_len": 16, "vocab_size": 6, "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0}
    meta |= {"num_puzzle_identifiers": 1, "total_groups": 1, "mean_puzzle_examples": 1.0, "sets": ["all"]}
    path.write_text(json.dumps(meta))


def _sweep(path: Path) -> None:
    path.write_text((ROOT / "sweeps/quickstart_stages.yaml").read_text())


def _state(path: Path) -> None:
    path.write_text('{"sweep": "s.yaml", "trials": [{"name": "trial-000", "config": {}, "state": "finished"}]}')


def _sudoku_csv(path: Path) -> None:
    path.write_text("source,question,answer,rating\n" + "".join(f"s,{'.' * 81},{'1' * 81},{i}\n" for i in range(20)))


def _maze_csv(path: Path) -> None:
    path.write_text("source,question,answer,rating\n" + "".join(f"s,{'#' * 25},{'#' * 25},0\n" for _ in range(20)))


def _arc(path: Path) -> None:
    path.write_text('{"t1": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}}' * 1)


def _npy(path: Path) -> None:
    with open(path, "wb") as f:  # np.save would add a .npy suffix to the name
        np.save(f, np.arange(1000, dtype=np.int32))


def _read_npy(path: Path) -> None:
    split = path.parent / "split"
    split.mkdir(exist_ok=True)
    meta = {"seq_len": 1, "vocab_size": 2, "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0}
    meta |= {"num_puzzle_identifiers": 1, "total_groups": 1, "mean_puzzle_examples": 1.0, "sets": ["all"]}
    (split / "dataset.json").write_text(json.dumps(meta))
    for key in ("labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
        np.save(split / f"all__{key}.npy", np.zeros(2, dtype=np.int32))
    os.replace(path, split / "all__inputs.npy")
    load_split(split)


def _import_src(path: Path) -> None:
    arch = path.parent / "arch.yaml"
    _arch(arch)
    import_checkpoint("trm", path, arch, path.parent / "out.ckpt", seq_len=16)


def _import_arch(path: Path) -> None:
    src = path.parent / "weights.pt"
    _state_dict(src)
    import_checkpoint("trm", src, path, path.parent / "out.ckpt", seq_len=16)


def _cli_config(path: Path) -> None:
    from loopformer.cli.config_files import check_config_files

    check_config_files(["fit", "--config", str(path)])


def _flow_style_copy(source: str):
    def write(path: Path) -> None:  # one line of YAML's flow style: cut anywhere, it is no longer valid
        path.write_text(json.dumps(yaml.safe_load((ROOT / source).read_text())))

    return write


def _cli_file_flag(flag: str):
    def read(path: Path) -> None:  # the migration reads files whose names end in .yaml
        named = path.rename(path.with_suffix(".yaml"))
        migrate_old_settings(["fit", f"--{flag}", str(named)])

    return read


def _arc_subset(path: Path) -> None:
    os.replace(path, path.parent / "arc_training_challenges.json")
    load_arc_subset(str(path.parent / "arc"), "training")


READERS = {  # name: (write a valid file, read it, the error it raises, the name the error gives the file)
    "checkpoint": (_checkpoint, load_checkpoint, CheckpointFileError, None),
    "state dict (import-checkpoint SRC)": (_state_dict, _import_src, CheckpointImportError, None),
    "arch YAML (import-checkpoint --arch)": (_arch, _import_arch, CheckpointImportError, None),
    "config (--config)": (_flow_style_copy("configs/quickstart.yaml"), _cli_config, ConfigError, None),
    "model file (--model)": (
        _flow_style_copy("configs/vrn/loop_transformer.yaml"),
        _cli_file_flag("model"),
        ConfigError,
        None,
    ),
    "arch file (--model.arch)": (
        _flow_style_copy("configs/arch/trm_hier6.yaml"),
        _cli_file_flag("model.arch"),
        ConfigError,
        None,
    ),
    "dataset.json": (_dataset_json, PuzzleDatasetMetadata.load, DatasetError, None),
    "dataset array (.npy)": (_npy, _read_npy, DatasetError, "all__inputs.npy"),
    "sweep file": (_sweep, load_sweep, SweepFileError, None),
    "offline sweep state": (_state, load_state, SweepFileError, None),
    "Sudoku-Extreme CSV": (_sudoku_csv, read_sudoku_csv, DatasetError, None),
    "Maze-Hard CSV": (_maze_csv, read_maze_csv, DatasetError, None),
    "ARC challenges JSON": (_arc, _arc_subset, DatasetError, "arc_training_challenges.json"),
}
KINDS = ("text", "empty", "truncated", "random")


def _bad_file(path: Path, kind: str, write_valid) -> None:
    if kind == "text":
        path.write_text("hello, this is not the file you are looking for\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    else:
        write_valid(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_names_the_file_in_one_line(reader, kind, tmp_path):
    write_valid, read, error, shown_name = READERS[reader]
    path = tmp_path / "file"
    _bad_file(path, kind, write_valid)
    with pytest.raises(error) as info:
        read(path)
    message = str(info.value)
    assert (shown_name or str(path)) in message, message
    assert "\n" not in message and "Traceback" not in message


def test_the_valid_files_of_the_table_are_read(tmp_path):
    """The table's files are valid before they are truncated: their readers accept them."""
    for name, (write_valid, read, _, _) in READERS.items():
        if name in (
            "dataset array (.npy)",
            "state dict (import-checkpoint SRC)",
            "arch YAML (import-checkpoint --arch)",
        ):
            continue  # read as part of a larger whole (a dataset split, an import)
        folder = tmp_path / name.split()[0]
        folder.mkdir()
        write_valid(folder / "file")
        read(folder / "file")


@pytest.fixture
def run_command(capsys, monkeypatch):
    """``run_command(*args, cwd=..., process=False)``: the command's exit code and its stderr, run in this process
    (seconds faster) or, with process=True, as its own process (what a user sees, import-time noise included)."""

    def run(*args, cwd, process=False):
        if process:
            env = {**os.environ, "WANDB_MODE": "disabled"}
            done = subprocess.run([sys.executable, "-m", "loopformer.cli", *args], capture_output=True, text=True,
                                  env=env, cwd=cwd, timeout=300)  # fmt: skip
            return done.returncode, done.stderr
        from loopformer.cli import main

        monkeypatch.setenv("WANDB_MODE", "disabled")
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        return done.value.code, capsys.readouterr().err

    return run


@pytest.mark.parametrize("case", ["text", "truncated"])
@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_a_bad_ckpt_path_is_one_line_and_exit_2(sudoku4_dir, tmp_path, case, subcommand, run_command):
    ckpt = tmp_path / "model.ckpt"
    if case == "text":
        ckpt.write_text("not a checkpoint\n")
    else:
        _checkpoint(ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    code, stderr = run_command(
        subcommand, "--config", str(ROOT / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
        f"--ckpt_path={ckpt}", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path,
        process=(subcommand, case) == ("fit", "text"),
    )  # fmt: skip
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"loopformer: error: {ckpt}: cannot be read as a loopformer checkpoint"
    )
    expected = "not a PyTorch file" if case == "text" else "a truncated or damaged zip archive"
    assert expected in lines[0]
    assert not list(tmp_path.glob("**/checkpoints"))  # nothing written


@pytest.mark.parametrize("bad", ["arch", "src"])
def test_import_checkpoint_with_binary_files_is_one_line_and_exit_2(tmp_path, bad, run_command):
    arch, src = tmp_path / "arch.yaml", tmp_path / "weights.pt"
    _arch(arch)
    _state_dict(src)
    (arch if bad == "arch" else src).write_bytes(
        np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes()
    )
    code, stderr = run_command(
        "import-checkpoint", "--from", "trm", str(src), "--arch", str(arch), str(tmp_path / "out.ckpt"), cwd=tmp_path,
        process=bad == "src",
    )  # fmt: skip
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"loopformer import-checkpoint: error: {arch if bad == 'arch' else src}: ")
    assert "weights_only" not in stderr and "Re-running" not in stderr  # no advice to unpickle it
    assert not (tmp_path / "out.ckpt").exists()


def test_a_config_file_is_parsed_once_at_start_up_and_each_reader_gets_its_own_copy(tmp_path, monkeypatch):
    """However its path is spelt (check_config_files gets it as typed, the migration as a Path)."""
    from loopformer.cli import config_files as command

    path = tmp_path / "run.yaml"
    path.write_text("data:\n  global_batch_size: 8\nmodel:\n  arch:\n    hidden_size: 32\n")
    parsed = []
    monkeypatch.setattr(command, "load_yaml", lambda p, *a: parsed.append(p) or yaml.safe_load(Path(p).read_text()))
    args = ["validate", "--config", str(path)]
    command.check_config_files(args)
    assert command.migrate_old_settings(args) == args  # nothing old in it: passed on as its path
    assert command.data_given(args, "validate")
    assert parsed == [str(path)]
    first = command.read_config_file(path)
    first["data"]["global_batch_size"] = 1
    assert command.read_config_file(path)["data"]["global_batch_size"] == 8 and len(parsed) == 1
    assert command.read_config_file(f"{tmp_path}/./run.yaml") == command.read_config_file(path) and len(parsed) == 1
    path.write_text("data:\n  global_batch_size: 16\n")  # changed (size and time): read again
    assert command.read_config_file(path) == {"data": {"global_batch_size": 16}} and len(parsed) == 2


@pytest.mark.parametrize("flag", ["config", "model", "model.arch"])
@pytest.mark.parametrize("content", ["- 1\n- 2\n", "stages: [1\n"])
def test_a_config_file_that_is_no_mapping_says_what_its_flag_expects(tmp_path, flag, content, run_command):
    path = tmp_path / "settings.yaml"
    path.write_text(content)
    config = [] if flag == "config" else ["--config", str(ROOT / "configs/quickstart.yaml")]
    code, stderr = run_command(
        "fit", *config, f"--{flag}", str(path), "--trainer.logger=false", cwd=tmp_path,
        process=(flag, content) == ("model", "- 1\n- 2\n"),
    )  # fmt: skip
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    found = "holds a list" if content.startswith("-") else "not valid YAML"
    assert lines[0].startswith(f"loopformer: error: {path}: {found}"), lines[0]
    assert lines[0].endswith(f"expected {EXPECTED_BY_FLAG[flag]}."), lines[0]
