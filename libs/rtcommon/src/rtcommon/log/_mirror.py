"""The log mirror: a byte copy of another log, written chunk by chunk.

A node's input copy of a publisher's log (``/s/in/<stream>``) and a subscriber's
local copy of the merged log are mirrors: their files have the source's names
and their records sit at the source's positions, so a position means the same
in the copy as in the source. Chunks arrive as :class:`Chunk` (records of one
file, and whether the file ends after them); the mirror checks that a chunk
continues the copy and holds valid records before writing a byte.

A record too long to travel whole comes in pieces (a chunk may begin or end inside
it; its first piece holds at least its head, ``RECORD_HEAD_MAX`` bytes): the pieces
are written to the file as they come and their CRC32C is kept running, but the
record counts in the copy (:attr:`LogMirror.end`) only once it is whole and its
CRC matches. So memory does not grow with a record's size.

A chunk that overlaps what the copy already holds in its current file is compared
with it and trimmed, and one wholly behind that file is ignored, so two sources (a
publisher's push and a peer's backup fetch) can race without harm: both copy the
same log. Overlapping bytes that differ are refused (:class:`MirrorError`): two
different logs claim the same positions, and the copy keeps the first. The part of a
record come so far goes when it fails its CRC (it is sent again from its start) and when
the source seals the file where it begins (its writer stopped inside it).

A copy starts at the start of a file, unless made with ``start_mid_file=True``
(a subscriber that begins at a position: the bytes before it are a hole).

On open, the last file is checked and cut back to its last whole record, so a
crash mid-write leaves no torn record; the source sends the rest again.

An idle copy can be :meth:`~LogMirror.suspend`-ed: it lets go of its file and its
folder's lock (no descriptor held) and takes them again at the next write, trusting
what it knew rather than reading the file again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ._decoder import NEED_DATA, SEALED, RecordDecoder
from ._errors import LogError, RecordError
from ._files import (
    DirectoryLock,
    PendingSync,
    list_log_files,
    write_file_atomically,
)
from ._position import file_name, file_start, split_position
from ._reader import Chunk
from ._record import (
    MAX_RECORD_SIZE,
    RECORD_HEAD_MAX,
    SEAL_TRAILER,
    Record,
    RecordInPieces,
    scan,
)
from ._writer import SyncPolicy

#: Names the position a copy began at, when it began mid-file (the bytes before are a hole).
MIRROR_START_FILE = ".mirror-start"
_RECOVER_CHUNK = 4 << 20

#: Called with the origin and start position of each record new to a copy, before any of
#: its bytes are written; it raises to refuse the chunk.
Admit = Callable[[str, int], None]


def read_mirror_start(directory: Path) -> int | None:
    try:
        return int((directory / MIRROR_START_FILE).read_text())
    except FileNotFoundError:
        return None


class MirrorError(LogError, ValueError):
    """A chunk that does not continue the copy, or is not whole valid records."""


class LogMirror:
    """The one writer of a log copy. Not thread-safe: callers serialise."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        sync: SyncPolicy | str = SyncPolicy.BATCH,
        start_mid_file: bool = False,
        max_record_size: int = MAX_RECORD_SIZE,
    ) -> None:
        """``max_record_size``: a chunk holding a larger record is refused (what the copy's
        owner takes in; a merged log cannot hold a record larger than its files)."""
        self.directory = Path(directory)
        self.max_record_size = max_record_size
        self._start_mid_file = start_mid_file
        self.sync_policy = SyncPolicy(sync)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = DirectoryLock(self.directory)
        self._file: tuple[int, int] | None = None
        self._fd = -1
        self._size = 0  # bytes of whole records in the current file (its seal excluded)
        self._partial: RecordInPieces | None = None  # a record after them, come in part
        self.sealed = False
        #: records this mirror wrote since it was opened (not those it found on disk)
        self.records_written = 0
        self._unsynced: list[int] = []  # descriptors written since the last sync
        self._new_files = False
        self.suspended = False  #: holds no descriptor until the next write (suspend)
        try:
            self._recover()
        except BaseException:
            self.close()
            raise
        self.durable = self.end

    @property
    def end(self) -> int | None:
        """The position just after the last record held, or None for an empty copy."""
        return None if self._file is None else file_start(*self._file) + self._size

    @property
    def received(self) -> int | None:
        """The position just after the last byte written: :attr:`end`, or further inside
        a record come in part so far."""
        return None if self._file is None else file_start(*self._file) + self._written

    def write(self, chunk: Chunk, *, admit: Admit | None = None) -> int | None:
        """Add ``chunk`` to the copy (trimmed to what is new); return the new end (which
        moves only as records become whole). ``admit`` is shown every record new to
        the copy first."""
        if self.suspended:
            self._resume()
        session, roll, offset = split_position(chunk.position)
        file = (session, roll)
        data = chunk.data
        if self._file is not None and file < self._file:
            return self.end  # an old file: held already
        if self._file == file:
            if chunk.sealed and self._partial is not None and offset + len(data) == self._size:
                # The source's file ends where the part of a record begins: it never
                # became whole there (its writer stopped inside it), so it goes.
                self._drop_partial()
            data, offset = self._trim(chunk.position, data, offset)
            written = self._written
            if offset != written:
                raise MirrorError(
                    f"chunk at {chunk.position} leaves a gap: the copy of {file_name(*file)}"
                    f" in {self.directory} ends at offset {written}"
                )
            if self.sealed:
                if data:
                    raise MirrorError(f"{file_name(*file)} in {self.directory} is sealed")
                return self.end
        elif self._file is not None and not self.sealed:
            raise MirrorError(
                f"chunk at {chunk.position} starts {file_name(*file)} but"
                f" {file_name(*self._file)} in {self.directory} is not sealed"
            )
        elif offset != 0 and (self._file is not None or not self._start_mid_file):
            raise MirrorError(
                f"chunk at {chunk.position} starts {file_name(*file)} in {self.directory}"
                " mid-file; a new file is copied from its start"
            )
        partial = self._partial if self._file == file else None
        base = file_start(*file) + offset
        whole, partial, records = self._frame(base, data, partial, admit)
        if chunk.sealed and partial is not None:
            raise MirrorError(f"chunk at {chunk.position} seals {file_name(*file)} inside a record")
        if self._file != file:
            if self._file is None and offset:
                write_file_atomically(self.directory / MIRROR_START_FILE, b"%d\n" % chunk.position)
            self._start_file(file, offset)
        if data:
            self._write_at(data, offset)
            if whole:
                self._size = offset + whole
            self._partial = partial
            self.records_written += records
        if chunk.sealed:
            self._write_at(SEAL_TRAILER, self._size)
            self.sealed = True
        if self.sync_policy is SyncPolicy.BATCH:
            self.sync()
        return self.end

    @property
    def _written(self) -> int:
        """Bytes written to the current file: its whole records and any part after them."""
        return self._size + (self._partial.have if self._partial is not None else 0)

    def _trim(self, position: int, data: bytes, offset: int) -> tuple[bytes, int]:
        """``data`` at ``offset`` of the current file less what the copy holds already
        (compared: bytes that differ are another log's), and the offset of the rest."""
        written = self._written
        if offset >= written:
            return data, offset
        overlap = min(written - offset, len(data))
        if os.pread(self._fd, overlap, offset) != data[:overlap]:
            raise MirrorError(
                f"chunk at {position} differs from the {overlap} bytes the copy in"
                f" {self.directory} already holds there: another log claims these positions"
            )
        return data[overlap:], written

    def _drop_partial(self) -> None:
        """Let go of the record come in part so far: its source sends it again whole, or
        never (it stopped inside it)."""
        self._partial = None
        os.ftruncate(self._fd, self._size)

    def _frame(
        self, position: int, data: bytes, partial: RecordInPieces | None, admit: Admit | None
    ) -> tuple[int, RecordInPieces | None, int]:
        """Check ``data`` (at ``position``, continuing ``partial`` if not None) before a
        byte is written: ``(whole, partial, records)``, the bytes of it up to the end of
        its last whole record (0: none ends in it), the record it ends inside, and how
        many records end in it. MirrorError unless it is valid records (a record come in
        part that fails its CRC is let go first)."""
        records = start = 0
        if partial is not None:
            start = min(partial.missing, len(data))
            partial = partial.add(memoryview(data)[:start])
            if partial.missing:
                return 0, partial, 0
            if not partial.intact:
                self._drop_partial()
                raise MirrorError(
                    f"the record at {partial.start} fails its CRC32C check: the copy lets go"
                    " of it, to be sent again from its start"
                )
            records = 1
        found, stop, outcome, reason, count = scan(
            data, start, position, keep=admit is not None, max_length=self.max_record_size
        )
        records += count
        if admit is not None:
            for record in found:
                admit(_origin(record, position), record.position - len(record.raw))
        if stop == len(data):
            return stop, None, records
        if outcome != NEED_DATA or len(data) - stop < 8:
            why = reason or ("a seal trailer" if outcome == SEALED else "a partial record")
            raise MirrorError(
                f"chunk at {position} is not valid records: {why} at {position + stop}"
            )
        try:
            partial = RecordInPieces.begin(
                data[stop : stop + RECORD_HEAD_MAX], position + stop, self.max_record_size
            )
        except RecordError as exc:
            raise MirrorError(
                f"chunk at {position} ends in a partial record at {position + stop}: {exc} (a"
                " record sent in pieces begins with its head, and a shorter one comes whole)"
            ) from None
        if admit is not None:
            admit(partial.origin, partial.start)
        return stop, partial.add(memoryview(data)[stop:]), records

    def sync(self) -> int | None:
        """Force what was written to disk; return the durable end."""
        pending = self.detach_sync()
        pending.run()
        return self.synced(pending)

    def detach_sync(self) -> PendingSync:
        """Take what needs forcing to disk now, as a :class:`PendingSync` whose ``run()``
        may go to another thread while this mirror goes on writing; then call
        :meth:`synced` with it."""
        pending = PendingSync(
            [os.dup(fd) for fd in self._unsynced],
            self.directory if self._new_files else None,
            self.end,
        )
        for fd in self._unsynced:
            if fd != self._fd:
                os.close(fd)  # a file sealed since the last sync: done with it
        self._unsynced.clear()
        self._new_files = False
        return pending

    def synced(self, pending: PendingSync) -> int | None:
        """Record that ``pending`` ran: its end is durable."""
        if pending.end is not None and (self.durable is None or pending.end > self.durable):
            self.durable = pending.end
        return self.durable

    def suspend(self) -> None:
        """Force what was written to disk, then let go of the current file and the
        folder's lock until the next write takes them again (without reading the copy:
        this process wrote it). For a copy idle for a while: it then holds no
        descriptor."""
        if self.suspended:
            return
        self.sync()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._lock.release()
        self.suspended = True

    def _resume(self) -> None:
        self._lock = DirectoryLock(self.directory)
        if self._file is not None:
            try:
                self._fd = os.open(self.directory / file_name(*self._file), os.O_RDWR)
            except BaseException:
                self._lock.release()
                raise
        self.suspended = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._fd >= 0:
                self.sync()
        for fd in {*self._unsynced, self._fd} - {-1}:
            os.close(fd)
        self._unsynced = []
        self._fd = -1
        self._lock.release()

    def __enter__(self) -> LogMirror:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _recover(self) -> None:
        files = list_log_files(self.directory)
        if not files:
            return
        self._file = files[-1]
        path = self.directory / file_name(*self._file)
        self._fd = os.open(path, os.O_RDWR)
        start = read_mirror_start(self.directory)
        offset = 0
        if start is not None and split_position(start)[:2] == self._file:
            offset = split_position(start)[2]  # the copy began mid-file: a hole before
        decoder = RecordDecoder(file_start(*self._file) + offset, piece_size=_RECOVER_CHUNK)
        outcome = NEED_DATA
        while outcome is NEED_DATA:
            data = os.pread(self._fd, _RECOVER_CHUNK, offset)
            if not data:
                break
            offset += len(data)
            decoder.feed(data)
            _, _, outcome, _ = decoder.next_chunk()
        self._size = split_position(decoder.position)[2]
        self.sealed = outcome is SEALED
        keep = self._size + len(SEAL_TRAILER) if self.sealed else self._size
        if keep < os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, keep)  # a torn or corrupt tail: the source sends it again
            os.fdatasync(self._fd)

    def _start_file(self, file: tuple[int, int], offset: int) -> None:
        path = self.directory / file_name(*file)
        # Opened before the current file is let go: if it cannot be (a full disk), the
        # copy stays as it was, whole, and the same chunk may come again.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        if self._fd >= 0 and self._fd not in self._unsynced:
            os.close(self._fd)
        self._fd = fd
        self._file = file
        self._size = offset
        self._partial = None
        self.sealed = False
        self._new_files = True

    def _write_at(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        if self._fd not in self._unsynced:
            self._unsynced.append(self._fd)


def _origin(record: Record, position: int) -> str:
    """A whole record's origin, for an admission check."""
    try:
        return record.origin
    except (UnicodeDecodeError, IndexError):
        raise MirrorError(
            f"chunk at {position}: the record ending at {record.position} names no readable origin"
        ) from None
