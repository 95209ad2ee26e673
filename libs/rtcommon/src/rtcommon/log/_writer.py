"""The log writer: appends records to a log directory, rolling and sealing files.

Opening a writer takes the directory's lock (a second live writer is refused),
starts a new session (``.session`` + 1, or 0 in a new directory) and creates
``log.<session>.0``. Records are buffered in memory by :meth:`LogWriter.append`
and reach the file on :meth:`LogWriter.commit` (or when the buffer fills).

A file rolls before a record would take it past the roll size: the writer
appends the seal trailer, syncs, and opens ``log.X.<Y+1>`` (or
``log.<X+1>.0`` when the roll index is exhausted). :meth:`LogWriter.close`
seals the last file too, so a reader knows every file of a cleanly closed
writer is complete.

Sync policy (when written bytes are forced to disk with ``fdatasync``):

- ``batch``: every commit; a committed record survives a power loss.
- ``interval``: at the first commit after ``sync_interval`` seconds, and at every
  roll and close; a power loss may lose up to that interval.
- ``none``: never by the writer (the OS writes back in its own time); for
  tests and data that can be rebuilt.

``at=position`` continues an existing log exactly there instead of starting a
session (the merged log after a restart: bytes after it are dropped and written
again); ``seal_on_close=False`` leaves the last file open for such a writer.

A failed write (a full disk) cuts the file back to its last whole record and
raises :class:`LogWriteError`; the records stay buffered, so a later commit can
retry them and nothing is lost or torn.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

from ._errors import LogDirectoryError, LogWriteError, RecordError, RecordTooLargeError
from ._files import (
    DirectoryLock,
    PendingSync,
    fsync_directory,
    list_log_files,
    read_session,
    write_session,
)
from ._position import (
    MAX_FILE_SIZE,
    MAX_ROLL,
    MAX_SESSION,
    file_name,
    file_start,
    next_file,
    split_position,
)
from ._record import SEAL_SIZE, SEAL_TRAILER, scan

DEFAULT_ROLL_SIZE = MAX_FILE_SIZE
MIN_ROLL_SIZE = 64
DEFAULT_BUFFER_SIZE = 1 << 20


class SyncPolicy(enum.Enum):
    BATCH = "batch"
    INTERVAL = "interval"
    NONE = "none"


class LogWriter:
    """The one writer of a log directory. Not thread-safe: callers serialise."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        roll_size: int = DEFAULT_ROLL_SIZE,
        sync: SyncPolicy | str = SyncPolicy.BATCH,
        sync_interval: float = 1.0,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        clock: Callable[[], float] = time.monotonic,
        at: int | None = None,
        seal_on_close: bool = True,
    ) -> None:
        if not MIN_ROLL_SIZE <= roll_size <= MAX_FILE_SIZE:
            raise ValueError(f"roll size {roll_size} is outside {MIN_ROLL_SIZE}..{MAX_FILE_SIZE}")
        self.directory = Path(directory)
        self.roll_size = roll_size
        self.sync_policy = SyncPolicy(sync)
        self._sync_interval = sync_interval
        self._buffer_size = buffer_size
        self._clock = clock
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._fd = -1  # -1 while open: between a sealed file and its successor (see _roll)
        self._closed = False
        self._seal_on_close = seal_on_close
        self._open_directory()
        self._lock = DirectoryLock(self.directory)
        try:
            if at is None:
                self.session = self._next_session()
                self.roll = 0
                write_session(self.directory, self.session)
                self._open_file()
            else:
                self._continue_at(at)
        except BaseException:
            self._release()
            raise
        self._last_sync = clock()

    # -- public --------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The position just after the last record appended."""
        return self._file_start + self._file_size

    @property
    def written_position(self) -> int:
        """The position up to which records are in the file (visible to readers)."""
        return self._file_start + self._file_size - self._pending_bytes

    @property
    def durable_position(self) -> int:
        """The position up to which records were last forced to disk."""
        return self._durable

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, record: bytes) -> int:
        """Buffer one encoded record; return the position just after it."""
        size = len(record)
        if self._file_size + size + SEAL_SIZE > self.roll_size:
            if size + SEAL_SIZE > self.roll_size:
                raise RecordTooLargeError(
                    f"a record of {size} bytes does not fit a file of roll size {self.roll_size}"
                )
            self._roll()
        self._pending.append(record)
        self._pending_bytes += size
        self._file_size += size
        if self._pending_bytes >= self._buffer_size:
            self._write_pending()
        return self._file_start + self._file_size

    def append_run(self, data: bytes) -> int:
        """Buffer whole records given as one run of bytes (as a :class:`Chunk` holds them);
        files roll between records exactly as appending them one by one would."""
        if self._file_size + len(data) + SEAL_SIZE <= self.roll_size:
            self._pending.append(data)
            self._pending_bytes += len(data)
            self._file_size += len(data)
            if self._pending_bytes >= self._buffer_size:
                self._write_pending()
            return self._file_start + self._file_size
        records, stop, _, reason, _ = scan(data, 0, 0)
        if stop != len(data):
            raise RecordError(f"not a run of whole valid records: {reason or 'partial record'}")
        for record in records:
            self.append(record.raw)
        return self.position

    def commit(self) -> int:
        """Write what is buffered and sync by policy; return the position written to."""
        self._check_open()
        self._write_pending()
        if self.sync_policy is SyncPolicy.BATCH or (
            self.sync_policy is SyncPolicy.INTERVAL
            and self._clock() - self._last_sync >= self._sync_interval
        ):
            self._sync()
        return self.written_position

    def sync(self) -> int:
        """Write what is buffered and force it to disk, whatever the policy."""
        self._check_open()
        self._write_pending()
        self._sync()
        return self._durable

    def detach_sync(self) -> PendingSync:
        """Write what is buffered and take what needs forcing to disk as a
        :class:`PendingSync`, whose ``run()`` may go to another thread while this writer
        goes on appending; then call :meth:`synced` with it."""
        self._check_open()
        self._write_pending()
        return PendingSync([os.dup(self._fd)], None, self.written_position)

    def synced(self, pending: PendingSync) -> int:
        """Record that ``pending`` ran: its end is durable."""
        if pending.end is not None and pending.end > self._durable:
            self._durable = pending.end
        return self._durable

    def close(self) -> None:
        """Commit, seal the last file (unless ``seal_on_close=False``), release the directory."""
        if self._closed:
            return
        # A failed write leaves the writer open, records buffered, so close can be retried.
        self._write_pending()
        if self._seal_on_close:
            self._seal()
        else:
            if self.sync_policy is not SyncPolicy.NONE:
                self._sync()
        self._release()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LogWriter({str(self.directory)!r}, session={self.session}, roll={self.roll})"

    # -- files ---------------------------------------------------------------------------

    def _open_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise LogDirectoryError(f"{self.directory} exists and is not a directory") from exc
        except OSError as exc:
            raise LogDirectoryError(f"cannot create log directory {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise LogDirectoryError(f"log directory {self.directory} is not writable")

    def _next_session(self) -> int:
        stored = read_session(self.directory)
        files = list_log_files(self.directory)
        latest = max(stored if stored is not None else -1, files[-1][0] if files else -1)
        if latest >= MAX_SESSION:
            raise LogDirectoryError(f"{self.directory} has used every session number")
        return latest + 1

    def _continue_at(self, position: int) -> None:
        # A log that must go on where a checkpoint says it was (the merged log after a
        # restart): bytes written after that point are dropped, to be written again.
        self.session, self.roll, offset = split_position(position)
        current = (self.session, self.roll)
        for later in [f for f in list_log_files(self.directory) if f > current]:
            (self.directory / file_name(*later)).unlink()
        path = self.directory / file_name(*current)
        size = path.stat().st_size if path.exists() else 0
        if size < offset:
            raise LogDirectoryError(
                f"cannot continue {path} at offset {offset}: the file holds only {size} bytes"
            )
        if (read_session(self.directory) or 0) < self.session or not path.exists():
            write_session(self.directory, self.session)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.ftruncate(self._fd, offset)
        os.fsync(self._fd)
        fsync_directory(self.directory)
        self._file_start = file_start(self.session, self.roll)
        self._file_size = offset
        self._durable = self.position

    def _open_file(self) -> None:
        path = self.directory / file_name(self.session, self.roll)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError as exc:
            raise LogDirectoryError(
                f"{path} already exists: the directory is inconsistent"
            ) from exc
        fsync_directory(self.directory)
        self._file_start = file_start(self.session, self.roll)
        self._file_size = 0
        self._durable = self._file_start

    def _roll(self) -> None:
        # Until the sealed file's successor is open, the writer is between files (_fd is
        # -1): records are buffered at the successor's positions and the next write
        # opens it, so a failure here (a full disk) loses nothing and can be retried.
        self._write_pending()
        self._seal()
        new_session = self.roll == MAX_ROLL
        self.session, self.roll = next_file(self.session, self.roll)
        self._file_start, self._file_size = file_start(self.session, self.roll), 0
        self._durable = self._file_start
        try:
            if new_session:
                write_session(self.directory, self.session)
            self._open_file()
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _seal(self) -> None:
        self._write(SEAL_TRAILER)
        if self.sync_policy is not SyncPolicy.NONE:
            self._sync()
        os.close(self._fd)
        self._fd = -1

    def _release(self) -> None:
        self._closed = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._lock.release()

    # -- bytes ---------------------------------------------------------------------------

    def _write_pending(self) -> None:
        if not self._pending:
            return
        self._write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    def _write(self, data: bytes) -> None:
        self._check_open()
        intact = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # Cut back to the last whole record so the file never holds a torn one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, intact)
            raise self._write_error(exc) from exc

    def _sync(self) -> None:
        os.fdatasync(self._fd)
        self._last_sync = self._clock()
        self._durable = self.written_position

    def _check_open(self) -> None:
        if self._closed:
            raise LogWriteError(f"the writer of {self.directory} is closed")
        if self._fd < 0:  # between files after a roll that could not open the next one
            try:
                self._open_file()
            except OSError as exc:
                raise self._write_error(exc) from exc

    def _write_error(self, exc: OSError) -> LogWriteError:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
        return LogWriteError(
            f"cannot write {self.directory / file_name(self.session, self.roll)}: {reason};"
            " the records stay buffered and a later commit retries them"
        )
