"""The one way loopformer writes a file that a later run reads (checkpoints, config.yaml, a sweep's state and
results): a temporary file in the destination's own directory, written and fsync'd, renamed over the destination
with ``os.replace``, and the directory fsync'd. Whatever happens (a kill, a crash, a full disk), the destination
is the old complete file or the new complete one, never a truncated one.

A temporary file is named ``.<name>.<host>-<pid>.<random>.partial``: a kill during a write leaves it behind, and
``remove_stale_temporaries`` removes those whose writer is no longer running at the next start.

Lightning's own ``_atomic_save`` writes its temporary file in ``$TMPDIR`` and moves it; across filesystems (a
tmpfs ``/tmp``, a node-local ``/tmp`` beside a network run directory) that move is a copy that first truncates
the destination. ``AtomicCheckpointIO`` (``checkpoint/lightning_io.py``) routes Lightning's checkpoints here instead.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Optional

PARTIAL_SUFFIX = ".partial"
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over the file-size limit

# Test seam: called with a stage name ("written", "synced", "replaced") and the destination inside every write, so that
# a fault-injection test can kill the process (or fail the write) at that point. None in normal use.
fault_point: Optional[Callable[[str, Path], None]] = None


class WriteError(OSError):
    """A file could not be written (full disk, no permission, ...): the message is one line naming the file, and for
    a full disk what was needed and what is free. The partial file is already removed; the destination is intact."""

    def __str__(self) -> str:
        return self.strerror


def write_atomically(dest: str | Path, write: Callable[[IO[bytes]], None], size_hint: Optional[int] = None) -> None:
    """Call ``write(f)`` on a temporary file beside ``dest``, then make it ``dest`` in one step."""

    def write_to_path(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    write_with(dest, write_to_path, size_hint)


def write_with(dest: str | Path, write_to_path: Callable[[Path], None], size_hint: Optional[int] = None) -> None:
    """``write_to_path(tmp)`` writes a temporary file in the destination's directory (for writers that want a path:
    ``savefig`` with an explicit format, ``csv`` through ``open``), which is fsync'd and then replaces ``dest``."""
    dest = Path(dest)
    directory = dest.parent
    tmp = directory / f".{dest.name}.{_writer_tag()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # 0o666 less the umask, as any new file gets (tempfile.mkstemp's 0o600 would hide a run's files from its group)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        raise _write_error(dest, e, size_hint, 0) from None
    try:
        write_to_path(tmp)
        _at("written", dest)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _at("synced", dest)
        os.replace(tmp, dest)
        _at("replaced", dest)
        fsync_directory(directory)
    except BaseException as e:
        written = _size(tmp)
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise _write_error(dest, e, size_hint, written) from None
        raise


def save_torch(obj: Any, dest: str | Path) -> None:
    """``torch.save`` through ``write_atomically``."""
    import torch  # here: the tool commands answer --help without loading torch

    def write(f: IO[bytes]) -> None:
        recorder = _ErrorRecordingFile(f)
        try:
            torch.save(obj, recorder)
        except RuntimeError:
            # torch's zip writer reports a failed write as a RuntimeError without the OS error: raise that instead
            if recorder.error is not None:
                raise recorder.error from None
            raise

    write_atomically(dest, write, size_hint=_tensor_bytes(obj))


class _ErrorRecordingFile:
    """A binary file that remembers the first OSError its writes raised."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def write_text(dest: str | Path, text: str) -> None:
    data = text.encode()
    write_atomically(dest, lambda f: f.write(data), size_hint=len(data))


def fsync_directory(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files that a killed write left in ``directory`` (not in subdirectories): those written on
    this host by a process that is no longer running. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    host = _host()
    removed = []
    for path in directory.glob(f".*{PARTIAL_SUFFIX}*"):
        writer = _writer_of(path.name)
        if writer is None or writer[0] != host or _pid_running(writer[1]):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def stale_notice(removed: list[Path]) -> str:
    """One line saying what ``remove_stale_temporaries`` removed, or "" when nothing."""
    if not removed:
        return ""
    size = sum(_size(p) for p in removed) / 1e6
    where = sorted({str(p.parent) for p in removed})
    return (
        f"removed {len(removed)} partial file(s) left by an interrupted write in {', '.join(where)} "
        f"(the files they were written for are intact)" + (f", {size:.1f} MB" if size >= 0.1 else "")
    )


# ---------------------------------------------------------------------------------------------------
def _at(stage: str, dest: Path) -> None:
    if fault_point is not None:
        fault_point(stage, dest)


def _host() -> str:
    # '.' separates a temporary name's fields: a host name keeps its first label only
    return socket.gethostname().split(".")[0]


def _writer_tag() -> str:
    return f"{_host()}-{os.getpid()}"


def _writer_of(name: str) -> Optional[tuple[str, int]]:
    """(host, pid) from ``.<name>.<host>-<pid>.<random>.partial``; None when the name is not one of ours."""
    parts = name.split(".")
    if len(parts) < 4 or not name.endswith(PARTIAL_SUFFIX):
        return None
    host, _, pid = parts[-3].rpartition("-")
    if not pid.isdigit():
        return None
    return host, int(pid)


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has finished
    except (OSError, IndexError):
        return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tensor_bytes(obj: Any) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _write_error(dest: Path, e: OSError, size_hint: Optional[int], written: int) -> WriteError:
    directory = dest.parent
    if e.errno in SPACE_ERRNOS:
        try:
            free = f"{shutil.disk_usage(directory).free / 1e6:.1f} MB free"
        except OSError:
            free = "free space unknown"
        needed = max(size_hint or 0, written)
        need = f"about {needed / 1e6:.1f} MB needed" if needed else "size unknown"
        reason = {errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file size limit exceeded"}.get(
            e.errno, "no space left on device"
        )
        return WriteError(
            e.errno,
            f"{reason} writing {dest} ({need}, {directory} has {free}); nothing was replaced and every earlier "
            "file there is intact: free some space (or choose another directory) and resume from the last checkpoint.",
        )
    return WriteError(e.errno, f"cannot write {dest}: {e.strerror or e}.")
