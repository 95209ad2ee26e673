"""The replicator: ships one publisher log directory to the nodes of a cluster.

It runs grpc.aio on the process's background loop (``rtcommon.background``), with
one push stream per node (the default fan-out), or with a single ingress one stream
to one node that fails over to the next (``RT_SINGLE_INGRESS``). Every other thread
talks to it through a few thread-safe calls:

- :meth:`Replicator.notify` after new records are written (an in-process publisher
  calls it after each commit); with ``watch=True`` a watcher thread does it when the
  directory changes, for a log another process writes;
- :meth:`Replicator.wait_replicated` blocks until a quorum of nodes holds everything
  before a position;
- :attr:`Replicator.held` tells, per node, what the node last said it holds.

When a node's reply says every node is done with the log before a position
(``PushReply.archived``), the log's whole files before it are collected: emptied in
place, sticky bit set (``rtcommon.log.archive_log_files``), as the nodes dropped theirs.

It never decodes records: the log reader frames them and checks their CRCs only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from rtproto.v1 import push_pb2

from .. import env
from ..background import background_loop
from ..cluster import ClusterSpec, NodeSpec, claim_for_cluster, quorum
from ..log import DirectoryWatcher, archive_log_files
from ..streams import check_stream_name, check_topic, read_topic
from ._link import Connect, PushLink, ReadCache, TraceContext, plain_channel

log = logging.getLogger("rtcommon.replication")

#: With data outstanding, a node that sends no reply for this long is given up on
#: (reconnected, or with a single ingress, failed over).
DEFAULT_REPLY_TIMEOUT = 3.0
#: How long stop() lets the links send what is left and hear the nodes end their calls.
DEFAULT_DRAIN_TIMEOUT = 5.0


class Replicator:
    """Ships the log directory ``log_dir`` as stream ``stream`` to the nodes of ``cluster``.

    ``stream`` defaults to the directory's name, ``topic`` to the topic recorded in the
    directory (by :func:`rtcommon.streams.write_topic`), else the stream's name: the
    cluster deduplicates per topic. ``connect`` opens a channel to a node (default: its
    internal push port, in plain text; an external client's connects with mutual TLS).
    ``trace_context`` names the trace of a batch a chunk carries (``rt.Publisher``'s).
    ``single_ingress`` defaults to ``RT_SINGLE_INGRESS``. Call :meth:`start`, then
    :meth:`notify` whenever the log has grown, and :meth:`stop` at the end (also as a
    context manager).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        stream: str | None = None,
        cluster: ClusterSpec | None = None,
        *,
        topic: str | None = None,
        single_ingress: bool | None = None,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        watch: bool = False,
        publisher: str | None = None,
        connect: Connect = plain_channel,
        trace_context: TraceContext | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.stream = check_stream_name(stream if stream is not None else self.log_dir.name)
        self.topic = check_topic(topic or read_topic(self.log_dir) or self.stream)
        if not isinstance(cluster, ClusterSpec):
            raise TypeError(f"a replicator needs a ClusterSpec, not {type(cluster).__name__}")
        self.spec = cluster
        claim_for_cluster(self.log_dir, cluster, "the publisher's log folder")
        self.single_ingress = (
            env.settings().single_ingress if single_ingress is None else single_ingress
        )
        self.quorum = quorum(len(self.spec.nodes))
        self._reply_timeout = reply_timeout
        self._connect = connect
        self._trace_context = trace_context
        self._watch = watch
        self._publisher = publisher or f"{env.hostname()}:{os.getpid()}"
        self._held: dict[int, int] = {node.id: 0 for node in self.spec.nodes}
        self._watchers: list[Callable[[], None]] = []
        #: the log is archived before this position (every node is done with it)
        self.archived = 0
        self._archivals: set[asyncio.Future[None]] = set()
        self._reported: dict[int, int] = {node.id: 0 for node in self.spec.nodes}
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run: concurrent.futures.Future[None] | None = None
        self._ready = threading.Event()
        self._links: list[PushLink] = []
        self._stopping: asyncio.Event | None = None
        self._drain_timeout = DEFAULT_DRAIN_TIMEOUT
        self._wake_pending = False
        self._stopped = threading.Event()
        self._startup_error: BaseException | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Replicator:
        if self._run is not None:
            raise RuntimeError("this replicator was started already")
        loop = background_loop()
        self._run = asyncio.run_coroutine_threadsafe(self._main(loop), loop)
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        if self._watch:
            threading.Thread(
                target=self._watch_directory, name=f"rt-replicator-watch {self.stream}", daemon=True
            ).start()
        return self

    def stop(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Send what the log holds to the nodes still connected, for at most ``timeout``
        seconds, then close every stream. Idempotent."""
        loop, run = self._loop, self._run
        self._stopped.set()
        if loop is None or run is None or run.done():
            return
        self._drain_timeout = timeout
        with contextlib.suppress(RuntimeError):  # the loop has stopped already (exit)
            loop.call_soon_threadsafe(self._begin_stop)
        try:
            run.result(timeout + 5.0)
        except concurrent.futures.TimeoutError:
            log.warning("replicator of %s did not stop within %.1f s", self.stream, timeout)
        except (concurrent.futures.CancelledError, Exception):
            pass  # failed or cancelled at exit: already logged, nothing left to stop

    def __enter__(self) -> Replicator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the publisher's side ------------------------------------------------------------

    def notify(self) -> None:
        """The log has grown: look at it now. Cheap; callable from any thread."""
        loop = self._loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True  # at most one wake-up queued, however often this is called
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake_links)

    def wait_replicated(self, position: int, timeout: float | None = None) -> bool:
        """True once a quorum of nodes holds every record before ``position``; False if
        ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._replicated_locked() < position:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from the replicator's loop: quick, thread-safe) whenever a
        node's answer may have moved :attr:`replicated`."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(callback)

    @property
    def held(self) -> dict[int, int]:
        """Per node id: the position before which that node last said it holds everything
        (0 until it has answered)."""
        with self._changed:
            return dict(self._held)

    @property
    def replicated(self) -> int:
        """The position before which a quorum of nodes holds everything, as known here."""
        with self._changed:
            return self._replicated_locked()

    def __repr__(self) -> str:
        mode = "single ingress" if self.single_ingress else "fan-out"
        return f"Replicator({str(self.log_dir)!r}, stream={self.stream!r}, {mode})"

    # -- internals -------------------------------------------------------------------------

    def _replicated_locked(self) -> int:
        by_quorum = sorted(self._held.values(), reverse=True)[self.quorum - 1]
        return max(by_quorum, *self._reported.values())

    def _on_reply(self, node: NodeSpec, reply: push_pb2.PushReply) -> None:
        with self._changed:
            # A node's latest word is the truth, even lower than before (its copy was wiped).
            self._held[node.id] = reply.held
            self._reported[node.id] = reply.replicated
            self._changed.notify_all()
        for callback in list(self._watchers):
            callback()
        if reply.archived > self.archived:
            self.archived = reply.archived
            # Emptying files and fsyncs: off the loop that carries every push.
            task = asyncio.ensure_future(asyncio.to_thread(self._archive, reply.archived))
            self._archivals.add(task)
            task.add_done_callback(self._archivals.discard)

    def _archive(self, before: int) -> None:
        """Every node is done with this log before ``before``: collect its whole files
        there (emptied, sticky bit set), as the nodes dropped their copies."""
        try:
            emptied = archive_log_files(self.log_dir, before)
        except OSError as exc:  # a read-only folder of another process's log
            log.warning("archiving %s before %d: %s", self.log_dir, before, exc)
            return
        if emptied:
            log.info("archived %s before %d (%d files)", self.log_dir, before, len(emptied))

    def _wake_links(self) -> None:
        self._wake_pending = False
        for link in self._links:
            link.wake.set()

    def _begin_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        self._wake_links()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._replicate(loop)
        except BaseException as exc:
            self._startup_error = exc
            log.exception("replicator of %s failed", self.stream)
            raise
        finally:
            self._ready.set()
            self._loop = None

    async def _replicate(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopping = asyncio.Event()
        common = {
            "log_dir": self.log_dir,
            "stream": self.stream,
            "topic": self.topic,
            "publisher": self._publisher,
            "cluster_id": self.spec.id,
            "on_reply": self._on_reply,
            "stopping": self._stopping,
            "reply_timeout": self._reply_timeout,
            "connect": self._connect,
            "trace_context": self._trace_context,
        }
        nodes = self.spec.nodes
        if self.single_ingress and len(nodes) > 1:
            # Spread publishers over the nodes: each starts at a node chosen by its name.
            first = zlib.crc32(self.stream.encode()) % len(nodes)
            self._links = [PushLink(nodes=nodes, first=first, **common)]
        else:
            reads = ReadCache() if len(nodes) > 1 else None  # fan-out links share reads
            self._links = [PushLink(nodes=(node,), reads=reads, **common) for node in nodes]
        tasks = [asyncio.create_task(self._keep_running(link)) for link in self._links]
        self._loop = loop
        self._ready.set()
        if self._stopped.is_set():  # stop() came before the loop was up
            self._stopping.set()
        await self._stopping.wait()
        _, pending = await asyncio.wait(tasks, timeout=self._drain_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _keep_running(self, link: PushLink) -> None:
        """A link handles every fault it knows of; this catches the ones it does not."""
        while not self._stopping.is_set():
            try:
                await link.run()
            except Exception:
                log.exception("push %s to %s failed; restarting it", self.stream, link.node.name)
                await asyncio.sleep(1.0)

    def _watch_directory(self) -> None:
        watcher = DirectoryWatcher(self.log_dir)
        try:
            while not self._stopped.is_set():
                watcher.wait(1.0)
                self.notify()
        finally:
            watcher.close()
