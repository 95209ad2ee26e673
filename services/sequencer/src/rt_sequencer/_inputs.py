"""Input copies: each publisher stream's log, mirrored byte for byte under ``s/in``.

A stream is one publisher log directory (``<host>.<topic>``); the node keeps a
:class:`~rtcommon.log.LogMirror` of it in ``s/in/<stream>/``, fed by the
publisher's push and by the backup fetch from peers. Writes land in the page
cache at once; one syncer forces every written stream to disk in a worker
thread (group commit), and only then does a stream's ``held`` position move:
the position before which this node holds every record durably. Pushers,
gossip and the applier wait on that.

Each input copy also keeps its stream's topic (``.topic`` beside the log files), as
the publisher first declared it: deduplication is per topic, and a stream never
changes topic; and the id of the publisher's log it belongs to (``.owner``): a push of
the same name from another log is refused.

A copy no push or fetch wrote for ``IDLE_SECONDS`` lets go of its file and its folder's
lock (``LogMirror.suspend``) until the next write: a node with many idle streams holds
no descriptor for them.

Once every node is done with a stream's bytes before a position (the merge core's
``Archive``), the copy's whole files before it are deleted
(:meth:`InputStream.drop_files_before`, in a worker thread)
and ``archived`` tells the publisher it may drop its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rtcommon.log import (
    MAX_RECORD_SIZE,
    Admit,
    Chunk,
    LogMirror,
    SyncPolicy,
    files_before,
    fsync_directory,
)
from rtcommon.streams import (
    check_stream_name,
    check_topic,
    is_stream_name,
    read_owner,
    read_topic,
    write_owner,
    write_topic,
)

from ._metrics import FSYNC_SECONDS
from ._signal import Signal

__all__ = ["InputStore", "InputStream", "OwnerConflictError", "TopicConflictError"]

log = logging.getLogger(__name__)


class TopicConflictError(ValueError):
    """A stream opened with another topic than the one it has."""


class OwnerConflictError(ValueError):
    """A stream pushed from another publisher's log than the one it belongs to."""


class InputStream:
    """One stream's input copy on this node."""

    def __init__(self, store: InputStore, name: str, topic: str | None = None) -> None:
        self.name = name
        self.directory = store.root / name
        self.mirror = LogMirror(
            self.directory, sync=SyncPolicy.NONE, max_record_size=store.max_record_size
        )
        #: None until a push or a fetch names it (a copy whose topic file never made it
        #: to disk is neither gossiped nor proposed until then: topics are never guessed).
        self.topic: str | None = read_topic(self.directory)
        #: the id of the publisher's log this stream belongs to (None: not known yet)
        self.owner: str | None = read_owner(self.directory)
        if topic is not None:
            self.claim_topic(topic)
        self._store = store
        self.written_at = time.monotonic()  #: when a push or fetch last wrote here
        self.held_changed = Signal()  #: fires when ``held`` or ``archived`` moves
        #: every node is done with this stream before this position (0: not known yet)
        self.archived = 0

    @property
    def held(self) -> int:
        """Every record before this position is on this node's disk (0: nothing yet)."""
        return self.mirror.durable or 0

    @property
    def written(self) -> int:
        """Every record before this position is written here (maybe not yet durable)."""
        return self.mirror.end or 0

    @property
    def received(self) -> int:
        """Bytes before this position are written here, a record still coming in pieces
        included."""
        return self.mirror.received or 0

    def claim_topic(self, topic: str) -> None:
        """Record ``topic`` as this stream's; refuse another topic than the recorded one."""
        if self.topic is None:  # read from the directory when the stream was opened
            write_topic(self.directory, check_topic(topic))
            self.topic = topic
        elif self.topic != topic:
            raise TopicConflictError(
                f"stream {self.name} publishes on topic {self.topic!r}, not {topic!r}: a"
                " publisher on another topic needs its own log directory"
            )

    def claim_owner(self, owner: str) -> None:
        """Record ``owner`` as the log this stream belongs to; refuse another one. An
        empty ``owner`` (a client that sends none) is not checked."""
        if not owner or owner == self.owner:
            return
        if self.owner is not None:
            raise OwnerConflictError(
                f"stream {self.name} belongs to another publisher's log: a second publisher"
                " (another host of the same name, or a log folder copied) pushes under its"
                " name; give each publisher its own log folder or publisher id"
            )
        write_owner(self.directory, owner)
        self.owner = owner

    def write(self, chunk: Chunk, *, admit: Admit | None = None) -> None:
        """Add a chunk (from a push or a fetch; ``admit``: see LogMirror.write); it
        becomes held at the next group sync."""
        before = self.mirror.end
        self.written_at = time.monotonic()
        self.mirror.write(chunk, admit=admit)
        if self.mirror.end != before or chunk.sealed:
            self._store.mark_dirty(self)

    def drop_files_before(self, position: int) -> int:
        """Delete this copy's whole files before ``position`` (each followed by a file
        that starts at or before it; the file being written is never one). Only files:
        safe in a worker thread. Returns the bytes freed."""
        freed = 0
        for path in files_before(self.directory, position):
            with contextlib.suppress(FileNotFoundError):  # a drop before this one
                freed += path.stat().st_size
                path.unlink()
        if freed:
            fsync_directory(self.directory)
        return freed

    def mark_archived(self, position: int) -> None:
        """Every node is done with this stream before ``position``: tell the publisher."""
        if position > self.archived:
            self.archived = position
            self.held_changed.fire()

    def suspend(self, why: str) -> None:
        """Let go of the copy's file until the next write (LogMirror.suspend). A failed
        sync is said (``why`` the copy goes); the copy then stays open, to be let go of
        later."""
        try:
            self.mirror.suspend()
        except OSError as exc:
            log.warning("letting go of the %s input copy of %s: %s", why, self.name, exc)

    def close(self) -> None:
        self.mirror.close()


class InputStore:
    """Every stream's input copy under ``s/in``, and the group syncer."""

    #: A copy not written for this long holds no descriptor until its next write.
    IDLE_SECONDS = 30.0

    def __init__(
        self,
        root: Path,
        on_write: Callable[[str], None] | None = None,
        *,
        max_record_size: int = MAX_RECORD_SIZE,
    ) -> None:
        """``max_record_size``: a push or fetch holding a larger record is refused."""
        self.root = root
        self.max_record_size = max_record_size
        self._on_write = on_write  #: told the name of each stream written
        root.mkdir(parents=True, exist_ok=True)
        self.streams: dict[str, InputStream] = {}
        # Every stream's held position and every known topic, kept as they move: the
        # node reports them after every group sync, and with many streams a walk over
        # them all each time would cost more than the sync.
        self._held: dict[str, int] = {}
        self._topics: dict[str, str] = {}
        self._dirty: set[InputStream] = set()
        self._syncing: set[InputStream] = set()  # in the syncer's worker thread now
        self._dirty_event = asyncio.Event()
        self.written = Signal()  #: fires when any stream is written (the fetch server follows)
        self.changed = Signal()  #: fires when any held position moves
        for path in sorted(root.iterdir()):
            if path.is_dir() and is_stream_name(path.name):
                self._track(InputStream(self, path.name))

    def open(self, name: str, topic: str | None = None) -> InputStream:
        """The input copy of stream ``name``, created if new; ``topic`` is claimed for it
        (TopicConflictError if it has another)."""
        stream = self.streams.get(check_stream_name(name))
        if stream is None:
            stream = self._track(InputStream(self, name, topic))
            log.info("new input stream %s on topic %s", name, stream.topic)
        elif topic is not None:
            stream.claim_topic(topic)
            self._topics[name] = topic
        return stream

    def _track(self, stream: InputStream) -> InputStream:
        self.streams[stream.name] = stream
        self._held[stream.name] = stream.held
        if stream.topic is not None:
            self._topics[stream.name] = stream.topic
        return stream

    def discard(self, name: str) -> None:
        """Forget stream ``name`` and delete its folder: a new stream whose first push was
        refused before anything was written (no empty folder piles up)."""
        stream = self.streams.pop(name, None)
        if stream is None:
            return
        self._held.pop(name, None)
        self._topics.pop(name, None)
        self._dirty.discard(stream)
        stream.close()
        shutil.rmtree(stream.directory, ignore_errors=True)
        log.info("dropped new input stream %s: its first push was refused", name)

    def held(self) -> dict[str, int]:
        """Every stream's held position (a copy)."""
        return dict(self._held)

    def topics(self) -> dict[str, str]:
        """The topic of every stream whose topic is known (a copy)."""
        return dict(self._topics)

    def mark_dirty(self, stream: InputStream) -> None:
        self._dirty.add(stream)
        self._dirty_event.set()
        self.written.fire()
        if self._on_write is not None:
            self._on_write(stream.name)

    async def run_syncer(self) -> None:
        """Force written streams to disk, many at once, and move their held positions."""
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            batch, self._dirty = self._dirty, set()
            pending = [(stream, stream.mirror.detach_sync()) for stream in batch]
            self._syncing = batch
            started = time.perf_counter()
            try:
                await asyncio.to_thread(_run_all, [p for _, p in pending])
            finally:
                self._syncing = set()
            FSYNC_SECONDS.record(time.perf_counter() - started, {"what": "inputs"})
            for stream, sync in pending:
                stream.mirror.synced(sync)
                if self.streams.get(stream.name) is stream:  # not discarded meanwhile
                    self._held[stream.name] = stream.held
                stream.held_changed.fire()
            self.changed.fire()

    def suspend_idle(self, now: float) -> int:
        """Suspend the copies idle at ``now`` (not written for ``IDLE_SECONDS``, not
        being synced); how many were. The node calls this every few seconds."""
        busy = self._dirty | self._syncing
        idle = [
            stream
            for stream in self.streams.values()
            if not stream.mirror.suspended
            and stream not in busy
            and now - stream.written_at >= self.IDLE_SECONDS
        ]
        for stream in idle:
            stream.suspend("idle")
        return len(idle)

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()


def _run_all(pending: list) -> None:
    for sync in pending:
        sync.run()
