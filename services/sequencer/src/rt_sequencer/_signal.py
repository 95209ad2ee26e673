"""A broadcast wake-up for asyncio tasks that poll shared state."""

from __future__ import annotations

import asyncio
import contextlib


class Signal:
    """Wakes every task waiting at the moment it fires; later waiters wait for the next.

    Waiters re-read the state they care about after waking, so a fire is a hint,
    never a message: nothing is lost when several fires coalesce.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._listeners: list[asyncio.Event] = []

    def notify(self, event: asyncio.Event) -> None:
        """Also set ``event`` on every fire: one waiter can follow several signals."""
        self._listeners.append(event)

    def forget(self, event: asyncio.Event) -> None:
        self._listeners.remove(event)

    async def wait_for(self, timeout: float) -> None:
        """Wait for the next fire, or ``timeout`` seconds, whichever comes first. (An
        ``asyncio.timeout``, not ``wait_for``: on Python 3.11 wait_for can swallow the
        cancellation of a waiter woken at the same moment, and a task then never stops.)"""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()
        for event in self._listeners:
            event.set()
