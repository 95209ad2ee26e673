"""The files of a log directory: ``log.X.Y`` files, ``.session`` and ``.lock``.

A log directory holds:

- ``log.X.Y``: the records of session X, roll Y, in write order;
- ``.session``: the current session number, ASCII decimal and a newline,
  replaced atomically each time a writer opens a new session;
- ``.lock``: held with ``flock`` by the one live writer; it names its pid.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ._errors import LogDirectoryError, PositionError
from ._position import parse_file_name

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


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync, rename, fsync the folder."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
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
