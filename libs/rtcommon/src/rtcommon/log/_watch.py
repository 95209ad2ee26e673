"""Waiting for a log directory to change: inotify where the kernel has it, else polling."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

try:
    from inotify_simple import INotify
    from inotify_simple import flags as _flags
except (ImportError, OSError):  # not Linux, or no inotify in this kernel
    INotify = None

_DIRECTORY_EVENTS = (
    0
    if INotify is None
    else _flags.MODIFY
    | _flags.CREATE
    | _flags.MOVED_TO
    | _flags.CLOSE_WRITE
    | _flags.ATTRIB
    | _flags.DELETE
    | _flags.DELETE_SELF
    | _flags.MOVE_SELF
)


class DirectoryWatcher:
    """Blocks until something in one directory may have changed, or a timeout.

    A wake-up is a hint, never a promise: callers re-read the directory after
    :meth:`wait` returns, so a missed or spurious event costs at most one poll
    interval, never data.
    """

    def __init__(self, directory: str | os.PathLike[str], *, poll_interval: float = 0.05) -> None:
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self._inotify = None
        self._watching = False

    def wait(self, timeout: float) -> None:
        if self._watching:
            assert self._inotify is not None
            events = self._inotify.read(timeout=max(0, int(timeout * 1000)))
            # Drain the queue: one wake-up per burst of events is all a reader needs.
            while events:
                if any(event.mask & _flags.IGNORED for event in events):
                    self._watching = False  # the directory went away; watch it anew
                events = self._inotify.read(timeout=0)
        elif not self._start_watch():
            time.sleep(min(timeout, self.poll_interval))
        # A watch that has just started may have missed a change made before it:
        # return at once so the caller looks again.

    def _start_watch(self) -> bool:
        if INotify is None:
            return False
        if self._inotify is None:
            try:
                self._inotify = INotify()
            except OSError:  # out of inotify instances: poll instead
                return False
        try:
            self._inotify.add_watch(self.directory, _DIRECTORY_EVENTS)
        except OSError:  # the directory does not exist yet: poll until it does
            return False
        self._watching = True
        return True

    def close(self) -> None:
        if self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.close()
            self._inotify = None
            self._watching = False
