"""Children that die with their parent, however the parent dies (even SIGKILL).

Linux's ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, called in the child between fork and exec
(``subprocess.Popen(preexec_fn=...)``), makes the kernel SIGKILL the child when the
thread that forked it exits. Why this and not a process group plus a watchdog: a
watchdog is another process that can itself be killed, and a SIGKILLed parent runs no
code, so only the kernel can be relied on to clean up. Two caveats, both handled by the
callers: the signal follows the *forking thread*, so children are always spawned from
the main thread (the asyncio loop's); and a parent that dies between fork and prctl is
caught by checking the parent pid right after.

The C function is resolved at import time, in the parent, so the child only calls it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["SUPPORTED", "die_with_parent"]

_PR_SET_PDEATHSIG = 1

SUPPORTED = sys.platform.startswith("linux")

if SUPPORTED:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGKILL when this process dies (Linux).

    None elsewhere: there, children outlive a parent that is SIGKILLed.
    """
    if not SUPPORTED:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(126)

    return preexec
