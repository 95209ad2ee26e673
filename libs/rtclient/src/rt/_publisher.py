"""``rt.Publisher``: appends messages to a local log and replicates it to the cluster.

A publisher owns one log directory (DESIGN sections 4 and 11):

- ``topic`` an absolute path: that directory, and no replication at all;
- otherwise ``<parent>/<publisher_id or hostname>.<topic>/``, where ``<parent>`` is
  ``log_dir`` if given, else the cluster's own folder under ``$RT_LOG_PATH``
  (``<cluster name>-<cluster id>``: a new cluster never gets an old one's log). The
  folder records the cluster it was written for, and another cluster refuses it
  (``rtcommon.cluster.ClusterMismatchError``). The directory's name is the stream's name
  on the nodes, so a topic ending in ``.dedup`` makes a deduplicated stream. With a
  ``log_dir`` and no ``publisher_id``, the id is the hostname and a short hash of
  ``log_dir``: publishers on one host with their own log folders never share a stream,
  and a publisher restarted on the same folder continues its own.

Opening takes the directory's lock (a second live publisher on it is refused with
:class:`rtcommon.log.LogLockedError`) and starts a new session file. :meth:`Publisher.publish`
encodes a message and appends it to the writer's buffer; a committer thread writes the
buffer out (and fsyncs it, per the sync policy) about every millisecond while there is
data, at once past ``COMMIT_NOW_BYTES``, and then wakes the replicator. Throughput comes
from that batching; latency stays about a millisecond or two.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rtcommon import env
from rtcommon.cluster import ClusterSpec, claim_for_cluster
from rtcommon.errors import RTError
from rtcommon.log import (
    SEAL_SIZE,
    Codec,
    LogWriteError,
    LogWriter,
    RecordTooLargeError,
    SyncPolicy,
    decode_payload,
    encode_message,
    encode_record,
    message_tags,
)
from rtcommon.replication import Replicator
from rtcommon.streams import (
    EXTERNAL_PREFIX,
    check_stream_name,
    folder_publisher_id,
    write_topic,
)

from ._cluster import Cluster, ClusterLike
from ._external import Enrolment, EnrolmentError
from ._tracing import BatchTracer

__all__ = [
    "COMMIT_INTERVAL",
    "COMMIT_NOW_BYTES",
    "DEFAULT_CLOSE_TIMEOUT",
    "IdSequenceError",
    "Publisher",
]

log = logging.getLogger("rt.publisher")

#: The committer gathers records this long after the first one arrives (seconds)...
COMMIT_INTERVAL = 0.001
#: ...and then, while the batch it wrote before is still on its way to a quorum, goes on
#: gathering until this long after that commit. Every commit costs an fsync here and a
#: round of messages through every node: a cluster that keeps up gets each batch at once,
#: a busy one fewer and larger batches, rather than a queue of tiny ones (on two cores,
#: a fixed 4 ms spacing kept the sequencers busy enough to double the latency).
COMMIT_SPACING = 0.016
#: A buffer this large is written out at once, without waiting for the interval.
COMMIT_NOW_BYTES = 256 << 10
#: publish_many takes the lock once for this many messages.
MANY_PER_LOCK = 1000
#: How long close() waits for a quorum to hold everything published.
DEFAULT_CLOSE_TIMEOUT = 60.0
#: How long close() goes on sending the sealed end of the log to nodes still connected.
CLOSE_DRAIN_TIMEOUT = 5.0
#: After a failed write (a full disk), the committer tries again this often.
RETRY_WRITE_INTERVAL = 0.1


class IdSequenceError(RTError, ValueError):
    """A message id that breaks the rule: per origin, ``abs(id)`` rises by one."""


def _check_id(message_id: int, last: int | None, origin: str) -> int:
    """``message_id`` if it may follow an origin's last ``abs(id)``, else raise."""
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise IdSequenceError(f"a message id is an integer, not {message_id!r}")
    if message_id == 0:
        raise IdSequenceError(f"message id 0 for origin {origin!r}: ids start at 1 or -1")
    if last is not None and abs(message_id) != last + 1:
        raise IdSequenceError(
            f"message id {message_id} for origin {origin!r} after {last}: the distance of"
            f" ids from zero must rise by one (next is {last + 1} or {-(last + 1)})"
        )
    return message_id


def publisher_directory(
    topic: str,
    log_dir: str | os.PathLike[str] | None = None,
    publisher_id: str | None = None,
    cluster: ClusterSpec | None = None,
    *,
    host: str | None = None,
) -> tuple[Path, bool]:
    """The log directory of a publisher on ``topic`` to ``cluster``, and whether it is
    replicated. ``host``: the id of this host's publishers (default its host name; a
    publisher certificate's under ``publisher_tls``), for those given no ``publisher_id``."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"a topic is a non-empty string, not {topic!r}")
    if os.path.isabs(topic):
        return Path(topic), False
    if log_dir is not None:
        parent = Path(log_dir)
    else:
        log_path = env.settings().log_path
        parent = cluster.client_folder(log_path) if cluster is not None else log_path
    if publisher_id is None:
        publisher_id = host or env.hostname()
        if log_dir is not None:
            publisher_id = folder_publisher_id(publisher_id, parent)
    return parent / check_stream_name(f"{publisher_id}.{topic}"), True


class Publisher:
    """Publishes messages on ``topic``: a local log first, replicated to ``cluster``.

    ``cluster`` is an :class:`rt.Cluster`, a ``ClusterSpec``, or a list of node
    addresses; it may be None only when ``topic`` is an absolute path. ``codec`` is
    ``"msgpack"`` (any msgpack-representable object) or ``"raw"`` (bytes). ``sync`` is
    the local log's sync policy: ``"batch"`` (fsync every commit), ``"interval"`` or
    ``"none"``. ``roll_size`` defaults to ``RT_ROLL_SIZE`` (else 1 GiB).

    Message ids: unless ``publish`` is given one, a message's id is one more than the
    absolute value of the last id this publisher recorded for its origin, starting at
    1 for each origin. An explicit id follows RT's rule: per origin, the distance of
    ids from zero rises by one (``1 -2 3 4`` is valid, ``1 2 -2 4`` is not), from any
    non-zero first id; one that breaks it raises :class:`IdSequenceError` and nothing is
    written. So a restarted publisher numbers from 1 again (or from where its caller's
    checkpoint says), which is what a ``.dedup`` topic needs when the restarted
    publisher sends the same messages again.

    Use it as a context manager, or call :meth:`close`: a publisher must not go away
    before a quorum holds what it published. Publishers still open when the
    interpreter exits are closed then.
    """

    def __init__(
        self,
        cluster: Cluster | ClusterSpec | list[str] | tuple[str, ...] | None,
        topic: str,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        origin: str | None = None,
        codec: str | Codec = "msgpack",
        publisher_id: str | None = None,
        roll_size: int | None = None,
        sync: str | SyncPolicy = "batch",
    ) -> None:
        self.topic = topic
        local_only = isinstance(topic, str) and os.path.isabs(topic)
        reached = None if local_only else _cluster(cluster)
        spec = reached.spec if reached is not None else None
        #: the one origin an external publisher's records may name (the nodes check)
        self._only_origin: str | None = None
        if reached is not None and reached.enrolment is not None:
            publisher_id = _enrolled_publisher(reached.enrolment, topic, publisher_id)
            self._only_origin = reached.enrolment.name
            if origin not in (None, self._only_origin):
                raise ValueError(f"an external publisher's origin is {self._only_origin!r}")
            origin = self._only_origin
        host = reached.certified_publisher(publisher_id) if reached is not None else None
        self.directory, replicate = publisher_directory(
            topic, log_dir, publisher_id, spec, host=host
        )
        self.stream = self.directory.name if replicate else None
        self.codec = Codec.named(codec)
        self.origin = env.hostname() if origin is None else origin
        if spec is not None:  # before anything is written there
            claim_for_cluster(self.directory, spec, "the publisher's log folder")
        self._lock = threading.Lock()  # serialises publishers and the committer on the writer
        settings = env.settings()
        #: the largest encoded message: RT_MAX_MESSAGE_SIZE, and what the cluster's
        #: merged-log files can hold; the nodes take in no larger
        self.max_message_size = settings.max_message_size
        if spec is not None:
            self.max_message_size = min(self.max_message_size, spec.roll_size - SEAL_SIZE)
        self._writer = LogWriter(
            self.directory,
            roll_size=roll_size if roll_size is not None else settings.roll_size,
            sync=sync,
        )
        self._closed = False
        self._last_ids: dict[str, int] = {}
        self._last_end: int | None = None  # the position after the last message published
        self._unwritten = 0  # bytes appended since the last commit
        self._batch_started = 0  # when the first of them came (ns since the epoch)
        self._batches = BatchTracer(self.directory.name)
        self._commit_error: BaseException | None = None
        self._written = self._writer.written_position
        self._written_changed = threading.Condition()
        self._watchers: list[Callable[[], None]] = []
        self._has_data = threading.Event()
        self._commit_now = threading.Event()
        self._gather_wake = threading.Event()  # a quorum's progress, or _commit_now
        self._committer_exit = False
        self._replicator: Replicator | None = None
        try:
            if spec is not None:
                write_topic(self.directory, topic)  # for an agent that ships the directory
                assert reached is not None
                self._replicator = Replicator(
                    self.directory,
                    self.stream,
                    spec,
                    topic=topic,
                    connect=reached.connect,
                    trace_context=self._batches.context,
                )
                self._replicator.watch(self._replication_moved)
                self._replicator.start()
            self._committer = threading.Thread(
                target=self._commit_loop, name=f"rt-publisher-commit {self.directory.name}"
            )
            self._committer.daemon = True
            self._committer.start()
        except BaseException:
            if self._replicator is not None:
                self._replicator.stop(0)
            self._writer.close()
            raise
        _open_publishers.add(self)

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self,
        message: Any,
        *,
        origin: str | None = None,
        id: int | None = None,
        ts: int | None = None,
        timeout: int | None = None,
        tags: tuple[str, ...] | list[str] | None = None,
    ) -> int:
        """Append ``message`` to the log; return the position just after it.

        ``ts`` defaults to now (ns since the epoch); ``tags`` to the message's leading
        strings; ``timeout`` (an i32) to none. A message the codec cannot encode raises
        :class:`rtcommon.log.CodecError` and nothing is written.
        """
        if origin is None:
            origin = self.origin
        if ts is None:
            ts = time.time_ns()
        if tags is not None:
            tags = tuple(tags)
        with self._lock:
            self._check_open()
            message_id = self._next_id(origin, id)
            record = encode_message(
                message,
                origin=origin,
                ts=ts,
                id=message_id,
                timeout=timeout,
                codec=self.codec,
                tags=tags,
            )
            return self._append(record, origin, message_id)

    def publish_many(
        self,
        messages: Iterable[Any],
        *,
        origin: str | None = None,
        ts: int | None = None,
        timeout: int | None = None,
    ) -> int:
        """Append every message of ``messages`` in order, as :meth:`publish` would one
        by one (ids follow on per origin; tags are each message's leading strings); return
        the position just after the last. For callers that have many messages at once:
        the lock is taken once per ``MANY_PER_LOCK`` of them, not per message. ``ts``
        defaults to now, the same for all. A message the codec cannot encode raises
        :class:`rtcommon.log.CodecError`; the ones before it are published, it and the
        ones after it are not."""
        if origin is None:
            origin = self.origin
        if ts is None:
            ts = time.time_ns()
        codec = self.codec
        batch = list(messages)  # read before the lock: an iterable may use this publisher
        position = self.position
        for start in range(0, len(batch), MANY_PER_LOCK):
            # Let go between slices: the committer writes out a large buffer meanwhile.
            with self._lock:
                self._check_open()
                for message in batch[start : start + MANY_PER_LOCK]:
                    message_id = self._next_id(origin, None)
                    record = encode_message(
                        message, origin=origin, ts=ts, id=message_id, timeout=timeout, codec=codec
                    )
                    position = self._append(record, origin, message_id)
        return position

    def publish_payload(
        self,
        payload: bytes,
        codec: str | Codec,
        *,
        origin: str | None = None,
        id: int | None = None,
        ts: int | None = None,
        tags: tuple[str, ...] | list[str] | None = None,
    ) -> int:
        """Append a message already encoded by ``codec`` (``"raw"`` or ``"msgpack"``),
        as a client in another language sends it; return the position just after it.

        The bytes are copied into the record as they are. A msgpack payload is checked
        (a subscriber must be able to decode every message) and, without ``tags``, tagged
        by its leading strings. A payload that is not the codec's raises
        :class:`rtcommon.log.CodecError` and nothing is written."""
        codec = Codec.named(codec)
        if codec is Codec.MSGPACK:
            message = decode_payload(payload, codec, 0)
            if tags is None:
                tags = message_tags(message)
        if origin is None:
            origin = self.origin
        if ts is None:
            ts = time.time_ns()
        with self._lock:
            self._check_open()
            message_id = self._next_id(origin, id)
            record = encode_record(
                payload,
                origin=origin,
                ts=ts,
                id=message_id,
                tags=tuple(tags or ()),
                codec=codec,
            )
            return self._append(record, origin, message_id)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"publisher of {self.directory} is closed")

    def _next_id(self, origin: str, given: int | None) -> int:
        if self._only_origin is not None and origin != self._only_origin:
            raise ValueError(
                f"an external publisher's records name it, {self._only_origin!r}, as their"
                f" origin, not {origin!r}"
            )
        last = self._last_ids.get(origin)
        return (last or 0) + 1 if given is None else _check_id(given, last, origin)

    def _append(self, record: bytes, origin: str, message_id: int) -> int:
        """Append an encoded record (the lock held); the position after it."""
        if len(record) > self.max_message_size:
            raise RecordTooLargeError(
                f"a message of {len(record)} bytes (encoded) is over the limit of"
                f" {self.max_message_size} (RT_MAX_MESSAGE_SIZE, or the cluster's roll size):"
                " nothing was written"
            )
        before = self._writer.position
        try:
            position = self._writer.append(record)
        except LogWriteError:
            if self._writer.position == before:
                raise  # a roll failed before the record was taken: it is not published
            # The buffer filled and could not be written out: the record is buffered
            # all the same, and the committer goes on trying.
            position = self._writer.position
            self._has_data.set()
        self._last_ids[origin] = abs(message_id)
        self._last_end = position
        if not self._unwritten:
            self._has_data.set()  # the interval starts with the first unwritten record
            self._batch_started = time.time_ns()
        self._unwritten += len(record)
        if self._unwritten >= COMMIT_NOW_BYTES and not self._commit_now.is_set():
            self._commit_at_once()
        return position

    def flush(self, timeout: float | None = None) -> None:
        """Return once a quorum of nodes holds everything published so far (once it is in
        the local log, for an unreplicated topic); raise TimeoutError after ``timeout``
        seconds (None: no limit). Timed out messages stay safe in the local log and are
        still being sent."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._last_end
        if target is None:
            return
        if not self._wait_written(target, deadline):
            raise TimeoutError(
                f"flush: the messages published to {self.directory} were not written to"
                f" the local log within {timeout} s"
                + (f" ({self._commit_error})" if self._commit_error else "")
            )
        replicator = self._replicator
        if replicator is None:
            return
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not replicator.wait_replicated(target, remaining):
            raise TimeoutError(self._not_replicated(target, timeout))

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Flush (raise TimeoutError if a quorum does not hold everything within
        ``timeout`` seconds), then seal the log and release its directory. The log is
        closed even when the flush times out; what it holds is sent by the next
        publisher or agent on the directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True  # from now on publish() refuses, so the flush covers all
        try:
            self.flush(timeout)
        finally:
            self._shut_down()

    @property
    def written(self) -> int:
        """The position before which the local log is written out (and synced, by the
        sync policy)."""
        with self._written_changed:
            return self._written

    @property
    def replicated(self) -> int:
        """The position before which a quorum holds the log (``written`` when the topic
        is not replicated)."""
        return self._replicator.replicated if self._replicator is not None else self.written

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever :attr:`written` or :attr:`replicated` may have moved,
        from the publisher's own threads: it must be quick and thread-safe (set an
        event, or ``loop.call_soon_threadsafe``)."""
        self._watchers.append(callback)
        if self._replicator is not None:
            self._replicator.watch(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(callback)
        if self._replicator is not None:
            self._replicator.unwatch(callback)

    @property
    def position(self) -> int:
        """The position just after the last message published (the log's end)."""
        with self._lock:
            return self._writer.position

    @property
    def held(self) -> dict[int, int]:
        """Per node id, the position before which that node holds this log ({} unreplicated)."""
        return {} if self._replicator is None else self._replicator.held

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Publisher({self.topic!r}, directory={str(self.directory)!r})"

    # -- the committer -----------------------------------------------------------------------

    def _commit_loop(self) -> None:
        last_commit = 0.0
        while True:
            self._has_data.wait()
            if not self._committer_exit:
                self._gather(last_commit)
            last_commit = time.monotonic()
            commit_started = time.time_ns()
            pending = None
            with self._lock:
                self._has_data.clear()
                self._commit_now.clear()
                exiting = self._committer_exit
                batch = (self._unwritten, self._batch_started)
                try:
                    if self._writer.sync_policy is SyncPolicy.BATCH:
                        # Write under the lock, fsync outside it: publish() goes on meanwhile.
                        pending = self._writer.detach_sync()
                        written = pending.end
                    else:
                        written = self._writer.commit()
                except LogWriteError as exc:
                    written = None
                    if self._commit_error is None:
                        log.error("%s; retrying", exc)
                    self._commit_error = exc
                    self._has_data.set()
                else:
                    self._unwritten = 0
                    self._commit_error = None
            if pending is not None:
                pending.run()  # durable here before any node is told of it
                with self._lock:
                    self._writer.synced(pending)
            if written is None:
                if exiting:
                    return
                time.sleep(RETRY_WRITE_INTERVAL)
                continue
            if batch[0] and written > self._written:  # known before any push carries it
                self._batches.committed(written, *batch, commit_started, time.time_ns())
                if self._replicator is None:  # a local log: done once on disk
                    self._batches.replicated(written, time.time_ns())
            if self._replicator is not None:
                self._replicator.notify()
            with self._written_changed:
                self._written = written
                self._written_changed.notify_all()
            for callback in list(self._watchers):
                callback()
            if exiting:
                return

    def _gather(self, last_commit: float) -> None:
        """Wait while a batch gathers (unless it is large or a flush waits for it):
        ``COMMIT_INTERVAL``, then on while the last commit is not yet held by a quorum,
        up to ``COMMIT_SPACING`` after it."""
        if self._commit_now.wait(COMMIT_INTERVAL):
            return
        replicator = self._replicator
        while replicator is not None and replicator.replicated < self._written:
            remaining = last_commit + COMMIT_SPACING - time.monotonic()
            if remaining <= 0 or self._commit_now.is_set() or self._committer_exit:
                return
            self._gather_wake.wait(remaining)
            self._gather_wake.clear()  # the condition is looked at again after this

    def _commit_at_once(self) -> None:
        self._commit_now.set()
        self._gather_wake.set()

    def _wait_written(self, position: int, deadline: float | None) -> bool:
        with self._written_changed:
            if self._written >= position:
                return True
        self._commit_at_once()  # a flush does not wait for the interval
        self._has_data.set()
        with self._written_changed:
            while self._written < position:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._written_changed.wait(remaining)
            return True

    def _shut_down(self) -> None:
        _open_publishers.discard(self)
        self._committer_exit = True
        self._has_data.set()
        self._gather_wake.set()
        self._committer.join()
        try:
            with self._lock:
                self._writer.close()  # writes what is left and seals the last file
        finally:
            if self._replicator is not None:
                self._replicator.notify()  # send the seal too, to the nodes still connected
                self._replicator.stop(CLOSE_DRAIN_TIMEOUT)
            self._batches.close(time.time_ns())

    def _replication_moved(self) -> None:
        assert self._replicator is not None
        self._batches.replicated(self._replicator.replicated, time.time_ns())
        self._gather_wake.set()

    def _not_replicated(self, target: int, timeout: float | None) -> str:
        assert self._replicator is not None
        replicator = self._replicator
        nodes = ", ".join(
            f"{node.name} holds {'up to date' if held >= target else held}"
            for node, held in (
                (node, replicator.held.get(node.id, 0)) for node in replicator.spec.nodes
            )
        )
        return (
            f"flush: after {timeout} s a quorum ({replicator.quorum} of"
            f" {len(replicator.spec.nodes)} nodes) does not yet hold stream {self.stream}"
            f" up to position {target} ({nodes}); the messages are safe in {self.directory},"
            " sent on while this publisher is open, else by the next publisher or"
            " rt-publisher-agent on that directory"
        )


def _cluster(cluster: ClusterLike | None) -> Cluster:
    if cluster is None:
        raise ValueError(
            "a publisher needs a cluster to replicate to; only a topic that is an absolute"
            " path (a log with no replication) may be published without one"
        )
    return Cluster.of(cluster)


def _enrolled_publisher(enrolment: Enrolment, topic: str, publisher_id: str | None) -> str:
    """An external publisher's id: ``_<enrolled name>``, which the nodes require as the
    first part of its stream's name, for a topic it is enrolled for."""
    if topic not in enrolment.details.topics:
        raise EnrolmentError(
            f"client {enrolment.name!r} is not enrolled to insert topic {topic!r} (its"
            f" topics: {', '.join(enrolment.details.topics)})"
        )
    own = f"{EXTERNAL_PREFIX}{enrolment.name}"
    if publisher_id not in (None, own):
        raise ValueError(f"an external publisher's id is {own!r}, not {publisher_id!r}")
    return own


# Publishers still open at interpreter exit are closed then: a publisher must not exit
# before what it published is replicated.
_open_publishers: weakref.WeakSet[Publisher] = weakref.WeakSet()


@atexit.register
def _close_open_publishers() -> None:
    for publisher in list(_open_publishers):
        try:
            publisher.close()
        except Exception as exc:
            log.error("closing %r at exit: %s", publisher, exc)
