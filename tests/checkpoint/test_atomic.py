"""Crash consistency of the one atomic writer, by fault injection: a child process killed at each point inside a
write, and at random moments of a loop of writes, with ``$TMPDIR`` on another filesystem where there is one. The
destination is always the old complete file or the new complete one."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from loopformer.checkpoint import atomic

SHM = Path("/dev/shm")


def _env(tmp_path):
    # $TMPDIR on another filesystem than the destination: where Lightning's own writer truncated checkpoints
    tmpdir = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmpdir)}


def _run_child(code, tmp_path):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(tmp_path), capture_output=True, text=True
    )


def _content(path):
    return torch.load(path, weights_only=True)["tag"]


@pytest.mark.parametrize("stage", ["written", "synced", "replaced"])
def test_a_kill_inside_a_write_leaves_the_old_or_the_new_file_and_the_next_start_removes_the_leftover(tmp_path, stage):
    dest = tmp_path / "last.ckpt"
    atomic.save_torch({"tag": "old", "w": torch.zeros(1000)}, dest)
    child = _run_child(
        f"""
        import os, signal, torch
        from loopformer.checkpoint import atomic
        def die(point, dest):
            if point == {stage!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.fault_point = die
        atomic.save_torch({{"tag": "new", "w": torch.ones(1_000_000)}}, {str(dest)!r})
        """,
        tmp_path,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert _content(dest) == ("new" if stage == "replaced" else "old")
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(atomic.PARTIAL_SUFFIX)]
    assert len(leftovers) == (0 if stage == "replaced" else 1)
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert removed == leftovers
    assert not [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    if removed:
        notice = atomic.stale_notice(removed)
        assert notice.startswith("removed 1 partial file(s) left by an interrupted write in " + str(tmp_path)), notice


def test_random_kills_during_a_loop_of_large_writes_never_leave_a_partial_destination(tmp_path):
    dest = tmp_path / "last.ckpt"
    rng = random.Random(0)
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import torch
                from loopformer.checkpoint import atomic
                k = 0
                while True:
                    k += 1
                    atomic.save_torch({{"tag": k, "w": torch.full((3_000_000,), float(k))}}, {str(dest)!r})
                """)],
            env=_env(tmp_path),
        )  # fmt: skip
        time.sleep(1.5 + rng.random())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if dest.exists():
            saved = torch.load(dest, weights_only=True)
            assert saved["w"].shape == (3_000_000,) and bool((saved["w"] == float(saved["tag"])).all())
        atomic.remove_stale_temporaries(tmp_path)
    assert dest.exists(), "no write completed in 5 runs of 1.5-2.5 s"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_write_over_the_file_size_limit_is_one_line_and_leaves_the_old_file(tmp_path):
    dest = tmp_path / "epoch=0-step=4.ckpt"
    atomic.save_torch({"tag": "old"}, dest)
    child = _run_child(
        f"""
        import resource, signal, sys, torch
        from loopformer.checkpoint import atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            atomic.save_torch({{"tag": "new", "w": torch.ones(1 << 20)}}, {str(dest)!r})
        except atomic.WriteError as e:
            print(e)
            sys.exit(3)
        """,
        tmp_path,
    )
    assert child.returncode == 3, child.stderr
    line = child.stdout.strip()
    assert "\n" not in line
    assert line.startswith(f"file size limit exceeded writing {dest} (about 4.2 MB needed, {tmp_path} has "), line
    assert "every earlier file there is intact" in line
    assert _content(dest) == "old"
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_a_full_disk_names_the_directory_what_was_needed_and_what_is_free(tmp_path, monkeypatch):
    dest = tmp_path / "results.csv"
    atomic.write_text(dest, "old")

    def full(f):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(atomic.WriteError) as error:
        atomic.write_atomically(dest, full, size_hint=5_000_000)
    message = str(error.value)
    assert message.startswith(f"no space left on device writing {dest} (about 5.0 MB needed, {tmp_path} has ")
    assert " MB free)" in message and "\n" not in message
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_a_temporary_file_of_a_live_writer_is_kept(tmp_path):
    live = tmp_path / f".x.ckpt.{atomic._writer_tag()}.abc{atomic.PARTIAL_SUFFIX}"
    live.write_bytes(b"in progress")
    foreign = tmp_path / f".x.ckpt.otherhost-1.abc{atomic.PARTIAL_SUFFIX}"
    foreign.write_bytes(b"another machine's")
    assert atomic.remove_stale_temporaries(tmp_path) == []
    assert live.exists() and foreign.exists()


def test_a_disk_that_fills_during_fit_ends_the_run_in_one_line_with_every_earlier_checkpoint_loadable(
    sudoku4_dir, tmp_path, monkeypatch, capsys
):
    from loopformer.cli import command as cli

    root = Path(__file__).resolve().parents[2]
    written = []

    def fill_up_at_the_third_checkpoint(stage, dest):
        if stage == "written" and dest.suffix == ".ckpt":
            written.append(dest)
            if len(written) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "fault_point", fill_up_at_the_third_checkpoint)
    every_step = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(tmp_path / "ckpt"), "every_n_train_steps": 1, "save_top_k": -1},
    }
    with pytest.raises(SystemExit) as ended:
        cli.main([
            "fit", "--config", str(root / "configs/quickstart.yaml"), f"--data.data_paths={sudoku4_dir}",
            "--data.global_batch_size=16", "--model.arch.hidden_size=32", "--model.arch.puzzle_emb_ndim=32",
            "--trainer.max_steps=10", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
            "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", "--last_checkpoint.every_minutes=0",
            f"--trainer.callbacks+={json.dumps(every_step)}",
        ])  # fmt: skip
    assert ended.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("loopformer: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert errors[0].startswith(f"loopformer: error: no space left on device writing {written[2]} (about ")
    assert f"{tmp_path / 'ckpt'} has " in errors[0]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [p.name for p in written[:2]]
    for path in written[:2]:
        assert isinstance(torch.load(path, weights_only=True)["state_dict"], dict)


def test_a_written_file_gets_the_permissions_any_new_file_gets(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644


def test_a_dead_writers_partial_file_is_removed_on_a_host_with_a_dotted_name(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.socket, "gethostname", lambda: "node7.cluster.example")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    partial = tmp_path / f".last.ckpt.node7-{int(dead.stdout)}.abc{atomic.PARTIAL_SUFFIX}"
    partial.write_bytes(b"left by a kill")
    assert atomic.remove_stale_temporaries(tmp_path) == [partial]
