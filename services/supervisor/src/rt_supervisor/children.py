"""The node's child processes: start, restart with a capped backoff, stop.

A :class:`Child` runs one command for as long as the supervisor runs. When the process
exits on its own, the exit code is logged and it is started again after a delay that
doubles from 0.2 s up to 5 s, and falls back to 0.2 s once a run has lasted 10 s.

A child stopped (for a hard reset) can be started again.

Each child gets its own process group (so a Ctrl-C at the supervisor's terminal reaches
the supervisor only, which then stops the children in order) and dies with the
supervisor (:mod:`deathsig`). Stopping sends SIGTERM to the child's group, then SIGKILL
after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from rtcommon.deathsig import dying_with_parent
from rtcommon.processes import Backoff, describe_exit

__all__ = ["Child"]

log = logging.getLogger("rt_supervisor.children")


class Child:
    """One supervised child process: :meth:`start` keeps it alive until :meth:`stop`."""

    def __init__(self, name: str, argv: Sequence[str], backoff: Backoff | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.backoff = backoff or Backoff()
        self.restarts = 0
        self.last_exit: int | None = None
        self.restart_at: float | None = None  #: monotonic time of the next start, if waiting
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def state(self) -> dict[str, object]:
        """What ``/health`` shows about this child."""
        state: dict[str, object] = {
            "running": self.pid is not None,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }
        if self.restart_at is not None:
            state["restart_in"] = round(max(0.0, self.restart_at - time.monotonic()), 1)
        return state

    def describe(self) -> str:
        """A short sentence on the child's state, for reasons in ``/health``."""
        if self.pid is not None:
            return f"{self.name} running (pid {self.pid})"
        if self.last_exit is None:
            return f"{self.name} not started"
        text = f"{self.name} exited ({describe_exit(self.last_exit)})"
        if self.restart_at is not None:
            text += f", restarting in {max(0.0, self.restart_at - time.monotonic()):.1f} s"
        return text

    def start(self) -> None:
        """Start the child, and keep restarting it until :meth:`stop` (a stopped child
        may be started again)."""
        if self._task is None or self._task.done():
            self._stopping = False
            self.restart_at = None
            self._task = asyncio.create_task(self._run(), name=f"child {self.name}")

    async def _run(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            returncode: int | None = None
            try:
                # Spawned from the loop's (main) thread: see deathsig on why it matters.
                self._process = await asyncio.create_subprocess_exec(
                    *dying_with_parent(self.argv),
                    stdin=subprocess.DEVNULL,
                    process_group=0,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                log.error("cannot start %s (%s): %s", self.name, self.argv[0], exc)
            else:
                log.info("%s started (pid %d)", self.name, self._process.pid)
                if self._stopping:  # stop() came while the process was being spawned
                    self._signal(signal.SIGTERM)
                returncode = await self._process.wait()
                self.last_exit = returncode
                if self._stopping:
                    log.info("%s stopped (%s)", self.name, describe_exit(returncode))
            if self._stopping:
                break
            ran_for = time.monotonic() - started
            delay = self.backoff.delay(ran_for)
            self.restarts += 1
            if returncode is None:
                what = "could not start"
            else:
                what = f"exited ({describe_exit(returncode)})"
            log.warning(
                "%s %s after %.1f s; restart #%d in %.1f s",
                self.name,
                what,
                ran_for,
                self.restarts,
                delay,
            )
            self.restart_at = time.monotonic() + delay
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self.restart_at = None

    async def stop(self, grace: float) -> None:
        """Stop restarting; SIGTERM the child's group, SIGKILL it after ``grace`` seconds."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        if self.pid is not None:
            log.info("stopping %s (pid %d)", self.name, self.pid)
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning(
                "%s (pid %s) still running after %.1f s: SIGKILL", self.name, self.pid, grace
            )
            self._signal(signal.SIGKILL)
            await task

    def _signal(self, sig: signal.Signals) -> None:
        """Signal the live child's process group (it leads it: process_group=0)."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
