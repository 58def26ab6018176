"""The README's commands work as written: every ``loopformer`` command in its ```bash blocks is run, in the README's
order, in a fresh directory holding configs/ and sweeps/, in a CPU-sized form (`cpu_sized`: a few steps, small
batches, 2 sweep trials, small generated datasets where the README's would be downloaded).

What is not run, and how the README says so:

- Lines that do not start with ``loopformer`` (``pip install``, ``python -m venv``, ``python -m pytest``): the install
  and test steps `.ci/run` itself performs on a fresh clone; and cluster launchers (``torchrun``, ``srun``).
- Commands a marker excludes: an HTML comment right above a block,
  ``<!-- readme-test: skip "PATTERN" (REASON) ... -->``, skips that block's commands containing PATTERN (a dataset
  that must be downloaded, a GPU, a W&B server, a checkpoint from another codebase). Every marker must match a
  command, so a stale one fails.

The placeholder ``RUN_ID`` stands for the run the commands before it wrote (the newest one with a
``checkpoints/last.ckpt``). The default suite checks the cheap part (every marker matches, every file named exists,
every Lightning command parses); the full run is slow-marked and run by `.ci/run`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from loopformer.cli.flag_scan import LIGHTNING_COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:(.*?)-->", re.S)
SKIP = re.compile(r'skip\s+"([^"]+)"\s+\(([^)]+)\)')


@dataclass
class Command:
    line: int  # in README.md, 1-based
    text: str
    skipped_because: str = ""

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)


def readme_commands(text: str) -> tuple[list[Command], list[str]]:
    """The ``loopformer`` commands of the README's bash blocks, and the markers that matched nothing."""
    commands: list[Command] = []
    unmatched: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```bash":
            i += 1
            continue
        above = "\n".join(lines[max(0, i - 3) : i])
        markers = [m for block in MARKER.findall(above) for m in SKIP.findall(block)] if "readme-test" in above else []
        block: list[Command] = []
        i += 1
        start, pending = i, ""
        while lines[i].strip() != "```":
            line = lines[i]
            pending += line.rstrip().removesuffix("\\")
            if not line.rstrip().endswith("\\"):
                code = _strip_comment(pending).strip()
                for part in (p.strip() for p in code.split("&&")):
                    if part.startswith("loopformer "):
                        block.append(Command(start + 1, part))
                pending, start = "", i + 1
            else:
                pending += " "
            i += 1
        for pattern, reason in markers:
            hits = [c for c in block if pattern in c.text]
            if not hits:
                unmatched.append(f'skip "{pattern}"')
            for c in hits:
                c.skipped_because = c.skipped_because or reason
        commands += block
    return commands, unmatched


def _strip_comment(line: str) -> str:
    """The shell line without its trailing ``# comment`` (a # inside quotes stays)."""
    quote = ""
    for j, ch in enumerate(line):
        if ch in "'\"" and (not quote or quote == ch):
            quote = "" if quote else ch
        elif ch == "#" and not quote and (j == 0 or line[j - 1].isspace()):
            return line[:j]
    return line


def cpu_sized(argv: list[str]) -> list[str]:
    """The command as the test runs it on 2 CPU cores in seconds: the same flags, then a few that shrink it."""
    if argv[1] in LIGHTNING_COMMANDS and "--print_config" not in argv:
        small = ["--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
                 "--data.eval_batch_size=8", "--trainer.enable_progress_bar=false"]  # fmt: skip
        return argv + small + (["--data.global_batch_size=8"] if argv[1] == "fit" else [])
    if argv[1:3] == ["data", "build"]:
        return argv + ["--num-train", "16", "--num-test", "8"]
    if argv[1] == "sweep" and "--offline" in argv:
        count = argv.index("--count") + 1
        argv = argv[:count] + ["2"] + argv[count + 1 :]
        small = ["--trainer.max_steps=4", "--trainer.val_check_interval=2", "--data.global_batch_size=8",
                 "--data.eval_batch_size=8", "--trainer.limit_val_batches=1"]  # fmt: skip
        if any("equal_compute" in a for a in argv):  # a budget in FLOPs sets the steps: a small one (8 steps)
            small += ["--model.budget.train_flops=4.4e9", "--model.budget.eval_every_flops=2.2e9"]
        return argv + small
    return argv


def _commands() -> list[Command]:
    commands, unmatched = readme_commands(README.read_text())
    assert not unmatched, f"README markers that match no command: {unmatched}"
    return commands


def test_the_readme_has_commands_and_its_markers_match_them():
    commands = _commands()
    assert len(commands) >= 15
    assert any(c.argv[:2] == ["loopformer", "fit"] and not c.skipped_because for c in commands)
    assert all(c.skipped_because for c in commands if "--gpus" in c.text or "ENTITY/" in c.text)


def test_the_parser_finds_continuations_comments_and_markers():
    text = "\n".join([
        '<!-- readme-test: skip "needs-net" (downloads) -->', "```bash",
        "pip install -e . && loopformer fit --config a.yaml   # a comment", "loopformer data build x needs-net \\",
        "    --flag 1", "loopformer sweep s.yaml --label '#1'", "```", "```bash", "loopformer fit b", "```",
    ])  # fmt: skip
    commands, unmatched = readme_commands(text)
    assert [(c.line, c.text, c.skipped_because) for c in commands] == [
        (3, "loopformer fit --config a.yaml", ""),
        (4, "loopformer data build x needs-net      --flag 1", "downloads"),
        (6, "loopformer sweep s.yaml --label '#1'", ""),
        (9, "loopformer fit b", ""),
    ]
    assert not unmatched
    assert readme_commands(text.replace("needs-net", "gone", 1))[1] == ['skip "gone"']


def test_every_file_a_command_names_exists():
    for c in _commands():
        for arg in c.argv:
            if arg.startswith(("configs/", "sweeps/")):
                assert (ROOT / arg).is_file(), f"README.md:{c.line}: {arg} does not exist"


def test_every_lightning_command_parses(capsys):
    """The keys and config files of every fit/validate/test/predict command, the skipped ones included, are valid
    (their --print_config, in this process: no data, GPU or checkpoint needed)."""
    from loopformer.cli import LoopformerCLI

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for c in _commands():
            if c.argv[1] not in LIGHTNING_COMMANDS:
                continue
            with pytest.raises(SystemExit) as done:
                LoopformerCLI(args=[*c.argv[1:], "--print_config"])
            assert done.value.code in (0, None), f"README.md:{c.line}: {c.text}\n{capsys.readouterr().err}"
            assert "model:" in capsys.readouterr().out
    finally:
        os.chdir(cwd)


def _workspace(tmp_path: Path) -> Path:
    """A directory as a user's clone looks after the install: configs/ and sweeps/, the quickstart's data as its
    config generates it (10 s; a run checks that its data is what data.generate says), and the dataset the README
    downloads for the Sudoku-Extreme recipe, generated small (9x9 Sudoku)."""
    from loopformer.data.generators.sudoku import SudokuGenerator, build_sudoku_dataset

    work = tmp_path / "clone"
    work.mkdir()
    for name in ("configs", "sweeps"):
        (work / name).symlink_to(ROOT / name)
    quickstart = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())["data"]
    SudokuGenerator(**quickstart["generate"]).build(work / quickstart["data_paths"])
    build_sudoku_dataset(work / "data/sudoku-extreme-1k-aug-1000", n=9, clues=30, num_train=32, num_test=16, seed=0)
    return work


def _latest_run(work: Path) -> str:
    runs = sorted(work.glob("runs/loopformer/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert runs, "RUN_ID: no run with checkpoints/last.ckpt was written by the commands before it"
    return runs[-1].parent.parent.name


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    work = _workspace(tmp_path)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    ran = []
    for c in _commands():
        if c.skipped_because:
            continue
        text = c.text.replace("RUN_ID", _latest_run(work)) if "RUN_ID" in c.text else c.text
        argv = cpu_sized(shlex.split(text))
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (
            f"README.md:{c.line}: {shlex.join(argv)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, f"README.md:{c.line}: {c.text}\n{done.stderr[-3000:]}"
        ran.append(c.text)
    assert len(ran) >= 10
    assert list(work.glob("runs/loopformer/*/validate-*/config.yaml"))
    assert list(work.glob("runs/loopformer/*/predict-*/predictions.npz"))
    assert list(work.glob("runs/sweeps/quickstart_stages/*"))


def test_the_readme_quotes_the_quickstart_times_that_benchmarks_measured():
    """BENCHMARKS.md's "Quickstart times" is the one source of the README's figures: they agree within rounding."""
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    section = benchmarks.split("## Quickstart times", 1)[1].split("\n## ", 1)[0]
    rows = {
        int(m[1]): (float(m[0]), float(m[2])) for m in re.findall(r"^\| (\d+) \| (\d+) \| ([\d.]+) \|", section, re.M)
    }
    total = float(re.search(r"(\d+) s in all", section)[1])
    readme = " ".join(README.read_text().split())  # one line: the sentence wraps
    quoted = re.search(r"about ([\d.]+) minutes of training to step 1000 and about ([\d.]+) minutes in all", readme)
    assert quoted and '"Quickstart times"' in readme
    seconds_to_1000, exact_at_1000 = rows[1000]
    assert abs(float(quoted[1]) * 60 - seconds_to_1000) <= 0.25 * seconds_to_1000
    assert abs(float(quoted[2]) * 60 - total) <= 0.25 * total
    assert exact_at_1000 >= 0.90 and "`val/exact_accuracy` >= 0.90 on the held-out puzzles by step 1000" in readme
