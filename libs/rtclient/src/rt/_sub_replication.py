"""Replication of the merged log into a subscriber's local copy.

What it owns: :class:`Replication`, which follows the merged log from the cluster's
nodes (``rtproto.v1.Pull``, through :func:`rtcommon.follow.follow`: failover to the
next node on any error, backoff until a stream makes progress) into a
:class:`~rtcommon.log.LogMirror`, and mirrors a hard reset of the cluster into the copy.
It runs on the process's background loop; :meth:`Replication.run` raises only what
retrying cannot mend (:class:`SubscriberError`).

A hard reset (the cluster's files emptied, a new session begun) reaches the copy as a
chunk marked ``reset`` at the new session's start: the copy's files of earlier sessions
are emptied too, so delivery reports a ``reset`` event and goes on in the new session.

Garbage collection reaches it two ways. Records the copy lacks that the cluster
collected come as a chunk marked ``collected`` at the first position held: the copy
marks its files before it collected (:func:`rtcommon.log.collect_copy`), so delivery
reports a ``collected`` event and goes on there. And every chunk carries the node's
collected point: a copy that follows the cluster's truncation (``follow_pruned``)
collects its own files before it, never past what delivery has reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from rtcommon.cluster import NodeSpec
from rtcommon.follow import SILENT_AFTER, FailoverPolicy, cancelling, follow
from rtcommon.grpcopts import CHANNEL_OPTIONS, describe_error
from rtcommon.log import (
    Chunk,
    LogMirror,
    SyncPolicy,
    archive_log_files,
    collect_copy,
    file_name,
    list_log_files,
    split_position,
)
from rtproto.v1 import common_pb2, pull_pb2, pull_pb2_grpc

from ._errors import PositionOutOfRangeError, SubscriberError
from ._sub_start import Start

__all__ = ["Replication", "reset_copy"]

log = logging.getLogger("rt.subscriber")

#: Upper bound asked of the node for one chunk: large chunks keep gRPC's per-message cost low.
PULL_CHUNK_BYTES = 1 << 20

#: The copy is a cache of the cluster (a lost tail is pulled again), so it is not synced per
#: chunk: only when a file is sealed, and at most this long after a write.
SYNC_INTERVAL = 1.0
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


class Replication:
    def __init__(
        self,
        log_dir: Path,
        nodes: tuple[NodeSpec, ...],
        start: Start,
        *,
        first_node: int,
        on_written: Callable[[], None],
        follow_pruned: Callable[[], int | None] | None = None,
    ) -> None:
        """``follow_pruned``: where delivery has reached, for a copy that follows the
        cluster's truncation (None: the copy is pruned by its owner only)."""
        self.log_dir = log_dir
        self.nodes = nodes
        self.start = start
        self.failover = FailoverPolicy(
            len(nodes), first=first_node, initial=BACKOFF_FIRST, cap=BACKOFF_MAX
        )
        self._on_written = on_written
        self._delivered = follow_pruned
        self._pruned_file: tuple[int, int] = (-1, -1)  # the copy is collected before it
        self._pruning: asyncio.Future[None] | None = None
        #: The local copy (opened by the subscriber before it settles its start).
        self.mirror: LogMirror | None = LogMirror(
            log_dir, sync=SyncPolicy.INTERVAL, start_mid_file=True
        )
        self._last_request = pull_pb2.PullRequest()  # the request of the latest stream
        self._out_of_range_in_a_row = 0
        self._sync_due = 0.0
        self.last_contact: float | None = None  #: when a node last sent a chunk (monotonic)

    @property
    def node(self) -> NodeSpec:
        """The node pulled from (or tried next)."""
        return self.nodes[self.failover.node]

    async def run(self) -> None:
        await follow(
            self.failover,
            self._pull_from,
            self.write,
            on_break=self._on_break,
            silence=SILENT_AFTER,
        )

    def close(self) -> None:
        mirror, self.mirror = self.mirror, None
        if mirror is not None:
            try:
                mirror.close()
            except OSError as exc:
                log.warning("closing the local copy in %s: %s", self.log_dir, exc)

    async def _pull_from(self, index: int) -> AsyncIterator[common_pb2.LogChunk]:
        """The merged log from node ``index``, from where the local copy ends."""
        assert self.mirror is not None
        request = self._last_request = self.start.pull_request(self.mirror.end, PULL_CHUNK_BYTES)
        channel = grpc.aio.insecure_channel(self.nodes[index].pull, options=CHANNEL_OPTIONS)
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
        label = f"{self.node.name} ({self.node.pull})"
        if progressed:
            end = self.mirror.end if self.mirror else None
            log.warning(
                "subscriber of %s: %s; resuming from %s on %s",
                self.log_dir,
                f"pull failed: {describe_error(error)}",
                end,
                label,
            )
        else:
            log.warning(
                "subscriber of %s: %s; retrying on %s in %.2f s",
                self.log_dir,
                f"pull failed: {describe_error(error)}",
                label,
                delay,
            )

    def _check_fatal(self, error: grpc.aio.AioRpcError, request: pull_pb2.PullRequest) -> None:
        code = error.code()
        if code == grpc.StatusCode.OUT_OF_RANGE:
            self._out_of_range_in_a_row += 1
            if self._out_of_range_in_a_row >= len(self.nodes):
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

    def write(self, chunk: common_pb2.LogChunk) -> bool:
        """Copy one chunk into the mirror and wake delivery; False for an idle heartbeat."""
        self.last_contact = time.monotonic()
        if chunk.collected_before and self._delivered is not None:
            self._follow_pruned(chunk.collected_before)
        if not chunk.data and not chunk.sealed and not chunk.reset and not chunk.collected:
            return False
        mirror = self.mirror
        assert mirror is not None
        if chunk.reset:
            mirror = self._reset(mirror, split_position(chunk.position)[0])
        elif chunk.collected:
            mirror = self._collected(mirror, chunk.position)
        copied = Chunk(chunk.position, chunk.data, chunk.sealed)
        mirror.write(copied)
        self._out_of_range_in_a_row = 0
        now = time.monotonic()
        # A sealed file is synced before the next one is created, so the copy never holds a
        # later file over a lost earlier one.
        if chunk.sealed or now >= self._sync_due:
            mirror.sync()
            self._sync_due = now + SYNC_INTERVAL
        self._on_written()
        return True

    def _reset(self, mirror: LogMirror, new_session: int) -> LogMirror:
        log.warning(
            "the cluster's merged log was reset: it goes on in session %d; emptying the"
            " files of earlier sessions in %s",
            new_session,
            self.log_dir,
        )
        mirror.close()
        try:
            self.mirror = reset_copy(self.log_dir, new_session)
        except OSError as exc:
            self.mirror = None
            raise SubscriberError(f"cannot reset the local copy in {self.log_dir}: {exc}") from exc
        return self.mirror

    def _collected(self, mirror: LogMirror, first_held: int) -> LogMirror:
        mirror.close()
        try:
            if collect_copy(self.log_dir, first_held):
                log.warning(
                    "the cluster collected records this copy lacks: it goes on at %d in %s",
                    first_held,
                    self.log_dir,
                )
            self.mirror = LogMirror(self.log_dir, sync=SyncPolicy.INTERVAL, start_mid_file=True)
        except OSError as exc:
            self.mirror = None
            raise SubscriberError(
                f"cannot collect the local copy in {self.log_dir}: {exc}"
            ) from exc
        return self.mirror

    def _follow_pruned(self, collected_before: int) -> None:
        """Collect the copy's files before the node's collected point, no further than
        delivery has reached, in a worker thread (its fsyncs must not hold up the loop
        every subscriber and publisher of the process shares); one at a time, and only
        when that moves past another file."""
        assert self._delivered is not None
        reached = self._delivered()
        if reached is None or self._pruning is not None:
            return
        before = min(collected_before, reached)
        if split_position(before)[:2] <= self._pruned_file:
            return
        self._pruning = asyncio.ensure_future(asyncio.to_thread(self._prune_copy, before))
        self._pruning.add_done_callback(lambda _: setattr(self, "_pruning", None))

    def _prune_copy(self, before: int) -> None:
        try:
            emptied = archive_log_files(self.log_dir, before)
        except OSError as exc:
            log.warning("following the cluster's truncation in %s: %s", self.log_dir, exc)
            return
        self._pruned_file = split_position(before)[:2]
        if emptied:
            log.info("collected %d file(s) of %s before %d", len(emptied), self.log_dir, before)


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
