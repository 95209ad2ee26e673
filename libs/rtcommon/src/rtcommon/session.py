"""The cluster's session number: the session its merged log is in, kept outside the nodes.

A hard reset raises it by one; every node begins its merged log in it
(``log.<session>.0``), so it must outlive the wipe of the nodes' volumes: a file
beside the nodes' data locally (``cluster.json``'s ``session_file``), a ConfigMap in
Kubernetes (``session_configmap``). Both sit behind :class:`SessionStore`.

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
from .kube import core_api, namespaced
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
    "KubernetesSessionStore",
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


class KubernetesSessionStore:
    """The session number in a ConfigMap (key ``session``), through the Kubernetes API
    with the official client: the pod's service account (in-cluster config) unless a
    client ``configuration`` is given. Raising is a compare-and-swap on the ConfigMap's
    ``resourceVersion``, retried on conflict, so all nodes of one reset may raise it at
    once; a missing ConfigMap is session 0, and raising creates it."""

    KEY = "session"
    ATTEMPTS = 20

    def __init__(self, configmap: str, configuration: object = None) -> None:
        """``configmap``: ``namespace/name`` or ``name`` (``rtcommon.kube.namespaced``)."""
        self._client, self.api = core_api(configuration)
        self.namespace, self.name = namespaced(configmap)

    def __repr__(self) -> str:
        return f"KubernetesSessionStore({self.namespace}/{self.name})"

    def read(self) -> int:
        return self._parse(self._get())

    def raise_to(self, session: int) -> int:
        if not 0 <= session <= MAX_SESSION:
            raise SessionStoreError(f"session {session} is outside 0..{MAX_SESSION}")
        for _ in range(self.ATTEMPTS):
            held = self._get()
            current = self._parse(held)
            if session <= current:
                return current
            try:
                if held is None:
                    body = self._client.V1ConfigMap(
                        metadata=self._client.V1ObjectMeta(name=self.name),
                        data={self.KEY: str(session)},
                    )
                    self.api.create_namespaced_config_map(self.namespace, body)
                else:
                    held.data = {**(held.data or {}), self.KEY: str(session)}
                    # held.metadata.resource_version makes this a compare-and-swap
                    self.api.replace_namespaced_config_map(self.name, self.namespace, held)
                return session
            except self._client.ApiException as exc:
                if exc.status != 409:  # 409: another node changed it first; read again
                    raise self._error("write", exc) from exc
        raise SessionStoreError(f"{self}: still conflicting after {self.ATTEMPTS} attempts")

    def check(self) -> None:
        """The ConfigMap can be read, and written (a dry run)."""
        held = self._get()
        if held is None:
            return  # created at the first reset; the Role must allow create
        try:
            self.api.replace_namespaced_config_map(self.name, self.namespace, held, dry_run="All")
        except self._client.ApiException as exc:
            raise self._error("write", exc) from exc

    def _get(self):
        try:
            return self.api.read_namespaced_config_map(self.name, self.namespace)
        except self._client.ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error("read", exc) from exc
        except Exception as exc:  # urllib3's connection errors: the API server unreachable
            raise SessionStoreError(f"cannot reach the Kubernetes API for {self}: {exc}") from exc

    def _parse(self, held) -> int:
        text = ((held.data or {}).get(self.KEY, "0") if held is not None else "0").strip()
        try:
            session = int(text or 0)
        except ValueError:
            raise SessionStoreError(f"{self} holds no session number: {text[:40]!r}") from None
        if not 0 <= session <= MAX_SESSION:
            raise SessionStoreError(f"{self} holds session {session}, out of range")
        return session

    def _error(self, what: str, exc: Exception) -> SessionStoreError:
        status = getattr(exc, "status", "?")
        reason = getattr(exc, "reason", exc)
        return SessionStoreError(f"cannot {what} {self}: {status} {reason}")


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
    """The store ``cluster`` names: a ConfigMap (``namespace/name`` or ``name``), else a
    file, else none."""
    if cluster.session_configmap:
        return KubernetesSessionStore(cluster.session_configmap)
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
