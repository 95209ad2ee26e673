"""The cluster's session number: the session its merged log is in, kept outside the nodes.

A hard reset raises it by one; every node begins its merged log in it
(``log.<session>.0``), so it must outlive the wipe of the nodes' volumes: a file
beside the nodes' data locally (``cluster.json``'s ``session_file``), a ConfigMap in
Kubernetes. Both sit behind :class:`SessionStore`.

Raising is idempotent (:meth:`SessionStore.raise_to` never lowers it), so every node
taking part in one reset may raise it to the same number without coordination, and a
node that missed a reset sees, by comparing its own data's session
(:func:`node_session`) with the store's, that it must be wiped before it serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol

from .cluster import ClusterSpec
from .errors import RTError
from .log import (
    MAX_SESSION,
    LogDirectoryError,
    file_name,
    list_log_files,
    read_session,
    write_file_atomically,
)

__all__ = [
    "FileSessionStore",
    "MissedResetError",
    "NoSessionStore",
    "SessionStore",
    "SessionStoreError",
    "holds_data",
    "holds_merged_records",
    "missed_reset",
    "node_session",
    "session_store",
]


class SessionStoreError(RTError):
    """The session number cannot be read or written."""


class SessionStore(Protocol):
    """Where a cluster keeps its session number."""

    def read(self) -> int:
        """The current session (0 if none was ever stored)."""
        ...

    def raise_to(self, session: int) -> int:
        """Store ``session`` if it is above the current one; return the session now held."""
        ...

    def check(self) -> None:
        """Raise :class:`SessionStoreError` if the session could not be raised now."""
        ...


class FileSessionStore:
    """The session number in a file: ASCII decimal and a newline, replaced atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileSessionStore({str(self.path)!r})"

    def read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SessionStoreError(f"cannot read the session file {self.path}: {exc}") from exc
        try:
            session = int(text or 0)
        except ValueError:
            raise SessionStoreError(
                f"the session file {self.path} does not hold a session number: {text[:40]!r}"
            ) from None
        if not 0 <= session <= MAX_SESSION:
            raise SessionStoreError(f"the session file {self.path} holds {session}, out of range")
        return session

    def raise_to(self, session: int) -> int:
        if not 0 <= session <= MAX_SESSION:
            raise SessionStoreError(f"session {session} is outside 0..{MAX_SESSION}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Nodes on one machine share the file: the lock makes read-then-write one step.
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                current = self.read()
                if session > current:
                    write_file_atomically(self.path, b"%d\n" % session)
                    return session
                return current
        except OSError as exc:
            raise SessionStoreError(f"cannot write the session file {self.path}: {exc}") from exc

    def check(self) -> None:
        self.read()
        folder = self.path.parent
        if not os.access(folder, os.W_OK) or (
            self.path.exists() and not os.access(self.path, os.W_OK)
        ):
            raise SessionStoreError(f"the session file {self.path} cannot be written")


class NoSessionStore:
    """A cluster described without a session file: always session 0, never reset."""

    def read(self) -> int:
        return 0

    def raise_to(self, session: int) -> int:
        self.check()
        return 0

    def check(self) -> None:
        raise SessionStoreError(
            "the cluster description names no session_file, where a hard reset keeps the"
            " session number"
        )


def session_store(cluster: ClusterSpec) -> SessionStore:
    """The store ``cluster`` names."""
    if not cluster.session_file:
        return NoSessionStore()
    return FileSessionStore(cluster.session_file)


class MissedResetError(SessionStoreError):
    """A node's volume holds data of a session the cluster has reset since."""


def node_session(data: str | os.PathLike[str]) -> int | None:
    """The session of the merged log in a node's volume (``s/out/.session``), or None
    for a node that never wrote one."""
    try:
        return read_session(Path(data) / "s" / "out")
    except LogDirectoryError as exc:
        raise SessionStoreError(str(exc)) from exc


def missed_reset(data: str | os.PathLike[str], session: int) -> int | None:
    """The older session whose data the node volume ``data`` still holds while the
    cluster is in ``session`` (it was down or cut off during a hard reset), or None.

    A wiped volume (no state, merged log files emptied) holds nothing to fear, whatever
    its merged log's ``.session`` still says."""
    own = node_session(data)
    if own is None or own >= session:
        return None
    volume = Path(data) / "s"
    return own if _holds_anything(volume / "state") or holds_merged_records(data) else None


def holds_merged_records(data: str | os.PathLike[str]) -> bool:
    """Whether the merged log of the node volume ``data`` holds any bytes."""
    out = Path(data) / "s" / "out"
    for file in list_log_files(out):
        with contextlib.suppress(FileNotFoundError):  # a running node may remove a file
            if (out / file_name(*file)).stat().st_size:
                return True
    return False


def holds_data(data: str | os.PathLike[str]) -> bool:
    """Whether the node volume ``data`` holds input copies or merged records: the node
    ran before (so it may have voted, and must not start as if new)."""
    return _holds_anything(Path(data) / "s" / "in") or holds_merged_records(data)


def _holds_anything(directory: Path) -> bool:
    return directory.is_dir() and any(directory.iterdir())
