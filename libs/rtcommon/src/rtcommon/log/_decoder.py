"""The sans-I/O record decoder: feed it bytes, take records and outcomes out.

It knows nothing of files or sockets. A reader feeds the bytes of one log file
in order, starting at a known position, and after each feed takes what is
complete::

    decoder = RecordDecoder(position)
    decoder.feed(chunk)
    records, outcome = decoder.next_records()

``outcome`` says why decoding stopped: :data:`NEED_DATA` (feed more),
:data:`SEALED` (the file's seal trailer: nothing follows), or a :class:`Corrupt`
naming the position of the first byte that is not a valid record. Once sealed
or corrupt the decoder stays so: bytes after either are never records.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from ._record import CORRUPT, NEED_DATA, SEALED, Record, TagFilter, scan

__all__ = ["NEED_DATA", "SEALED", "Corrupt", "RecordDecoder"]

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Corrupt:
    """The bytes at ``position`` are not a valid record (``reason`` says why)."""

    position: int
    reason: str


class RecordDecoder:
    """Frames and checks the records of one log file, fed in order."""

    def __init__(
        self, position: int, tag_filter: TagFilter | None = None, *, verify: bool = True
    ) -> None:
        self._buffer = b""
        self._offset = 0  # in _buffer, of the first byte not yet decoded
        self._base = position  # the log position of _buffer[0]
        self._filter = tag_filter
        self._verify = verify  # check each record's CRC32C (see scan)
        self._outcome: str | Corrupt = NEED_DATA
        self._pending: deque[Record] = deque()  # decoded but not yet taken one by one

    @property
    def position(self) -> int:
        """Where decoding resumes: after the last record taken (or skipped by the filter)."""
        if self._pending:
            first = self._pending[0]
            return first.position - len(first.raw)
        return self._base + self._offset

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet framed: the start of an incomplete record."""
        return len(self._buffer) - self._offset

    @property
    def wanted(self) -> int:
        """How many more bytes would complete the record that is waiting, if known."""
        if self.buffered < _LENGTH.size:
            return 0
        (length,) = _LENGTH.unpack_from(self._buffer, self._offset)
        return max(0, length - self.buffered)

    def feed(self, data: bytes) -> None:
        if self._outcome is not NEED_DATA or not data:
            return
        if self._offset:
            self._base += self._offset
            self._buffer = self._buffer[self._offset :]
            self._offset = 0
        self._buffer = self._buffer + data if self._buffer else bytes(data)

    def _end(self, limit: int | None) -> int | None:
        return None if limit is None else max(self._offset, limit - self._base)

    def next_records(self, limit: int | None = None) -> tuple[list[Record], str | Corrupt]:
        """Every complete record fed so far (ending at or before position ``limit``, if
        given), and why decoding stopped."""
        if self._pending:
            records = list(self._pending)
            self._pending.clear()
            return records, self._outcome
        if self._outcome is not NEED_DATA:
            return [], self._outcome
        records, self._offset, outcome, reason, _ = scan(
            self._buffer,
            self._offset,
            self._base,
            self._filter,
            end=self._end(limit),
            verify=self._verify,
        )
        self._set_outcome(outcome, reason)
        return records, self._outcome

    def next_chunk(self, limit: int | None = None) -> tuple[int, bytes, str | Corrupt, int]:
        """``(position, bytes, outcome, records)``: every complete, checked record fed so
        far (ending at or before position ``limit``, if given), as the bytes they are,
        with no record objects made, and how many they are."""
        start = self._offset
        records = 0
        if self._outcome is NEED_DATA:
            _, self._offset, outcome, reason, records = scan(
                self._buffer,
                self._offset,
                self._base,
                keep=False,
                end=self._end(limit),
                verify=self._verify,
            )
            self._set_outcome(outcome, reason)
        return self._base + start, self._buffer[start : self._offset], self._outcome, records

    def _set_outcome(self, outcome: str, reason: str) -> None:
        if outcome == CORRUPT:
            self._outcome = Corrupt(self._base + self._offset, reason)
        elif outcome == SEALED:
            self._outcome = SEALED

    def next_record(self) -> Record | str | Corrupt:
        """One record, or the outcome (NEED_DATA, SEALED, Corrupt) if none is complete."""
        if not self._pending:
            records, outcome = self.next_records()
            if not records:
                return outcome
            self._pending.extend(records)
        return self._pending.popleft()
