"""Children that die with their parent, however the parent dies (even SIGKILL).

Linux's ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set in a child, makes the kernel
SIGKILL the child when the thread that started it exits. A SIGKILLed parent runs no
code, so only the kernel can be relied on to clean up; a watchdog could itself be
killed.

The call must happen in the child, before its program runs. A ``preexec_fn`` would
run Python between fork and exec, which is unsafe in a parent whose other threads
(gRPC's pollers) hold locks at the fork. So the child starts as
``python -m rtcommon.deathsig PARENT_PID -- PROGRAM ARGS...``: that sets the signal,
checks that the parent is still ``PARENT_PID`` (it may have died before the signal
was set), and execs the program, which keeps the setting. The parent's side is
:func:`dying_with_parent`, which wraps a command; ``subprocess`` then needs no
preexec_fn. Children are started from the main thread (the signal follows the thread
that forked).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["SUPPORTED", "dying_with_parent"]

_PR_SET_PDEATHSIG = 1
_FAILED = 126

SUPPORTED = sys.platform.startswith("linux")


def dying_with_parent(command: Sequence[str | os.PathLike[str]]) -> list[str]:
    """``command``, wrapped so that it gets SIGKILL when this process dies (Linux only;
    elsewhere the command as it is)."""
    argv = [os.fspath(part) for part in command]
    if not SUPPORTED:
        return argv
    return [sys.executable, "-m", "rtcommon.deathsig", str(os.getpid()), "--", *argv]


def _main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m rtcommon.deathsig PARENT_PID -- PROGRAM [ARGS...]")
    parent, program = int(argv[0]), argv[2:]
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0) != 0:
        os._exit(_FAILED)
    if os.getppid() != parent:  # the parent died before the signal was set
        os._exit(_FAILED)
    os.execvp(program[0], program)


if __name__ == "__main__":
    _main(sys.argv[1:])
