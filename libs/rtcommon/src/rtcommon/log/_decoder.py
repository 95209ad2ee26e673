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

Made with ``piece_size``, :meth:`RecordDecoder.next_chunk` hands a record longer than
that out in pieces as its bytes are fed, rather than hold it whole: what a copy sent
over the wire needs, where memory per connection must not grow with the message. A
record's first piece holds at least its head (``RECORD_HEAD_MAX`` bytes); its CRC32C
is checked incrementally, and a record that fails it at its end withholds its last
piece and is reported corrupt at its start, so a receiver never has it whole.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from ._errors import RecordError
from ._record import (
    CORRUPT,
    MAX_RECORD_SIZE,
    NEED_DATA,
    RECORD_HEAD_MAX,
    SEALED,
    Record,
    RecordInPieces,
    TagFilter,
    scan,
)

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
        self,
        position: int,
        tag_filter: TagFilter | None = None,
        *,
        verify: bool = True,
        piece_size: int | None = None,
    ) -> None:
        self._buffer = b""
        self._offset = 0  # in _buffer, of the first byte not yet decoded
        self._base = position  # the log position of _buffer[0]
        self._filter = tag_filter
        self._verify = verify  # check each record's CRC32C (see scan)
        self._outcome: str | Corrupt = NEED_DATA
        self._pending: deque[Record] = deque()  # decoded but not yet taken one by one
        # next_chunk hands out records longer than this in pieces (None: never).
        self._piece_size = None if piece_size is None else max(piece_size, RECORD_HEAD_MAX)
        self._piece: RecordInPieces | None = None  # the record handed out in pieces

    @property
    def position(self) -> int:
        """Where decoding resumes: after the last record taken (or skipped by the filter);
        while a record is handed out in pieces, its start."""
        if self._pending:
            first = self._pending[0]
            return first.position - len(first.raw)
        if self._piece is not None:
            return self._piece.start
        return self._base + self._offset

    @property
    def taken_to(self) -> int:
        """The position after the last byte taken: :attr:`position`, but inside the
        record while one is handed out in pieces."""
        return self.position if self._piece is None else self._base + self._offset

    @property
    def inside_record(self) -> bool:
        """Whether the bytes fed end inside a record (one not whole yet, or handed out
        in pieces so far)."""
        return self._piece is not None or self.buffered > 0

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet framed: the start of an incomplete record."""
        return len(self._buffer) - self._offset

    @property
    def wanted(self) -> int:
        """How many more bytes would complete the record that is waiting, if known (0
        with ``piece_size``: a long record is not waited for whole; 0 for a length no
        record has, such as a seal trailer's)."""
        if self.buffered < _LENGTH.size or self._piece_size is not None:
            return 0
        (length,) = _LENGTH.unpack_from(self._buffer, self._offset)
        return max(0, length - self.buffered) if length <= MAX_RECORD_SIZE else 0

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
        with no record objects made, and how many they are (a record handed out in
        pieces counts with its last). With ``piece_size``, the bytes may also begin or
        end inside a record longer than that."""
        start = self._offset
        records = 0
        while self._outcome is NEED_DATA:
            if self._piece is not None:
                if not self._take_piece():
                    break
                records += 1
                continue
            end = self._end(limit)
            _, self._offset, outcome, reason, count = scan(
                self._buffer,
                self._offset,
                self._base,
                keep=False,
                end=end,
                verify=self._verify,
            )
            records += count
            self._set_outcome(outcome, reason)
            if not self._start_piece(len(self._buffer) if end is None else end):
                break
        return self._base + start, self._buffer[start : self._offset], self._outcome, records

    def _start_piece(self, end: int) -> bool:
        """At a record not whole in the buffer: start handing it out in pieces if it is
        longer than ``piece_size`` and its head is here; whether it was started."""
        if self._outcome is not NEED_DATA or self._piece_size is None:
            return False
        end = min(end, len(self._buffer))
        if end - self._offset < RECORD_HEAD_MAX:
            return False
        (length,) = _LENGTH.unpack_from(self._buffer, self._offset)
        if length <= self._piece_size:
            return False  # short enough to wait for whole
        head = self._buffer[self._offset : self._offset + RECORD_HEAD_MAX]
        try:
            self._piece = RecordInPieces.begin(head, self._base + self._offset)
        except RecordError as exc:
            self._set_outcome(CORRUPT, str(exc))
            return False
        return True

    def _take_piece(self) -> bool:
        """Take the buffered bytes of the record handed out in pieces; whether it ended
        (whole and checked). One that fails its CRC32C is corrupt, its last piece kept."""
        assert self._piece is not None
        before = self._offset
        size = min(self._piece.missing, len(self._buffer) - before)
        self._piece = self._piece.add(memoryview(self._buffer)[before : before + size])
        self._offset += size
        if self._piece.missing:
            return False
        if self._verify and not self._piece.intact:
            self._offset = before  # never whole: position stays at its start
            self._outcome = Corrupt(self._piece.start, "CRC32C mismatch")
            return False
        self._piece = None
        return True

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
