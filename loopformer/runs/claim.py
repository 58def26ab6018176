"""Claims: a lock file that one process holds for its lifetime (``fcntl.flock``, released by the kernel when the
process ends, however it ends), with who holds it written inside.

A run claims its run directory, so that a second run on it fails at once instead of overwriting its checkpoints;
an offline sweep runner claims a file of its own, so that the other runners on the sweep can tell whether it is
still alive. A claim whose holder died is taken over; the dead holder is reported.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from loopformer.errors import ConfigError


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: float  # time.time() when the claim was taken

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"

    @staticmethod
    def me() -> Holder:
        return Holder(os.getpid(), socket.gethostname(), time.time())


class ClaimedError(ConfigError):
    """Another live process holds the claim (the message names it)."""

    def __init__(self, message: str, holder: Optional[Holder]) -> None:
        super().__init__(message)
        self.holder = holder


class Claim:
    """``acquire()`` takes the lock at ``path`` or raises ``ClaimedError``; ``release()`` (or the process's end) gives
    it back. ``previous``: after ``acquire``, the holder of a claim that was left by a process that died, if any."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what  # "run directory runs/x", for the messages
        self.previous: Optional[Holder] = None
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Claim:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = read_holder(self.path)
            os.close(fd)
            who = holder.describe() if holder else "a process that has not yet said who it is"
            raise ClaimedError(f"{self.what} is in use by another run ({who}).", holder) from None
        self.previous = read_holder(self.path)  # still written: its holder ended without releasing
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(Holder.me().__dict__).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the claim back; the file stays (deleting it would race a process that just opened it), emptied, so
        the next holder knows this one ended cleanly."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the lock


def read_holder(path: str | Path) -> Optional[Holder]:
    try:
        text = Path(path).read_text()
        fields = json.loads(text) if text.strip() else None
        return Holder(int(fields["pid"]), str(fields["host"]), float(fields["started"])) if fields else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
