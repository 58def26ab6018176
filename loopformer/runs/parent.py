"""A process that dies with its parent: an offline sweep's trials (and the DDP ranks they launch) must not outlive
a runner killed with SIGKILL, which no handler of the runner can see. Linux's parent-death signal does it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

DIE_WITH_PARENT_ENV = "LOOPFORMER_DIE_WITH_PARENT"  # set by the sweep runner for its trials; their ranks inherit it
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGKILL when the parent process ends (Linux only; False elsewhere). If the parent is already
    gone (it ended before the request), exit now."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:
        os._exit(1)
    return True


def die_with_parent_if_asked() -> None:
    """For a process started by a sweep runner, or by a rank started by one (the variable is inherited)."""
    if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        die_with_parent(os.getppid())
