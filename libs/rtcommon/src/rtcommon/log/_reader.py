"""The log reader: records from any position, across rolls and sessions, live.

A reader walks the ``log.X.Y`` files of one directory in order. Within a file
it decodes with :class:`RecordDecoder`; at the end of what a file holds it
decides, from the directory, what comes next:

- the file ends with its seal, or a later file exists and the file ends on a
  record boundary: go on to the later file;
- a later file exists and the file ends inside a record (a writer died
  mid-write), or a record is corrupt: a ``badtail`` event
  ``(position of the bad record, start of the next file)``, then the next file;
- the file shrank below what was read, emptied together with every later file
  of its session, and a newer session exists: the source was wiped (a hard
  reset): a ``reset`` event ``(position reached, start of the new session)``;
  in a merged log (``merged=True``: its sessions change only by a hard reset),
  likewise a reader at the start of an empty file whose whole session is empty,
  with a newer session after it (a reset right after a roll, or a reader that
  starts in the wiped session); elsewhere that is a writer that died before it
  wrote, and the reader goes on;
  a file that shrank with non-empty later files of its session, or that has the
  sticky bit (RT's mark of a collected file), was pruned by garbage collection, and
  the reader goes on to the next file; in a merged log, records it had not read yet
  (a file emptied under it, or collected files it comes to) are reported as a
  ``collected`` event ``(position reached, first position after them)``, a reader
  asked to start among collected files likewise (its first item), and a reader with
  no start position begins at the first file not collected;
- nothing later exists yet: the file may still grow; :meth:`LogReader.wait`
  blocks until the directory changes.

Corrupt bytes are never delivered as data: a record is delivered only whole and
with a matching CRC32C.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._decoder import NEED_DATA, SEALED, Corrupt, RecordDecoder
from ._errors import PositionPastEndError
from ._files import collected_end, is_collected, list_log_files
from ._position import check_position, file_name, file_start, next_file, split_position
from ._record import HEADER_SIZE, SEAL_SIZE, SEAL_TRAILER, Record, TagFilter, scan
from ._watch import DirectoryWatcher

DEFAULT_CHUNK_SIZE = 4 << 20

BADTAIL = "badtail"
RESET = "reset"
COLLECTED = "collected"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """An event in a log: ``badtail``, ``reset`` or ``collected``, with its pair of
    positions.

    ``badtail``: (position of the corrupt record, start of the next file).
    ``reset``: (position reached before the wipe, first position after it).
    ``collected``: (position reached, first position after the records that garbage
    collection took before this reader read them).
    Delivery goes on from ``positions[1]``.
    """

    kind: str
    positions: tuple[int, int]

    @property
    def position(self) -> int:
        """Where reading resumes after this event."""
        return self.positions[1]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole records of one file as bytes, from ``position``; ``sealed``: the file ends
    after them. What a replicator ships; the seal trailer itself is never in ``data``.
    From a reader with ``pieces=True``, ``data`` may also begin or end inside a record
    too long to travel whole (a piece of it).
    ``records``: how many records ``data`` holds, as the reader that framed them counted
    (0 in a chunk made from bytes received, which nobody counted; not compared: two
    chunks are equal when they hold the same bytes at the same place)."""

    position: int
    data: bytes
    sealed: bool = False
    records: int = field(default=0, compare=False)

    @property
    def end(self) -> int:
        return self.position + len(self.data)


def file_is_sealed(path: str | os.PathLike[str]) -> bool:
    """True if the log file at ``path`` ends with the seal trailer (it is complete)."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        return size >= SEAL_SIZE and os.pread(file.fileno(), SEAL_SIZE, size - SEAL_SIZE) == (
            SEAL_TRAILER
        )


def starts_a_record(directory: str | os.PathLike[str], position: int) -> bool:
    """Whether ``position`` can be read from in ``directory``: the start of a whole,
    valid record, the end of what a file holds (or its seal), or the start of a file
    (a position past the end is not inside a record: :class:`LogReader` refuses it).

    A position that points inside a record fails this (but for a 2**-32 chance that the
    bytes there pass as a record), so a reader is refused rather than fed garbage.
    """
    session, roll, offset = split_position(position)
    try:
        with open(Path(directory) / file_name(session, roll), "rb") as file:
            size = os.fstat(file.fileno()).st_size
            header = os.pread(file.fileno(), HEADER_SIZE, offset)
            if offset >= size or offset == 0 or header[:SEAL_SIZE] == SEAL_TRAILER:
                return True  # past the end is another question, for the reader
            length = int.from_bytes(header[:4], "little")
            if not HEADER_SIZE <= length <= size - offset:
                return False
            _, stop, _, _, _ = scan(os.pread(file.fileno(), length, offset), 0, 0, keep=False)
            return stop == length
    except FileNotFoundError:
        return offset == 0


class LogReader:
    """Reads one log directory from a position on, following it as it grows.

    ``position=None`` starts at the first file present. :meth:`read` never
    blocks: it returns what is there now (records and events, in log order,
    about one chunk at a time); :meth:`wait` blocks until there may be more.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        position: int | None = None,
        *,
        tag_filter: TagFilter | tuple[str, ...] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        watcher: DirectoryWatcher | None = None,
        verify: bool = True,
        merged: bool = False,
        pieces: bool = False,
    ) -> None:
        self.directory = Path(directory)
        # read_chunks hands a record longer than chunk_size out in pieces (see
        # RecordDecoder), so a copy over the wire never holds a long record whole.
        self._pieces = pieces
        self._merged = merged  # sessions change only by a hard reset (module docstring)
        self._verify = verify  # False: the log was checked as it was written (see scan)
        if tag_filter is not None and not isinstance(tag_filter, TagFilter):
            tag_filter = TagFilter(tuple(tag_filter))
        self._filter = tag_filter
        self._chunk_size = chunk_size
        self._watcher = watcher or DirectoryWatcher(self.directory)
        self._file: tuple[int, int] | None = None
        self._fd = -1
        self._read_offset = 0  # in the current file, of the next byte to read
        self._decoder: RecordDecoder | None = None
        self._seal_marked = False  # read_chunks has yielded the current file's seal
        self._start_event: LogEvent | None = None  # a start among collected records
        self._start = None if position is None else check_position(position)
        if self._start is not None:
            self._check_start(self._start)

    @property
    def position(self) -> int | None:
        """Where reading resumes: after the last record returned or skipped (a new reader
        may start here)."""
        return self._start if self._decoder is None else self._decoder.position

    @property
    def taken_to(self) -> int | None:
        """The position after the last byte returned: :attr:`position`, but inside the
        record while one is returned in pieces (``pieces=True``)."""
        return self._start if self._decoder is None else self._decoder.taken_to

    @property
    def mid_record(self) -> bool:
        """Whether the bytes returned end inside a record (returned in pieces)."""
        return self._decoder is not None and self._decoder.taken_to != self._decoder.position

    def read(self, limit: int | None = None) -> list[Record | LogEvent]:
        """Records and events available now, in order; ``[]`` if there are none yet.

        With ``limit`` (a position at a record boundary), reading stops there."""
        return self._read(self._take_records, limit, seal_marks=False)

    def read_chunks(self, limit: int | None = None) -> list[Chunk | LogEvent]:
        """Like :meth:`read`, but whole records as :class:`Chunk` bytes, never decoded
        (with ``pieces=True``, a record longer than ``chunk_size`` in pieces of about
        that size: a chunk's bytes may then begin or end inside it).

        The chunk that ends a sealed file is marked ``sealed``; leaving a file whose end
        was not so marked yields an empty sealed chunk at the file's last good position
        (before a ``badtail`` event, if there is one), so a copy can be sealed alike.
        """
        return self._read(self._take_chunk, limit, seal_marks=True)

    def _take_records(self, limit: int | None) -> tuple[list[Record], str | Corrupt]:
        assert self._decoder is not None
        return self._decoder.next_records(limit)

    def _take_chunk(self, limit: int | None) -> tuple[list[Chunk], str | Corrupt]:
        assert self._decoder is not None
        position, data, outcome, records = self._decoder.next_chunk(limit)
        return ([Chunk(position, data, records=records)] if data else []), outcome

    def _read(self, take, limit: int | None, *, seal_marks: bool) -> list:
        if self._start_event is not None:
            event, self._start_event = self._start_event, None
            return [event]
        if self._decoder is None and not self._open_first():
            return []
        assert self._decoder is not None
        items: list = []
        while not items:
            if limit is not None and self._decoder.position >= limit:
                break
            taken, outcome = take(limit)
            if taken:
                if seal_marks and outcome is SEALED and not self._seal_marked:
                    # The chunk that ends a sealed file says so itself: a copy that stops
                    # on reaching its end still seals its own.
                    last = taken[-1]
                    taken[-1] = Chunk(last.position, last.data, sealed=True, records=last.records)
                    self._seal_marked = True
                items.extend(taken)
                continue
            if outcome is NEED_DATA and self._read_chunk():
                continue
            if limit is not None and self._decoder.position >= limit:
                break
            last_good = self._decoder.position
            if seal_marks and outcome is SEALED and not self._seal_marked:
                # A sealed file is complete even before a later file appears.
                self._seal_marked = True
                items.append(Chunk(last_good, b"", sealed=True))
            marked = self._seal_marked
            event, go_on = self._at_end(outcome)
            moved_on = go_on and self._decoder.position != last_good
            if seal_marks and moved_on and not marked and (event is None or event.kind == BADTAIL):
                items.append(Chunk(last_good, b"", sealed=True))
            if event is not None:
                items.append(event)
            if not go_on:
                break
        return items

    def wait(self, timeout: float) -> None:
        """Block until the directory may have changed, for at most ``timeout`` seconds."""
        self._watcher.wait(timeout)

    def close(self) -> None:
        self._close_file()
        self._watcher.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Record | LogEvent]:
        """Everything readable now, without waiting for more."""
        while items := self.read():
            yield from items

    # -- choosing files ------------------------------------------------------------------

    def _check_start(self, position: int) -> None:
        session, roll, offset = split_position(position)
        files = list_log_files(self.directory)
        path = self.directory / file_name(session, roll)
        if self._merged and ((session, roll) not in files or is_collected(path)):
            first_held = collected_end(self.directory)
            if position < first_held:  # reported first; reading starts after them
                self._start_event = LogEvent(COLLECTED, (position, first_held))
                self._start = first_held
                return
        if (session, roll) in files:
            size = path.stat().st_size
            if offset > size and not any(f > (session, roll) for f in files):
                raise PositionPastEndError(
                    f"position {position} is past the end of {path} ({size} bytes)"
                )
        elif files and files[-1] < (session, roll):
            # A file's start is awaited only where the log goes on: the next file, or the
            # next session's first (a writer reopening the log, or a hard reset).
            last = files[-1]
            if offset or (session, roll) not in (next_file(*last), (last[0] + 1, 0)):
                raise PositionPastEndError(
                    f"position {position} is past the end of the log in {self.directory}"
                    f" ({file_name(session, roll)} does not exist; the log ends in"
                    f" {file_name(*files[-1])})"
                )
        elif offset and not files:
            raise PositionPastEndError(
                f"position {position} is past the end of the log in {self.directory}"
                f" (it holds no file yet)"
            )

    def _open_first(self) -> bool:
        files = list_log_files(self.directory)
        if self._start is None:
            held = [f for f in files if not self._collected(f)] or files[-1:]
            if not held:
                return False
            self._open(held[0], 0)
            return True
        session, roll, offset = split_position(self._start)
        if (session, roll) in files:
            self._open((session, roll), offset)
            return True
        later = [f for f in files if f > (session, roll)]
        if not later:
            return False
        self._open(later[0], 0)  # the file of the position was removed: go on from the next
        return True

    def _open(self, file: tuple[int, int], offset: int) -> None:
        self._close_file()
        self._file = file
        self._fd = os.open(self.directory / file_name(*file), os.O_RDONLY)
        self._read_offset = offset
        self._decoder = RecordDecoder(
            file_start(*file) + offset,
            self._filter,
            verify=self._verify,
            piece_size=self._chunk_size if self._pieces else None,
        )
        self._seal_marked = False

    def _close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _read_chunk(self) -> bool:
        assert self._decoder is not None
        size = self._chunk_size
        wanted = self._decoder.wanted  # 0 with pieces
        if wanted:
            # The rest of a record begun is read once it is all there, not bit by bit as
            # it grows: each read would copy again what the decoder holds of it.
            if os.fstat(self._fd).st_size - self._read_offset < wanted:
                return False
            size = max(size, wanted)
        data = os.pread(self._fd, size, self._read_offset)
        if not data:
            return False
        self._read_offset += len(data)
        self._decoder.feed(data)
        return True

    # -- the end of a file ---------------------------------------------------------------

    def _at_end(self, outcome: str | Corrupt) -> tuple[LogEvent | None, bool]:
        """At the end of what the current file holds: ``(event, whether to read on)``."""
        assert self._file is not None and self._decoder is not None
        files = list_log_files(self.directory)
        later = [f for f in files if f > self._file]
        if not later:
            return None, False
        if outcome is NEED_DATA and self._read_chunk():
            return None, True  # it grew just before its writer moved on; decode that first
        current_size = os.fstat(self._fd).st_size
        if current_size < self._read_offset:
            return self._after_shrink(later, read_whole=outcome is SEALED)
        newer = self._after_wiped_session(later) if self._merged and not self._read_offset else None
        if newer is not None:
            reached = self._decoder.position
            self._open(newer, 0)
            return LogEvent(RESET, (reached, file_start(*newer))), True
        next_start = file_start(*later[0])
        if isinstance(outcome, Corrupt):
            event = LogEvent(BADTAIL, (outcome.position, next_start))
        elif outcome is not SEALED and self._decoder.inside_record:
            event = LogEvent(BADTAIL, (self._decoder.position, next_start))
        else:
            event = None
        if event is None and self._merged and self._collected(later[0]):
            return self._past_collected(later, read_whole=True), True
        self._open(later[0], 0)
        return event, True

    def _past_collected(self, later: list[tuple[int, int]], *, read_whole: bool) -> LogEvent | None:
        """Go on at the first of the ``later`` files not collected; the records garbage
        collection took before this reader came to them (the rest of the current file
        unless ``read_whole``, and any file skipped) are a ``collected`` event."""
        assert self._decoder is not None
        reached = self._decoder.position
        held = [f for f in later if not self._collected(f)] or later[-1:]
        self._open(held[0], 0)
        if read_whole and held[0] == later[0]:
            return None
        return LogEvent(COLLECTED, (reached, file_start(*held[0])))

    def _after_shrink(
        self, later: list[tuple[int, int]], *, read_whole: bool
    ) -> tuple[LogEvent | None, bool]:
        assert self._file is not None and self._decoder is not None
        reached = self._decoder.position
        session = self._file[0]
        same_session = [f for f in later if f[0] == session]
        newer_session = [f for f in later if f[0] > session]
        emptied = all(self._size(f) == 0 for f in same_session)
        if emptied and newer_session and not self._collected(self._file):
            self._open(newer_session[0], 0)
            return LogEvent(RESET, (reached, file_start(*newer_session[0]))), True
        if self._merged:
            return self._past_collected(later, read_whole=read_whole), True
        self._open(later[0], 0)  # pruned by garbage collection
        return None, True

    def _after_wiped_session(self, later: list[tuple[int, int]]) -> tuple[int, int] | None:
        """At the start of an empty file whose whole session is empty, with a newer
        session after it: the first file of that session (the log was wiped, by a reset
        right after a roll, or this reader started in the wiped session), else None."""
        assert self._file is not None
        session = self._file[0]
        newer = [f for f in later if f[0] > session]
        if not newer:
            return None
        files = list_log_files(self.directory)
        if any(self._size(f) for f in files if f[0] == session):
            return None
        return newer[0]

    def _collected(self, file: tuple[int, int]) -> bool:
        return is_collected(self.directory / file_name(*file))

    def _size(self, file: tuple[int, int]) -> int:
        with contextlib.suppress(FileNotFoundError):
            return (self.directory / file_name(*file)).stat().st_size
        return 0


def read_log(
    directory: str | os.PathLike[str],
    position: int | None = None,
    *,
    tag_filter: TagFilter | tuple[str, ...] | None = None,
) -> list[Record | LogEvent]:
    """Everything in ``directory`` from ``position`` on, as it is now (no waiting)."""
    with LogReader(directory, position, tag_filter=tag_filter) as reader:
        return list(reader)
