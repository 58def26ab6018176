"""Whether another process holds an ``fcntl.flock`` lock: a claim file (``runs/claim.py``: a run's directory, a sweep
runner) or a dataset build's directory (``data/common.py``). The kernel releases such a lock however its holder
ends, so an unheld one was left by a process that is gone."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def is_held(path: str | Path) -> bool:
    """Whether a live process holds the lock on ``path``, a file or a directory (this process's own locks count as
    held); False where ``path`` does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)  # flock needs no write access, and a directory opens only so
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
