"""``rt.Subscriber``: a local copy of the merged log, and delivery from it.

A subscriber has two sides:

- **replication**, a task on the process's replication loop (one asyncio loop in
  one daemon thread, shared by every subscriber, with ``grpc.aio``): pulls the
  merged log from one node (``rtproto.v1.Pull``) into a
  :class:`~rtcommon.log.LogMirror` in ``log_dir``. It asks for the mirror's end
  when the copy holds data, else for the starting ``position`` (or the node's
  START or END). On any error (node down, stream broken, a chunk that does not
  continue the copy) it moves on to the next node and resumes from the mirror's
  end, backing off exponentially (``rtcommon.follow``, capped at 2 s; the backoff
  starts afresh once a stream has made progress). Every node's merged log is
  byte-identical, so the copy does not care which node served which bytes.
- **delivery**, a thread of its own: a :class:`~rtcommon.log.LogReader` on the
  local copy calls ``on_message(record, position)`` for each record and
  ``on_event(kind, (a, b))`` for each ``badtail``/``reset`` event, then goes on
  from ``b``. Replication wakes it in-process after each write; it also polls
  (every 0.25 s), so changes made by others are seen too.

With ``cluster=None`` there is no replication: the subscriber delivers from an
existing local log (another process may be writing it), like subscribing to a
full-path topic in the original RT.

Contract details:

- The message is the :class:`~rtcommon.log.Record` (``.data`` decodes the
  payload on access; ``.origin``, ``.id``, ``.ts``, ``.tags``, ``.position``).
  ``position`` is the position just after it: a new subscriber started from it
  delivers exactly the rest.
- ``position``: ``None`` or ``"start"`` start at the first position the copy (or
  else the node) holds; ``"end"`` at the node's end now (or, when the local copy
  already holds data, at the copy's end); an integer at that position.
- A filter (``"upd"``, ``("upd", "trade")``) compares tag bytes in the record
  header; a record that does not match is skipped without being decoded.
- Callbacks run on the delivery thread, one at a time. ``pause()`` and
  ``unsubscribe()`` may be called from any thread, including from inside a
  callback; once they return, no further callback starts (called from another
  thread they wait for the callback in progress, so a callback must not block
  on a thread that is calling them).
- **A callback that raises stops the subscriber**: the exception is logged and
  kept in :attr:`Subscriber.error`, delivery and replication stop,
  :attr:`Subscriber.position` stays before the message that failed (resuming
  from it retries that message) and :meth:`Subscriber.join` returns.
  :meth:`Subscriber.unsubscribe` does not raise it. Fatal replication errors
  (a position past the end of the merged log on every node, a malformed
  position) stop the subscriber the same way, with a :class:`SubscriberError`.
- ``REPLICATOR_EXCHANGE_ARCHIVED`` (follow the cluster's truncation, opt out, or
  lead) is read into :attr:`Subscriber.archived_exchange` but **not used yet**:
  cluster-driven truncation of the copy comes with the archiver. Until then a
  subscriber prunes its copy itself (:meth:`Subscriber.prune`, ``rt.prune``).

A hard reset of the cluster (its files emptied, a new session begun) is
mirrored into the copy when the node's stream jumps to a newer session while the
copy's last file is still open: the copy's older files are emptied too, so
delivery reports a ``reset`` event and goes on in the new session. (A reset that
falls exactly after a roll, with the copy's last file sealed, is not recognised.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from rtcommon import env
from rtcommon.background import background_loop, in_background_loop
from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.follow import FailoverPolicy, cancelling, follow
from rtcommon.grpcopts import CHANNEL_OPTIONS
from rtcommon.log import (
    RESET,
    Chunk,
    LogEvent,
    LogMirror,
    LogReader,
    PositionPastEndError,
    Record,
    SyncPolicy,
    TagFilter,
    check_position,
    file_name,
    file_start,
    list_log_files,
    read_mirror_start,
    split_position,
    starts_a_record,
)
from rtproto.v1 import common_pb2, pull_pb2, pull_pb2_grpc

from ._cluster import Cluster
from ._prune import prune

__all__ = ["END", "START", "PositionOutOfRangeError", "Subscriber", "SubscriberError"]

log = logging.getLogger("rt.subscriber")

START = "start"
END = "end"

OnMessage = Callable[[Record, int], Any]
OnEvent = Callable[[str, tuple[int, int]], Any]

#: Upper bound asked of the node for one chunk: large chunks keep gRPC's per-message cost low.
PULL_CHUNK_BYTES = 1 << 20
#: The copy is a cache of the cluster (a lost tail is pulled again), so it is not synced per
#: chunk: only when a file is sealed, and at most this long after a write.
SYNC_INTERVAL = 1.0
#: The longest the delivery thread sleeps before looking at the copy again without a wake-up.
IDLE_POLL = 0.25
#: Without in-process replication, a local log is watched with inotify in slices this long.
LOCAL_POLL = 0.05
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


class SubscriberError(Exception):
    """A subscriber cannot go on: it needs a new position, local copy or cluster."""


class PositionOutOfRangeError(SubscriberError):
    """Every node said the position asked for is past the end of its merged log."""


class Subscriber:
    """Replicates the merged log into ``log_dir`` and delivers it from there.

    ``cluster``: an :class:`rt.Cluster`, a ``cluster.json`` path, a list of node
    addresses, or ``None`` to deliver from an existing local log without
    replication. ``log_dir`` defaults to ``$RT_LOG_PATH/<topic or cluster name>/``.
    ``node`` is the id of the node to pull from first (default: one at random).
    The module docstring gives the delivery contract.
    """

    def __init__(
        self,
        cluster: Cluster | ClusterSpec | Sequence[str] | str | os.PathLike[str] | None,
        log_dir: str | os.PathLike[str] | None = None,
        position: int | str | None = None,
        on_message: OnMessage | None = None,
        on_event: OnEvent | None = None,
        filter: str | Sequence[str] | TagFilter | None = None,
        *,
        topic: str | None = None,
        node: int | None = None,
    ) -> None:
        self.cluster = None if cluster is None else Cluster.of(cluster)
        if log_dir is None:
            if self.cluster is None and topic is None:
                raise ValueError("a subscriber without a cluster needs a log_dir (or a topic)")
            log_dir = env.settings().log_path / (topic or self.cluster.name)  # type: ignore[union-attr]
        self.log_dir = Path(log_dir)
        self._mode, self._explicit_start = _parse_start(position)
        self.on_message = on_message
        self.on_event = on_event or self._log_event
        self._filter = _as_filter(filter)
        self.archived_exchange = env.settings().archived_exchange  # not used yet
        self._nodes: tuple[NodeSpec, ...] = self.cluster.nodes if self.cluster else ()
        if node is not None and not 0 <= node < len(self._nodes):
            raise ValueError(f"no node {node} in a cluster of {len(self._nodes)} nodes")
        first = node if node is not None else random.randrange(max(1, len(self._nodes)))
        self._failover = FailoverPolicy(
            max(1, len(self._nodes)), first=first, initial=BACKOFF_FIRST, cap=BACKOFF_MAX
        )
        self._last_request = pull_pb2.PullRequest()  # the request of the latest stream

        #: The exception that stopped the subscriber, or None.
        self.error: BaseException | None = None
        #: The position after the last message or event delivered (resume from it), or the
        #: start position until something is delivered; None until the start is known.
        self.position: int | None = self._explicit_start
        self._handed: int | None = None  # the highest position handed to a callback

        # Control of the delivery thread: every change bumps _control and sets _wake; the
        # delivery thread acknowledges a change once it is between callbacks.
        self._control_lock = threading.Condition()
        self._control = 0
        self._acknowledged = 0
        self._paused = False
        self._stopping = False
        self._wake = threading.Event()

        self._started = False
        self._mirror: LogMirror | None = None
        self._sync_due = 0.0
        self._out_of_range_in_a_row = 0
        self._delivery_thread: threading.Thread | None = None
        self._reader: LogReader | None = None  # the delivery thread's, once it has one
        self._delivery_done = False
        self._replicating = self.cluster is not None
        self._replication_task: asyncio.Task[None] | None = None
        self._replication_cancelled = False  # touched only in the replication loop
        self._replication_done = threading.Event()

    # -- public ---------------------------------------------------------------------------

    @property
    def node(self) -> int | None:
        """The id of the node replication pulls from (or will try next)."""
        return self._nodes[self._failover.node].id if self._nodes else None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the subscriber stops (unsubscribed or failed)."""
        return self._started and not self._delivery_done

    def start(self) -> Subscriber:
        """Open the local copy and start replication and delivery; return ``self``.

        Raises :class:`~rtcommon.log.LogLockedError` if another live subscriber (or a
        writer) holds ``log_dir``, and :class:`SubscriberError` if ``position`` lies
        before what the local copy holds.
        """
        if self._started:
            raise RuntimeError("a subscriber starts once; create a new one to subscribe again")
        if self._stopping:
            raise RuntimeError("this subscriber was unsubscribed")
        self._started = True
        if self._replicating:
            self._mirror = LogMirror(self.log_dir, sync=SyncPolicy.INTERVAL, start_mid_file=True)
        try:
            self._settle_start()
        except BaseException:
            self._close_mirror()
            self._replication_done.set()
            self._delivery_done = True
            raise
        if self._replicating:
            background_loop().call_soon_threadsafe(self._start_replication)
        else:
            self._replication_done.set()
        self._delivery_thread = threading.Thread(
            target=self._run_delivery, name=f"rt-sub-delivery:{self.log_dir}", daemon=True
        )
        self._delivery_thread.start()
        return self

    def pause(self) -> None:
        """Stop delivery (replication goes on); no callback starts after this returns."""
        seq = self._change(paused=True)
        if threading.current_thread() is not self._delivery_thread:
            with self._control_lock:
                self._control_lock.wait_for(
                    lambda: self._acknowledged >= seq or self._delivery_done or not self._started
                )

    def resume(self) -> None:
        """Deliver again from where delivery paused; nothing is lost or repeated."""
        self._change(paused=False)

    def unsubscribe(self) -> None:
        """Stop delivery and replication and close the local copy. Idempotent; safe from
        inside a callback (no further callback runs after that callback returns)."""
        self._change(stopping=True)
        self._stop_replication()
        if self._delivery_thread is None:
            self._delivery_done = True
        self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the subscriber stops (unsubscribed, or failed: see :attr:`error`) and
        its local copy is closed; return True if it has."""
        if not self._started:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        thread = self._delivery_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return False
        if not in_background_loop():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._replication_done.wait(left):
                return False
        return self._delivery_done or thread is threading.current_thread()

    def prune(self, position: int) -> list[Path]:
        """Truncate the local copy's rolled files wholly before ``position`` (see
        :func:`rt.prune`). ``position`` may not lie past what was handed to a callback."""
        check_position(position)
        limit = self._handed if self._handed is not None else self.position
        if limit is None or position > limit:
            raise ValueError(
                f"cannot prune to {position}: only positions up to {limit} were delivered"
            )
        return prune(self.log_dir, position)

    def __enter__(self) -> Subscriber:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._started else "new"
        return f"Subscriber({str(self.log_dir)!r}, {state}, position={self.position})"

    # -- control --------------------------------------------------------------------------

    def _change(self, *, paused: bool | None = None, stopping: bool = False) -> int:
        with self._control_lock:
            if paused is not None:
                self._paused = paused
            if stopping:
                self._stopping = True
            self._control += 1
            seq = self._control
        self._wake.set()
        return seq

    def _fail(self, error: BaseException, what: str) -> None:
        if self.error is None:
            self.error = error
        if not isinstance(error, SubscriberError):
            log.error("%s in subscriber of %s; stopping", what, self.log_dir, exc_info=error)
        else:
            log.error("subscriber of %s stops: %s", self.log_dir, error)
        self._change(stopping=True)
        self._stop_replication()

    def _log_event(self, kind: str, positions: tuple[int, int]) -> None:
        before, after = positions
        if kind == RESET:
            log.warning(
                "Reset event in %s, rolling position from %d to %d", self.log_dir, before, after
            )
        else:
            log.warning(
                "Badtail event in %s: corrupt or torn data at %d, rolling position to %d",
                self.log_dir,
                before,
                after,
            )

    # -- where delivery starts ------------------------------------------------------------

    def _settle_start(self) -> None:
        """Check the start position against the local copy, or fix it for ``"end"``."""
        files = list_log_files(self.log_dir)
        if self._mode == END and files:
            # The mirror found its end when it opened; a local log without one is read.
            end = self._mirror.end if self._mirror is not None else None
            self._explicit_start = end if end is not None else _local_end(self.log_dir, files)
            self.position = self._explicit_start
        elif self._explicit_start is not None and files:
            held = _first_held_position(self.log_dir, files)
            if self._explicit_start < held and self._replicating:
                raise SubscriberError(
                    f"position {self._explicit_start} lies before the local copy in"
                    f" {self.log_dir}, which begins at {held}; subscribe with another log_dir"
                )
            if not starts_a_record(self.log_dir, self._explicit_start):
                raise SubscriberError(
                    f"position {self._explicit_start} is not the start of a record in"
                    f" {self.log_dir}: pass a position a callback was handed"
                )
        if not self._replicating and self._explicit_start is not None:
            # No replication will fill the log up to the position: refuse it now if it is
            # past the end.
            LogReader(self.log_dir, self._explicit_start).close()

    def _open_reader(self) -> LogReader | None:
        files = list_log_files(self.log_dir)
        if not files:
            return None
        start = self._explicit_start
        if start is None:
            start = _first_held_position(self.log_dir, files)
        try:
            # A replicated copy had every record's CRC checked by the mirror as it arrived.
            reader = LogReader(
                self.log_dir, start, tag_filter=self._filter, verify=not self._replicating
            )
        except PositionPastEndError:
            if not self._replicating:
                raise
            return None  # the copy has not reached the position yet
        if self.position is None:
            self.position = start
        return reader

    # -- delivery -------------------------------------------------------------------------

    def _run_delivery(self) -> None:
        try:
            self._deliver()
        except BaseException as exc:
            self._fail(exc, "delivery failed")
        finally:
            if self._reader is not None:
                self._reader.close()
            with self._control_lock:
                self._delivery_done = True
                self._control_lock.notify_all()

    def _deliver(self) -> None:
        reader: LogReader | None = None
        items: list[Record | LogEvent] = []
        index = 0
        seen = -1
        paused = False
        replicating = self._replicating
        wake = self._wake
        on_message, on_event = self.on_message, self.on_event
        while True:
            if self._control != seen:
                with self._control_lock:
                    seen = self._acknowledged = self._control
                    paused, stopping = self._paused, self._stopping
                    self._control_lock.notify_all()
                if stopping:
                    return
            if paused:
                wake.wait(IDLE_POLL)
                wake.clear()
                continue
            if index == len(items):
                wake.clear()  # before reading: a write after this point wakes the next wait
                if reader is None:
                    reader = self._reader = self._open_reader()
                items, index = (reader.read() if reader is not None else []), 0
                if not items:
                    if replicating or reader is None:
                        wake.wait(IDLE_POLL if replicating else LOCAL_POLL)
                    else:
                        reader.wait(LOCAL_POLL)
                    continue
            item = items[index]
            index += 1
            if type(item) is Record:
                position = item.position
                self._handed = position
                if on_message is not None:
                    on_message(item, position)
                self.position = position
            else:
                assert isinstance(item, LogEvent)
                self._handed = item.positions[1]
                on_event(item.kind, item.positions)
                self.position = item.positions[1]

    # -- replication ----------------------------------------------------------------------

    # These run in the replication loop, so they need no lock between them.

    def _start_replication(self) -> None:
        if self._replication_cancelled:
            self._replication_finished()
            return
        task = asyncio.get_running_loop().create_task(self._replicate())
        # A done callback runs even for a task cancelled before its first step.
        task.add_done_callback(lambda _: self._replication_finished())
        self._replication_task = task

    def _cancel_replication(self) -> None:
        self._replication_cancelled = True
        if self._replication_task is not None:
            self._replication_task.cancel()

    def _replication_finished(self) -> None:
        self._close_mirror()
        self._replication_done.set()

    def _stop_replication(self) -> None:
        if self._replicating and self._started and not self._replication_done.is_set():
            background_loop().call_soon_threadsafe(self._cancel_replication)

    def _close_mirror(self) -> None:
        mirror, self._mirror = self._mirror, None
        if mirror is not None:
            try:
                mirror.close()
            except OSError as exc:
                log.warning("closing the local copy in %s: %s", self.log_dir, exc)

    async def _replicate(self) -> None:
        try:
            await follow(
                self._failover,
                self._pull_from,
                self._write,
                on_break=self._on_break,
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc, "replication failed")

    def _node_label(self) -> str:
        node = self._nodes[self._failover.node]
        return f"{node.name} ({node.pull})"

    def _pull_request(self) -> pull_pb2.PullRequest:
        assert self._mirror is not None
        end = self._mirror.end
        if end is not None:
            start, position = pull_pb2.PullRequest.POSITION, end
        elif self._explicit_start is not None:
            start, position = pull_pb2.PullRequest.POSITION, self._explicit_start
        elif self._mode == END:
            start, position = pull_pb2.PullRequest.END, 0
        else:
            start, position = pull_pb2.PullRequest.START, 0
        return pull_pb2.PullRequest(
            **{"from": start}, position=position, max_chunk_bytes=PULL_CHUNK_BYTES
        )

    async def _pull_from(self, index: int) -> AsyncIterator[common_pb2.LogChunk]:
        """The merged log from node ``index``, from where the local copy ends."""
        request = self._last_request = self._pull_request()
        channel = grpc.aio.insecure_channel(self._nodes[index].pull, options=CHANNEL_OPTIONS)
        try:
            async with contextlib.aclosing(
                cancelling(pull_pb2_grpc.PullStub(channel).Pull(request))
            ) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            await channel.close()

    def _on_break(self, index: int, error: BaseException, progressed: bool, delay: float) -> None:
        """A stream broke: stop on what retrying cannot mend, else say what comes next."""
        if isinstance(error, SubscriberError):
            raise error
        if isinstance(error, grpc.aio.AioRpcError):
            self._check_fatal(error, self._last_request)
        else:  # a stream that ended, a chunk the copy refused, a disk error
            self._out_of_range_in_a_row = 0
        if progressed:
            log.warning(
                "subscriber of %s: %s; resuming from %s on %s",
                self.log_dir,
                _describe(error),
                self._mirror.end if self._mirror else None,
                self._node_label(),
            )
        else:
            log.warning(
                "subscriber of %s: %s; retrying on %s in %.2f s",
                self.log_dir,
                _describe(error),
                self._node_label(),
                delay,
            )

    def _check_fatal(self, error: grpc.aio.AioRpcError, request: pull_pb2.PullRequest) -> None:
        code = error.code()
        if code == grpc.StatusCode.OUT_OF_RANGE:
            self._out_of_range_in_a_row += 1
            if self._out_of_range_in_a_row >= len(self._nodes):
                raise PositionOutOfRangeError(
                    f"position {request.position} is past the end of the merged log on every"
                    f" node: {error.details()}"
                ) from error
            return
        self._out_of_range_in_a_row = 0
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise SubscriberError(
                f"a node refused position {request.position}: {error.details()}"
            ) from error

    def _write(self, chunk: common_pb2.LogChunk) -> bool:
        """Copy one chunk into the mirror and wake delivery; False for an idle heartbeat."""
        if not chunk.data and not chunk.sealed:
            return False
        mirror = self._mirror
        assert mirror is not None
        copied = Chunk(chunk.position, chunk.data, chunk.sealed)
        if _starts_a_reset_session(mirror, copied):
            new_session = split_position(copied.position)[0]
            log.warning(
                "the cluster's merged log was reset: it goes on in session %d while %s was"
                " still being written; emptying the local copy's files before it",
                new_session,
                mirror.directory / file_name(*split_position(mirror.end or 0)[:2]),
            )
            mirror.close()
            try:
                mirror = self._mirror = reset_copy(self.log_dir, new_session)
            except OSError as exc:
                self._mirror = None
                raise SubscriberError(
                    f"cannot reset the local copy in {self.log_dir}: {exc}"
                ) from exc
        mirror.write(copied)
        self._out_of_range_in_a_row = 0
        now = time.monotonic()
        # A sealed file is synced before the next one is created, so the copy never holds a
        # later file over a lost earlier one.
        if chunk.sealed or now >= self._sync_due:
            mirror.sync()
            self._sync_due = now + SYNC_INTERVAL
        self._wake.set()
        return True


# -- a hard reset of the cluster ------------------------------------------------------------


def _starts_a_reset_session(mirror: LogMirror, chunk: Chunk) -> bool:
    """True if ``chunk`` starts a newer session while the copy's last file is still open.

    A merged log leaves a file open only while its writer lives (a restarted node goes on
    in the same file), so a newer session beginning then means the cluster wiped its log
    (a hard reset empties the files and starts the next session)."""
    if mirror.end is None or mirror.sealed:
        return False
    session, roll, offset = split_position(chunk.position)
    return (roll, offset) == (0, 0) and session > split_position(mirror.end)[0]


def reset_copy(directory: Path, new_session: int) -> LogMirror:
    """Do to a local copy what a hard reset did to its source: empty (not delete) every file
    of the sessions before ``new_session`` and begin ``log.<new_session>.0``; return the
    mirror reopened on it. A reader that was in an emptied file reports a ``reset``
    event (position reached, start of the new session) and goes on in the new session."""
    for file in list_log_files(directory):
        if file[0] < new_session:
            os.truncate(directory / file_name(*file), 0)
    fd = os.open(directory / file_name(new_session, 0), os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    return LogMirror(directory, sync=SyncPolicy.INTERVAL, start_mid_file=True)


# -- helpers ------------------------------------------------------------------------------


def _as_filter(value: str | Sequence[str] | TagFilter | None) -> TagFilter | None:
    if value is None or isinstance(value, TagFilter):
        return value
    if isinstance(value, str):
        return TagFilter((value,))
    return TagFilter(tuple(value))


def _parse_start(position: int | str | None) -> tuple[str, int | None]:
    """``(mode, explicit position)`` from the ``position`` argument."""
    if position is None or position == START:
        return START, None
    if position == END:
        return END, None
    if isinstance(position, str):
        raise ValueError(f"position is an integer, None, 'start' or 'end', not {position!r}")
    return "position", check_position(position)


def _first_held_position(directory: Path, files: list[tuple[int, int]]) -> int:
    """The first position whose bytes the copy holds (a copy may begin mid-file)."""
    first = files[0]
    start = read_mirror_start(directory)
    if start is not None and split_position(start)[:2] == first:
        with contextlib.suppress(FileNotFoundError):
            if (directory / file_name(*first)).stat().st_size > split_position(start)[2]:
                return start
    # An emptied (pruned) first file is read from its start, which simply moves on.
    return file_start(*first)


def _local_end(directory: Path, files: list[tuple[int, int]]) -> int:
    """The position after the last whole record of a local log."""
    last = files[-1]
    start = read_mirror_start(directory)
    begin = start if start is not None and split_position(start)[:2] == last else file_start(*last)
    with LogReader(directory, begin) as reader:
        while reader.read_chunks():
            pass
        end = reader.position
    return begin if end is None else end


def _describe(error: BaseException | None) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"pull failed: {error.code().name} {error.details()}"
    return f"pull failed: {type(error).__name__}: {error}"
