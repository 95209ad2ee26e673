"""The files of a log directory: ``log.X.Y`` files, ``.session`` and ``.lock``.

A log directory holds:

- ``log.X.Y``: the records of session X, roll Y, in write order;
- a file emptied with the sticky bit set was garbage-collected (archived) once every
  node was done with it (:func:`archive_log_files`);
- ``.session``: the current session number, ASCII decimal and a newline,
  replaced atomically each time a writer opens a new session;
- ``.lock``: held with ``flock`` by the one live writer; it names its pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import stat
from pathlib import Path

from ._errors import LogDirectoryError, LogLockedError, PositionError
from ._position import file_name, file_start, next_file, parse_file_name, split_position

SESSION_FILE = ".session"
LOCK_FILE = ".lock"


def list_log_files(directory: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """``(session, roll)`` of every ``log.X.Y`` file in ``directory``, in log order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LogDirectoryError(f"cannot list log directory {directory}: {exc}") from exc
    files = []
    for name in names:
        if name.startswith("log."):
            with contextlib.suppress(PositionError):
                files.append(parse_file_name(name))
    files.sort()
    return files


def read_session(directory: str | os.PathLike[str]) -> int | None:
    """The session number stored in ``.session``, or None if there is none."""
    path = Path(directory, SESSION_FILE)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return int(text.strip())
    except ValueError as exc:
        raise LogDirectoryError(f"{path} does not hold a session number: {text[:40]!r}") from exc


def write_session(directory: str | os.PathLike[str], session: int) -> None:
    """Store ``session`` in ``.session``, atomically and durably."""
    write_file_atomically(Path(directory, SESSION_FILE), f"{session}\n".encode())


def write_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync, rename, fsync the folder.
    A new file gets ``mode`` (0o600 for a secret)."""
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # a leftover keeps its mode: a secret must never be readable
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the creation, rename or removal of files in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryLock:
    """The exclusive ``flock`` on a directory's ``.lock`` (or ``name``), naming the holder's
    pid (a refusal's ``holder``).

    The kernel drops the lock when its holder dies, so a crashed writer never
    leaves a directory locked. With ``wait`` it waits for the lock rather than refuse
    (short critical sections of several processes); as a context manager it lets go
    on exit.
    """

    def __init__(
        self, directory: str | os.PathLike[str], name: str = LOCK_FILE, *, wait: bool = False
    ) -> None:
        self.directory = Path(directory)
        self._fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
                error = LogLockedError(
                    f"log directory {self.directory} is in use by another writer"
                    f" (pid {holder or 'unknown'}); only one process may write a log"
                    " directory at a time"
                )
                error.holder = holder or "unknown"
                raise error from None
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            self.release()  # the descriptor, and with it any lock taken
            raise

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class PendingSync:
    """Descriptors (duplicated, so they outlive the mirror's own) and a directory to force
    to disk; when that is done, everything before ``end`` is durable."""

    __slots__ = ("directory", "end", "fds")

    def __init__(self, fds: list[int], directory: Path | None, end: int | None) -> None:
        self.fds = fds
        self.directory = directory
        self.end = end

    def run(self) -> None:
        try:
            for fd in self.fds:
                os.fdatasync(fd)
            if self.directory is not None:
                fsync_directory(self.directory)
        finally:
            for fd in self.fds:
                os.close(fd)
            self.fds = []


def files_before(directory: str | os.PathLike[str], position: int) -> list[Path]:
    """The whole files of a log before ``position``: each followed by a file that starts
    at or before it. The last file is never one."""
    directory = Path(directory)
    paths = []
    for file, following in itertools.pairwise(list_log_files(directory)):
        if file_start(*following) > position:
            break
        paths.append(directory / file_name(*file))
    return paths


def archive_log_files(directory: str | os.PathLike[str], before: int) -> list[Path]:
    """Garbage-collect the whole files of a log before position ``before``: each file
    followed by a file that starts at or before it gets the sticky bit (``-rw-r--r-T``
    in ``ls -l``: RT's mark of a collected file) and is emptied in place, in that order,
    so a reader never takes a file being emptied for an ordinary empty one. The last
    file is never touched. Returns the files this call emptied, in log order."""
    emptied = []
    for path in files_before(directory, before):
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            continue  # removed meanwhile: nothing left to give back
        try:
            info = os.fstat(fd)
            if info.st_mode & stat.S_ISVTX and not info.st_size:
                continue  # collected already
            os.fchmod(fd, stat.S_IMODE(info.st_mode) | stat.S_ISVTX)
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        emptied.append(path)
    return emptied


def is_collected(path: str | os.PathLike[str]) -> bool:
    """Whether the log file at ``path`` was garbage-collected: it has the sticky bit (it is
    empty, or being emptied; a hard reset empties files without it). A missing file is
    not."""
    try:
        return bool(os.stat(path).st_mode & stat.S_ISVTX)
    except FileNotFoundError:
        return False


def collected_end(directory: str | os.PathLike[str]) -> int:
    """The start of the file after the last collected one: no record before it is held
    (0 when nothing was collected)."""
    directory = Path(directory)
    files = list_log_files(directory)
    for later, earlier in itertools.pairwise(reversed(files)):
        if is_collected(directory / file_name(*earlier)):
            return file_start(*later)
    return 0


def collect_copy(directory: str | os.PathLike[str], position: int) -> list[Path]:
    """Make a copy go on at ``position`` (a file's start) past records its source
    collected before the copy had them: the files between the copy's last one and
    ``position``'s are created empty with the sticky bit (a copy keeps its source's file
    names, and a reader that comes to them reports what it missed as a ``collected``
    event), then ``position``'s file, empty, for the copy to go on in. The files the copy
    holds are left as they are: what is in them is still to be read. Call it with no
    writer open on the copy. Returns the files created collected."""
    directory = Path(directory)
    session, roll, offset = split_position(position)
    if offset:
        raise ValueError(f"a copy goes on past collected files at a file's start, not {position}")
    target = (session, roll)
    files = list_log_files(directory)
    last = files[-1] if files else None
    created = []
    file = next_file(*last) if last is not None and last[0] == session else (session, 0)
    while file < target:
        if file not in files:
            created.append(_create_collected(directory / file_name(*file)))
        file = next_file(*file)
    os.close(os.open(directory / file_name(*target), os.O_WRONLY | os.O_CREAT, 0o644))
    fsync_directory(directory)
    return created


def _create_collected(path: Path) -> Path:
    """An empty file at ``path`` that appears with the sticky bit already set."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644 | stat.S_ISVTX)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path


def folder_bytes(folder: str | os.PathLike[str]) -> int:
    """The bytes of the files under ``folder``, subfolders included (files that vanish
    meanwhile count 0): a node's disk use, a benchmark's."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir(follow_symlinks=False):
                    total += folder_bytes(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total
