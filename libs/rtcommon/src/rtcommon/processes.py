"""Restarting child processes: the delay before a restart, and how an exit is told.

Shared by the node supervisor (which restarts its sequencer and archiver) and the
local launcher (which restarts a node's supervisor, as a StatefulSet would).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

__all__ = ["Backoff", "describe_exit"]


@dataclass
class Backoff:
    """Delays before restarts: ``initial`` doubling up to ``cap``; a run that lasted at
    least ``stable_after`` seconds starts again from ``initial``."""

    initial: float = 0.2
    cap: float = 5.0
    stable_after: float = 10.0
    _next: float = 0.0

    def delay(self, ran_for: float) -> float:
        """The delay before restarting a process that ran for ``ran_for`` seconds."""
        if ran_for >= self.stable_after or self._next == 0.0:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay


def describe_exit(returncode: int) -> str:
    """``exit code 2``, or ``exit code -9 (SIGKILL)`` for a process killed by a signal."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"exit code {returncode} ({name})"
    return f"exit code {returncode}"
