"""One push stream: ships a publisher's log directory to a node over ``rtproto.v1.Push``.

A link runs inside the replicator's asyncio loop. Each *session* opens a Push call,
learns from the node's first reply the position before which the node already holds
everything (``held``), and sends the log from there: whole records of one file per
message, coalesced up to about 1 MiB, never one message per record (a longer record goes
in pieces over several messages, to a node that says it takes them). Replies raise
``held`` (and ``replicated``, what a quorum holds) as the node makes the bytes durable.

Any fault (the node down, an error status, no reply for ``reply_timeout`` seconds while
data is outstanding) ends the session; the link opens a new one from the node's new
``held``, so nothing is lost or sent twice into the node's copy. Reconnects back off
exponentially with jitter (``rtcommon.follow.FailoverPolicy``), capped at
``MAX_BACKOFF`` seconds; a session that made progress resets the backoff.

A link is given one node (the default fan-out: one link per node) or several: with a
single ingress it moves on to the next node after every fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from rtproto.v1 import common_pb2, push_pb2, push_pb2_grpc

from ..cluster import NodeSpec
from ..follow import FailoverPolicy
from ..grpcopts import CHANNEL_OPTIONS, describe_error
from ..log import RESET, Chunk, LogEvent, LogReader, PositionError
from ..streams import log_owner

log = logging.getLogger("rtcommon.replication")

#: Coalesce whole records of one file into messages of about this size (DESIGN 12: a gRPC
#: stream moves a few thousand messages a second whatever their size).
MAX_MESSAGE_BYTES = 1 << 20
#: How much the log reader takes from a file per read.
READ_BYTES = 1 << 20
#: Reconnect backoff: exponential from about BACKOFF_START, jittered, capped at MAX_BACKOFF.
BACKOFF_START = 0.05
MAX_BACKOFF = 2.0
#: Reads shared between links are kept up to about this many bytes.
READ_CACHE_BYTES = 32 << 20
READ_CACHE_ENTRIES = 4096
#: A session that lasted this long counts as progress, so the next fault retries at once.
HEALTHY_SESSION = 1.0
#: Without a notify, look at the log this often anyway.
IDLE_POLL = 1.0

#: Where a log reader stands: its position, and whether it has already passed the seal
#: of a file that ends there (a position at the end of a sealed file is two states).
ReadState = tuple[int, bool]
#: A read of the log: its requests, the position after its last chunk, the reader's
#: state after it (where the next read starts), and its bytes of records.
CachedRead = tuple[list[push_pb2.PushRequest], int, ReadState, int]
#: Called with (node, reply) for every reply a node sends.
ReplyHandler = Callable[[NodeSpec, push_pb2.PushReply], None]
#: Opens a channel to a node's push port (a session's own; the link closes it).
Connect = Callable[[NodeSpec], grpc.aio.Channel]
#: The trace context (W3C traceparent) of a traced batch ending in [start, end), or "".
TraceContext = Callable[[int, int], str]


def plain_channel(node: NodeSpec) -> grpc.aio.Channel:
    """A channel to a node's internal push port (inside the cluster's network)."""
    return grpc.aio.insecure_channel(node.push, options=CHANNEL_OPTIONS)


class LinkFault(Exception):
    """A push session ended; ``progressed``: it did useful work first (reset the backoff)."""

    def __init__(self, reason: str, *, progressed: bool = False) -> None:
        super().__init__(reason)
        self.progressed = progressed


class _Stopped(Exception):
    """The replicator is stopping: leave the retry loop."""


class ReadCache:
    """Recent reads of the log, shared by the links of one replicator.

    With a fan-out every link sends the same bytes, so the first link to read from a
    position frames and checks the records and builds the requests; the others, at the
    same position a moment later, reuse them. A read is keyed by the reader's state
    before it and holds the state after it, so links that reuse reads stay on the same
    boundaries. A log only grows, so a read stays true; the oldest reads are dropped
    past ``max_bytes``.
    """

    def __init__(self, max_bytes: int = READ_CACHE_BYTES) -> None:
        self._reads: OrderedDict[ReadState, CachedRead] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes

    def get(self, state: ReadState) -> CachedRead | None:
        return self._reads.get(state)

    def put(self, state: ReadState, read: CachedRead) -> None:
        if state in self._reads:
            return
        self._reads[state] = read
        self._bytes += read[3]
        while len(self._reads) > 1 and (
            self._bytes > self._max_bytes or len(self._reads) > READ_CACHE_ENTRIES
        ):
            _, dropped = self._reads.popitem(last=False)
            self._bytes -= dropped[3]


class _Session:
    """What one Push call has sent and heard, for the stall watchdog."""

    __slots__ = (
        "acknowledged",
        "call",
        "held",
        "last_reply",
        "next_read",
        "node",
        "outstanding_since",
        "pieces",
        "reader",
        "reader_state",
        "sent_end",
    )

    def __init__(self, node: NodeSpec, call, reader: LogReader, held: int, pieces: bool) -> None:
        self.node = node
        self.call = call
        self.pieces = pieces  # the node takes a long record in pieces
        self.reader = reader
        self.reader_state: ReadState = (held, False)  # where the reader stands
        self.next_read: ReadState = (held, False)  # where the next read starts
        self.held = held
        self.sent_end = held
        self.last_reply = time.monotonic()
        self.outstanding_since: float | None = None  # when data became unacknowledged
        self.acknowledged = False  # the node has answered since the opening


class PushLink:
    """Ships one log directory to one node at a time, for ever, until stopped."""

    def __init__(
        self,
        *,
        nodes: Sequence[NodeSpec],
        first: int = 0,
        log_dir: Path,
        stream: str,
        topic: str,
        publisher: str,
        cluster_id: str,
        on_reply: ReplyHandler,
        stopping: asyncio.Event,
        reply_timeout: float,
        reads: ReadCache | None = None,
        connect: Connect = plain_channel,
        trace_context: TraceContext | None = None,
    ) -> None:
        self._nodes = tuple(nodes)
        self._connect = connect
        self._trace_context = trace_context
        self._reads = reads
        self._failover = FailoverPolicy(
            len(self._nodes), first=first, initial=BACKOFF_START, cap=MAX_BACKOFF
        )
        self._log_dir = log_dir
        self._stream = stream
        self._topic = topic
        self._owner = ""  # the log's owner id, read (or made) at the first push
        self._publisher = publisher
        self._cluster_id = cluster_id
        self._on_reply = on_reply
        self._stopping = stopping
        self._reply_timeout = reply_timeout
        self.wake = asyncio.Event()
        self._reported_down = False

    @property
    def node(self) -> NodeSpec:
        """The node this link sends to now."""
        return self._nodes[self._failover.node]

    async def run(self) -> None:
        while not self._stopping.is_set():
            node = self.node
            try:
                await self._session()
                return  # a session ends without a fault only when stopping
            except LinkFault as fault:
                # After progress: at once, backoff from scratch; with a single ingress,
                # on to the next node either way.
                delay = self._failover.failed(fault.progressed)
                self._fault(node, fault, retry_in=delay)
            try:
                await self._backoff(delay)
            except _Stopped:
                return

    # -- one session ---------------------------------------------------------------------

    async def _session(self) -> None:
        node = self.node
        started = time.monotonic()
        try:
            channel = self._connect(node)
        except Exception as exc:  # e.g. the TLS pair it needs is missing: said, retried
            raise LinkFault(f"cannot open a channel: {exc}") from exc
        call = None
        session: _Session | None = None
        try:
            call = push_pb2_grpc.PushStub(channel).Push()
            if not self._owner:
                with contextlib.suppress(FileNotFoundError):  # no folder yet: none to own
                    self._owner = log_owner(self._log_dir)
            opening = push_pb2.PushOpen(
                stream=self._stream,
                topic=self._topic,
                publisher=self._publisher,
                cluster=self._cluster_id,
                owner=self._owner,
            )
            await call.write(push_pb2.PushRequest(open=opening))
            async with asyncio.timeout(self._reply_timeout):
                reply = await call.read()
            if reply is grpc.aio.EOF:
                raise LinkFault("the node ended the stream without answering its opening")
            try:
                reader = self._reader(reply.held, pieces=reply.takes_pieces)
            except PositionError as exc:
                # Not counted as held: the node's copy is of another log of this name.
                raise LinkFault(
                    f"the node holds stream {self._stream} up to position {reply.held}, past"
                    f" the end of the log in {self._log_dir} ({exc}); was the log directory"
                    " deleted? A publisher's directory must outlive it, or it needs a new"
                    " publisher id"
                ) from exc
            self._on_reply(node, reply)
            session = _Session(node, call, reader, reply.held, reply.takes_pieces)
            if self._reported_down:
                log.info(
                    "push %s to %s: connected again at position %d",
                    self._stream,
                    _name(node),
                    reply.held,
                )
                self._reported_down = False
            await self._exchange(session)
        except Exception as exc:
            progressed = session is not None and (
                session.acknowledged or time.monotonic() - started >= HEALTHY_SESSION
            )
            fault = exc if isinstance(exc, LinkFault) else LinkFault(await _describe(exc, call))
            fault.progressed = fault.progressed or progressed
            raise fault from exc
        finally:
            if session is not None:
                session.reader.close()
            if call is not None and not call.done():
                call.cancel()
            await channel.close(grace=None)

    async def _exchange(self, session: _Session) -> None:
        """Send and receive until the node fails, the link stalls, or it is drained."""
        sender = asyncio.create_task(self._send(session))
        receiver = asyncio.create_task(self._receive(session))
        watchdog = asyncio.create_task(self._watch(session))
        tasks = {sender, receiver, watchdog}
        try:
            while True:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # raises the task's fault, if it had one
                    tasks.discard(task)
                if receiver in done:
                    if sender in done or self._stopping.is_set():
                        return  # drained: the node saw everything and ended the call
                    raise LinkFault("the node ended the stream")
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def _send(self, session: _Session) -> None:
        call = session.call
        while True:
            self.wake.clear()  # before reading: a notify from now on is not lost
            draining = self._stopping.is_set()
            requests, end = self._read(session)
            if requests:
                for request in requests:
                    await call.write(request)
                session.sent_end = end
                if end > session.held and session.outstanding_since is None:
                    session.outstanding_since = time.monotonic()
                continue
            if draining:
                await call.done_writing()  # the node ends the call once it has it all
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL):
                    await self.wake.wait()

    async def _receive(self, session: _Session) -> None:
        call = session.call
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                return
            session.last_reply = time.monotonic()
            session.acknowledged = True
            session.held = reply.held
            if reply.held >= session.sent_end:
                session.outstanding_since = None
            self._on_reply(session.node, reply)

    async def _watch(self, session: _Session) -> None:
        """A node that holds data back and sends no reply for reply_timeout is abandoned."""
        while True:
            await asyncio.sleep(self._reply_timeout / 4)
            since = session.outstanding_since
            if since is not None:
                silent = time.monotonic() - max(since, session.last_reply)
                if silent > self._reply_timeout:
                    raise LinkFault(
                        f"no reply for {silent:.1f} s with data outstanding (sent up to"
                        f" position {session.sent_end}, the node holds {session.held})"
                    )

    def _read(self, session: _Session) -> tuple[list[push_pb2.PushRequest], int]:
        """The next requests for this session: another link's read from the same state
        if there is one, else a read of the log (shared with the other links)."""
        state = session.next_read
        # A node from before pieces takes each record whole: its reads are its own.
        reads = self._reads if session.pieces else None
        cached = None if reads is None else reads.get(state)
        if cached is not None:
            requests, end, session.next_read, _ = cached
            return requests, end
        if session.reader_state != state:
            # Other links' reads moved this session on: read on from where they ended. (A
            # new reader at the end of a sealed file sends its seal again; nodes ignore it.)
            session.reader.close()
            session.reader = self._reader(state[0], pieces=session.pieces)
            session.reader_state = (state[0], False)
        before = session.reader_state
        began_mid_record = session.reader.mid_record
        requests, end, size, sealed_last = self._read_requests(session.reader)
        if requests:
            after = session.reader.taken_to
            assert after is not None
            session.reader_state = (after, sealed_last and after == end)
            # A read that begins or ends inside a record sent in pieces is not shared: a
            # reader can only be opened at a record's start, so no other link could go on
            # from where it ends (and the next read is this session's own).
            shared = not (began_mid_record or session.reader.mid_record)
            if reads is not None and shared:
                reads.put(before, (requests, end, session.reader_state, size))
        session.next_read = session.reader_state
        return requests, end

    def _reader(self, position: int, *, pieces: bool) -> LogReader:
        """A reader of the log from ``position``; with ``pieces``, a record longer than a
        read travels in pieces of about READ_BYTES, so a push never holds one whole."""
        return LogReader(self._log_dir, position, chunk_size=READ_BYTES, pieces=pieces)

    def _read_requests(
        self, reader: LogReader
    ) -> tuple[list[push_pb2.PushRequest], int, int, bool]:
        """What the log holds beyond the reader, as requests of coalesced chunks, the
        position after the last, their bytes, and whether the last seals its file; about
        MAX_MESSAGE_BYTES at most, so replies interleave."""
        requests: list[push_pb2.PushRequest] = []
        batch: list[Chunk] = []
        batch_bytes = total = 0
        end = 0

        def close_batch() -> None:
            nonlocal batch, batch_bytes
            if batch:
                data = batch[0].data if len(batch) == 1 else b"".join(c.data for c in batch)
                chunk = common_pb2.LogChunk(
                    position=batch[0].position, data=data, sealed=batch[-1].sealed
                )
                traced = ""
                if self._trace_context is not None:
                    traced = self._trace_context(chunk.position, chunk.position + len(data))
                requests.append(push_pb2.PushRequest(chunk=chunk, traceparent=traced))
                batch, batch_bytes = [], 0

        while total < MAX_MESSAGE_BYTES:
            items = reader.read_chunks()
            if not items:
                break
            for item in items:
                if isinstance(item, LogEvent):
                    log.warning(
                        "push %s: %s in the publisher's log at %d (resuming at %d)",
                        self._stream,
                        item.kind,
                        *item.positions,
                    )
                    if item.kind != RESET:
                        continue
                    # The log shrank below what the node holds (it was lost here after an
                    # unsynced write): the node's copy of that file is the fuller one, so
                    # seal it there and go on with the publisher's next file.
                    item = Chunk(item.positions[0], b"", sealed=True)
                size = len(item.data)
                continues = (
                    batch
                    and not batch[-1].sealed
                    and batch[-1].end == item.position
                    and batch_bytes + size <= MAX_MESSAGE_BYTES
                )
                if not continues:
                    close_batch()
                batch.append(item)
                batch_bytes += size
                total += size
                end = item.end
        sealed_last = bool(batch) and batch[-1].sealed
        close_batch()
        return requests, end, total, sealed_last

    # -- retries ---------------------------------------------------------------------------

    async def _backoff(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        if self._stopping.is_set():
            raise _Stopped

    def _fault(self, node: NodeSpec, fault: BaseException, *, retry_in: float) -> None:
        message = "push %s to %s: %s; retrying %s in %.2f s"
        args = (self._stream, _name(node), fault, _name(self.node), retry_in)
        if self._reported_down:
            log.debug(message, *args)
        else:
            log.warning(message, *args)
            self._reported_down = True


def _name(node: NodeSpec) -> str:
    return f"{node.name} ({node.push})"


async def _describe(exc: BaseException, call) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer to the opening request"
    if not isinstance(exc, grpc.aio.AioRpcError) and call is not None and call.done():
        with contextlib.suppress(Exception):
            return f"{(await call.code()).name}: {await call.details()}"
    return describe_error(exc)
