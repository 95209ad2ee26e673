"""Delivery from a subscriber's local copy: one message or event per :meth:`Delivery.step`.

What it owns: :class:`Delivery`, a :class:`~rtcommon.log.LogReader` on the local copy
and the callbacks. It has no thread and no clock: the subscriber's delivery thread
steps it between its pause and stop checks, and a test steps it directly. It keeps
``position`` (after the last message or event delivered: resuming from it delivers
the rest) and ``handed`` (the highest position a callback was given).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtcommon.log import LogEvent, LogReader, PositionPastEndError, Record, TagFilter

from ._sub_start import Start

__all__ = ["Delivery", "OnEvent", "OnMessage"]

OnMessage = Callable[[Record, int], Any]
OnEvent = Callable[[str, tuple[int, int]], Any]


class Delivery:
    def __init__(
        self,
        log_dir: Path,
        start: Start,
        *,
        on_message: OnMessage | None,
        on_event: OnEvent,
        tag_filter: TagFilter | None,
        replicated: bool,
    ) -> None:
        self.log_dir = log_dir
        self.start = start
        self.on_message = on_message
        self.on_event = on_event
        self.tag_filter = tag_filter
        self.replicated = replicated
        self.reader: LogReader | None = None
        self.position: int | None = start.position
        self.handed: int | None = None
        self._items: list[Record | LogEvent] = []
        self._index = 0

    @property
    def needs_read(self) -> bool:
        """True when the next step reads the copy (everything read was delivered)."""
        return self._index == len(self._items)

    def step(self) -> bool:
        """Deliver the next message or event; False if the copy holds none yet. A
        callback's exception propagates (the subscriber stops on it; ``position`` stays
        before that message)."""
        if self._index == len(self._items):
            if self.reader is None:
                self.reader = self._open()
            self._items, self._index = (self.reader.read() if self.reader else []), 0
            if not self._items:
                return False
        item = self._items[self._index]
        self._index += 1
        if type(item) is Record:
            position = item.position
            self.handed = position
            if self.on_message is not None:
                self.on_message(item, position)
            self.position = position
        else:
            assert isinstance(item, LogEvent)
            self.handed = item.positions[1]
            self.on_event(item.kind, item.positions)
            self.position = item.positions[1]
        return True

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def _open(self) -> LogReader | None:
        """The reader of the copy from the start (a start among records the cluster
        collected reads a ``collected`` event first, then goes on after them)."""
        start = self.start.delivery_start(self.log_dir)
        if start is None:
            return None
        try:
            # A replicated copy had every record's CRC checked by the mirror as it arrived.
            # A copy of the merged log changes session only by a hard reset.
            reader = LogReader(
                self.log_dir,
                start,
                tag_filter=self.tag_filter,
                verify=not self.replicated,
                merged=self.replicated,
            )
        except PositionPastEndError:
            if not self.replicated:
                raise
            return None  # the copy has not reached the position yet
        if self.position is None:
            self.position = start
        return reader
