"""The node's gRPC services: Push (publishers), Pull (subscribers), Subscribe (decoded
messages, for clients in any language), Peer, Admin.

Each servicer translates between the wire and the node's parts and maps their
errors to gRPC status codes; the logic lives in the parts. Each sees the node
through a narrow interface (a Protocol below) naming just what it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from rtcommon.log import (
    COLLECTED,
    RESET,
    Chunk,
    LogEvent,
    LogReader,
    MirrorError,
    PositionError,
    PositionPastEndError,
    Record,
    RecordDecoder,
    RecordError,
    TagFilter,
    split_position,
    starts_a_record,
)
from rtcommon.streams import StreamNameError, is_stream_name, publishes_into
from rtcommon.telemetry import prometheus_text
from rtcommon.tls import ClientIdentity, node_identity
from rtproto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    peer_pb2,
    peer_pb2_grpc,
    publisher_pb2,
    publisher_pb2_grpc,
    pull_pb2,
    pull_pb2_grpc,
    push_pb2,
    push_pb2_grpc,
)

from ._clients import Client, Clients
from ._external import AccessRefused, ExternalAccess
from ._files import MergedLog
from ._inputs import InputStore, OwnerConflictError, TopicConflictError
from ._peers import decode_message
from ._signal import Signal
from ._tracing import TracedBatches
from .core import raft_id
from .raft import Message

__all__ = [
    "AdminHost",
    "AdminService",
    "PeerHost",
    "PeerService",
    "PeersOnly",
    "PruneUnavailableError",
    "PullHost",
    "PullService",
    "PushHost",
    "PushService",
    "SubscriberService",
]

log = logging.getLogger(__name__)

PULL_CHUNK_BYTES = 1 << 20
#: What a Pull's ``max_chunk_bytes`` may ask for at most: a chunk is read whole into memory.
MAX_PULL_CHUNK_BYTES = 4 << 20
#: Stream names gossip carried that are remembered as checked (then forgotten at once).
MAX_KNOWN_NAMES = 100_000
IDLE_HEARTBEAT = 1.0
#: A reader this long behind the log's end with nothing to read is at damaged bytes.
STALLED_AFTER = 2.0
REPLY_COALESCE = 0.005


class PruneUnavailableError(Exception):
    """A prune cannot be proposed now: no leader is known, or it did not commit in time."""


async def _serve(
    reader: LogReader,
    grown: Signal,
    context,
    *,
    merged: bool = False,
    end: Callable[[], int] | None = None,
    convert: Callable[[Chunk | LogEvent], Any] | None = None,
):
    """A server stream of ``reader``'s chunks, following the log as ``grown`` fires.

    With ``merged`` (the merged log), a hard reset met in the log goes on as a chunk
    marked ``reset`` at the new session's start, and records garbage collection took
    as a chunk marked ``collected`` after them; anywhere else either is damage. With
    ``end`` (where the log's writer says it ends), a reader that cannot get there is
    reading damaged bytes (see :func:`_follow`). ``convert`` makes each chunk or event a
    reply (default: a ``LogChunk``)."""
    convert = convert or _chunk_reply
    with reader:
        try:
            wait = functools.partial(grown.wait_for, 1.0)
            async for item in _follow(reader, wait, merged=merged, end=end):
                if isinstance(item, LogEvent):
                    log.info("passing on a %s at %d to %d", item.kind, *item.positions)
                yield convert(item)
        except _DataLoss as exc:
            await context.abort(grpc.StatusCode.DATA_LOSS, str(exc))


def _chunk_reply(item: Chunk | LogEvent) -> common_pb2.LogChunk:
    if isinstance(item, LogEvent):
        return common_pb2.LogChunk(
            position=item.position,
            reset=item.kind == RESET,
            collected=item.kind == COLLECTED,
        )
    return common_pb2.LogChunk(position=item.position, data=item.data, sealed=item.sealed)


def _without(message: str, directory, name: str) -> str:
    """``message`` with the server's path of ``directory`` told as ``name``: a client
    learns nothing of the node's file system."""
    return message.replace(str(directory), name)


class _DataLoss(Exception):
    """The log being served is damaged at a position."""


async def _follow(reader: LogReader, wait, *, merged: bool, end: Callable[[], int] | None):
    """Chunks of ``reader`` as they come, waiting with ``wait()`` when there are none
    (and ``reset`` and ``collected`` events, with ``merged``).

    An idle stream carries an empty chunk at least every ``IDLE_HEARTBEAT`` seconds, so
    a receiver can tell a quiet log from a node that hangs. A reader that stays behind
    ``end()`` in the same file for ``STALLED_AFTER`` seconds with nothing to read is at
    bytes that are not whole records (zeroed or torn inside the file being written):
    that is data loss here, and the receiver goes to another node rather than wait for
    ever."""
    loop = asyncio.get_running_loop()
    last_sent = last_read = loop.time()
    while True:
        items = reader.read_chunks()
        if not items:
            now = loop.time()
            position = reader.position
            if end is not None and position is not None and _behind_in_one_file(position, end()):
                if now - last_read >= STALLED_AFTER:
                    raise _DataLoss(
                        f"the log cannot be read at {position}: it holds bytes up to {end()}"
                        " that are not whole records"
                    )
            else:
                last_read = now
            if now - last_sent >= IDLE_HEARTBEAT and position is not None:
                last_sent = now
                yield Chunk(reader.taken_to, b"")  # inside a record sent in pieces, maybe
            await wait()
            continue
        last_sent = last_read = loop.time()
        for item in items:
            if merged and isinstance(item, LogEvent) and item.kind in (RESET, COLLECTED):
                yield item
            elif not isinstance(item, Chunk):
                # Corruption in a log this node serves: never pass a silently short file
                # on; the receiver goes to another node.
                log.error("%s while serving %s", item, reader.directory)
                raise _DataLoss(f"{item.kind} at {item.positions[0]} in {reader.directory.name}")
            else:
                yield item


def _behind_in_one_file(position: int, end: int) -> bool:
    """Whether ``position`` is before ``end`` in the same file: the file being written
    holds more than a reader there can read. (A writer between files, whose successor a
    full disk kept from being created, names a file that does not exist yet.)"""
    return position < end and split_position(position)[:2] == split_position(end)[:2]


class PushHost(Protocol):
    """What Push needs of the node: its input copies, and what a quorum holds."""

    inputs: InputStore
    view_changed: Signal  #: fires when any node's held positions are heard
    clients: Clients
    cluster_id: str  #: the cluster's identity ("" if it has none)
    max_streams: int  #: input streams this node holds at most (RT_MAX_STREAMS)
    #: streams one publisher certificate may open here (RT_MAX_STREAMS_PER_PUBLISHER)
    max_streams_per_publisher: int
    traced: TracedBatches  #: publishers' batches this node traces

    def quorum_held(self, stream: str) -> int: ...


class PullHost(Protocol):
    """What Pull needs of the node: its merged log (another object after an install)."""

    clients: Clients

    @property
    def out(self) -> MergedLog: ...

    @property
    def collected_before(self) -> int: ...


class PeerHost(Protocol):
    """What Peer needs of the node: Raft's inbox, the gossip sink, the input copies."""

    id: int
    node_count: int
    session: int  #: the merged log's session: peers of another one are refused
    inputs: InputStore

    def step_raft(self, message: Message) -> None: ...

    def on_gossip(
        self, node: int, held: dict[str, int], topics: dict[str, str], done: dict[str, int]
    ) -> None: ...

    def heard_protocol(self, node: int, protocol: int) -> None: ...

    def stored_snapshot(self) -> tuple[int, bytes]: ...

    async def file_digest(self, position: int, stream: str = "") -> peer_pb2.FileDigestReply: ...


class AdminHost(Protocol):
    """What Admin needs of the node: its status, and prunes of the merged log."""

    def status(self) -> admin_pb2.NodeStatus: ...

    async def prune(self, before: int, *, forwarded: bool = False) -> int: ...


class PushService(push_pb2_grpc.PushServicer):
    """Push, as the internal listener serves it, or, with ``access``, the external one:
    there every push is admitted by the client's certificate (``_external``)."""

    def __init__(self, node: PushHost, access: ExternalAccess | None = None) -> None:
        self.node = node
        self.access = access

    async def Push(self, request_iterator, context):
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("kind") != "open":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request is open")
        identity = None
        if self.access is not None:
            try:
                identity = self.access.admit(context, first.open)
            except AccessRefused as exc:
                log.warning("external push of %r refused: %s", first.open.stream, exc)
                await context.abort(exc.code, str(exc))
        own = self.node.cluster_id
        if first.open.cluster and own and first.open.cluster != own:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"stream {first.open.stream!r} was written for cluster {first.open.cluster};"
                f" this node belongs to cluster {own}: publish to this cluster from a log"
                " folder of its own (the default folders are per cluster)",
            )
        new = first.open.stream not in self.node.inputs.streams
        if new and len(self.node.inputs.streams) >= self.node.max_streams:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this node holds {len(self.node.inputs.streams)} input streams, its limit"
                f" (RT_MAX_STREAMS): stream {first.open.stream!r} is refused",
            )
        if new and identity is not None and identity.publisher:
            held = self._streams_of(identity.name)
            if held >= self.node.max_streams_per_publisher:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"publisher {identity.name!r} has {held} streams on this node, its limit"
                    f" (RT_MAX_STREAMS_PER_PUBLISHER): stream {first.open.stream!r} is refused",
                )
        try:
            stream = self.node.inputs.open(first.open.stream, first.open.topic or first.open.stream)
            stream.claim_owner(first.open.owner)
        except OwnerConflictError as exc:
            log.warning("push refused: %s", exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except StreamNameError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TopicConflictError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except OSError as exc:
            await context.abort(*_disk_trouble(first.open.stream, exc))
        log.info("push of %s from %s", stream.name, first.open.publisher or "?")
        with self.node.clients.connected(
            "publisher", stream.name, context.peer(), first.open.publisher
        ) as client:
            await self._push(stream, client, context, new, identity)

    def _streams_of(self, publisher: str) -> int:
        """How many streams publisher id ``publisher`` writes on this node."""
        return sum(
            1
            for name, stream in self.node.inputs.streams.items()
            if stream.topic is not None and publishes_into(publisher, name, stream.topic)
        )

    async def _push(
        self, stream, client: Client, context, new: bool, identity: ClientIdentity | None
    ) -> None:
        reader = asyncio.create_task(self._receive(stream, client, context, identity))
        wake = asyncio.Event()
        reader.add_done_callback(lambda _: wake.set())
        stream.held_changed.notify(wake)
        self.node.view_changed.notify(wake)
        try:
            last = None
            while not reader.done():
                # received moves while a long record comes in pieces (held does not):
                # replies go on at least every second, and the publisher sees life.
                reply = (
                    stream.held,
                    self.node.quorum_held(stream.name),
                    stream.archived,
                    stream.received,
                )
                if reply != last:
                    last = reply
                    await context.write(
                        push_pb2.PushReply(
                            held=reply[0],
                            replicated=reply[1],
                            archived=reply[2],
                            takes_pieces=True,
                            received=reply[3],
                        )
                    )
                    # Positions move with every group sync and gossip; a publisher needs
                    # them promptly, not each one.
                    await asyncio.sleep(REPLY_COALESCE)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await wake.wait()
                wake.clear()
            error = reader.exception()
            if isinstance(error, MirrorError | PositionError):
                if new and stream.written == 0:
                    self.node.inputs.discard(stream.name)  # refused at once: leave nothing
                what = _without(str(error), stream.directory, f"s/in/{stream.name}")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, what)
            elif isinstance(error, AccessRefused):
                await context.abort(error.code, str(error))
            elif isinstance(error, OSError):
                await context.abort(*_disk_trouble(stream.name, error))
            elif error is not None:
                raise error
        finally:
            stream.held_changed.forget(wake)
            self.node.view_changed.forget(wake)
            reader.cancel()

    async def _receive(
        self, stream, client: Client, context, identity: ClientIdentity | None
    ) -> None:
        admit = None if identity is None else self.access.admission(identity)
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            chunk = request.chunk
            if identity is not None:
                self.access.check(identity)
            stream.write(Chunk(chunk.position, chunk.data, chunk.sealed), admit=admit)
            if request.traceparent:
                end = chunk.position + len(chunk.data)
                self.node.traced.received(stream.name, end, request.traceparent)
            client.moved(len(chunk.data), chunk.position + len(chunk.data))


def _disk_trouble(stream: str, error: OSError) -> tuple[grpc.StatusCode, str]:
    """The status a push gets when this node cannot write its copy: RESOURCE_EXHAUSTED
    for a full disk (the publisher retries, as it does any node), UNAVAILABLE otherwise;
    the message names no server path."""
    full = error.errno == errno.ENOSPC
    why = "its disk is full" if full else (error.strerror or type(error).__name__)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
    return code, f"this node cannot write stream {stream!r} now: {why}"


class PeersOnly:
    """The peer listener's gate under internal TLS: a call must come from another node of
    the cluster, named by its certificate (``urn:rt:node:<id>``); anyone else, a client
    certificate of the same CA included, is refused."""

    def __init__(self, own_id: int, node_count: int) -> None:
        self.own_id = own_id
        self.node_count = node_count

    async def sender(self, context) -> int:
        """The calling node's id; the call is aborted for anyone else."""
        certificates = context.auth_context().get("x509_pem_cert")
        sender = node_identity(certificates[0]) if certificates else None
        if sender is None or not 0 <= sender < self.node_count or sender == self.own_id:
            log.warning("refused a peer call from %s: not another node", context.peer())
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "only the cluster's other nodes call here"
            )
        return sender


async def _admit(gate: PeersOnly | None, context) -> int | None:
    """The node calling through ``gate`` (None without one); aborts for anyone else."""
    return None if gate is None else await gate.sender(context)


class PullService(pull_pb2_grpc.PullServicer):
    """Pull; with ``gate`` (the peer listener), for the other nodes only."""

    def __init__(self, node: PullHost, gate: PeersOnly | None = None) -> None:
        self.node = node
        self.gate = gate

    async def Pull(self, request, context):
        await _admit(self.gate, context)
        out = self.node.out
        # Records were checked on their way in; the subscriber checks them again.
        reader = await _open_merged(
            out,
            getattr(request, "from"),
            request.position,
            min(request.max_chunk_bytes or PULL_CHUNK_BYTES, MAX_PULL_CHUNK_BYTES),
            context,
            verify=False,
            pieces=request.pieces,
        )
        with self.node.clients.connected("subscriber", "merged", context.peer()) as client:
            async for chunk in _serve(
                reader, out.appended, context, merged=True, end=self._merged_end
            ):
                client.moved(len(chunk.data), chunk.position + len(chunk.data))
                chunk.collected_before = self.node.collected_before
                yield chunk

    def _merged_end(self) -> int:
        return self.node.out.written_position  # the node's, not out: an install replaces it


async def _open_merged(
    out: MergedLog,
    start: int,
    position: int,
    chunk_size: int,
    context,
    *,
    verify: bool,
    pieces: bool = False,
) -> LogReader:
    """A reader of the merged log from where a Pull or Subscribe request says (``start``
    is their ``From``: a position, the first held, or the end now); the call is aborted
    with OUT_OF_RANGE past the end and INVALID_ARGUMENT inside a record. A position among
    collected records gives a ``collected`` event first. ``pieces``: see LogReader."""
    if start == pull_pb2.PullRequest.END:
        position = out.written_position
    elif start == pull_pb2.PullRequest.START:
        position = out.first_position
    try:
        reader = LogReader(
            out.directory,
            position,
            chunk_size=chunk_size,
            verify=verify,
            merged=True,
            pieces=pieces,
        )
    except PositionPastEndError as exc:
        what = _without(str(exc), out.directory, "s/out")
        await context.abort(
            grpc.StatusCode.OUT_OF_RANGE, f"{what} (merged log ends at {out.written_position})"
        )
    except PositionError as exc:
        what = _without(str(exc), out.directory, "s/out")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, what)
    if not starts_a_record(out.directory, position):
        reader.close()
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"position {position} is not the start of a record in the merged log",
        )
    return reader


class SubscriberService(publisher_pb2_grpc.SubscriberServicer):
    """Subscribe: the merged log decoded into messages, for clients in any language."""

    def __init__(self, node: PullHost) -> None:
        self.node = node

    async def Subscribe(self, request, context):
        out = self.node.out
        try:
            wanted = TagFilter(tuple(request.tags)) if request.tags else None
        except RecordError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        reader = await _open_merged(
            out, getattr(request, "from"), request.position, PULL_CHUNK_BYTES, context, verify=True
        )

        def convert(item: Chunk | LogEvent) -> publisher_pb2.SubscribeReply:
            if isinstance(item, LogEvent):
                return publisher_pb2.SubscribeReply(
                    event=item.kind, event_positions=list(item.positions)
                )
            decoder = RecordDecoder(item.position, wanted, verify=False)  # the reader did
            decoder.feed(item.data)
            records, _ = decoder.next_records()
            return publisher_pb2.SubscribeReply(messages=[_delivered(r) for r in records])

        with self.node.clients.connected("subscriber", "messages", context.peer()) as client:
            async for reply in _serve(
                reader,
                out.appended,
                context,
                merged=True,
                end=lambda: self.node.out.written_position,
                convert=convert,
            ):
                if reply.messages:
                    client.moved(0, reply.messages[-1].position)
                yield reply


def _delivered(record: Record) -> publisher_pb2.DeliveredMessage:
    return publisher_pb2.DeliveredMessage(
        position=record.position,
        payload=record.payload,
        codec=record.codec,
        origin=record.origin,
        id=record.id,
        ts=record.ts,
        tags=record.tags,
    )


class PeerService(peer_pb2_grpc.PeerServicer):
    """Peer, for the other nodes. With ``gate`` (a listener with mutual TLS) every call
    must come from another node of the cluster, by its certificate, and a node may speak
    only for itself: Raft messages from its Raft id, gossip of its own state."""

    def __init__(self, node: PeerHost, gate: PeersOnly | None = None) -> None:
        self.node = node
        self.gate = gate
        self._stream_names: set[str] = set()  # names gossip carried that were checked

    async def _sender(self, context) -> int | None:
        return await _admit(self.gate, context)

    async def Raft(self, request_iterator, context):
        sender = await self._sender(context)
        step = self.node.step_raft
        async for batch in request_iterator:
            await self._check_session(batch.session, context)
            try:
                messages = [decode_message(data) for data in batch.messages]
            except ValueError as exc:
                log.warning("refused a Raft batch from %s: %s", context.peer(), exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            if sender is not None and any(m.src != raft_id(sender) for m in messages):
                log.warning("node %d sent Raft messages in another node's name", sender)
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, "Raft messages in another node's name"
                )
            for message in messages:
                step(message)
        return common_pb2.Empty()

    async def Gossip(self, request_iterator, context):
        sender = await self._sender(context)
        nodes = self.node.node_count
        # Each node's whole state, as its partial ones on this call build it.
        wholes: dict[int, tuple[dict[str, int], dict[str, int]]] = {}
        async for state in request_iterator:
            await self._check_session(state.session, context)
            if sender is not None and state.node != sender:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, "gossip of another node's state"
                )
            if not self._names_streams(state):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "gossip names what is not a stream"
                )
            if 0 <= state.node < nodes and state.node != self.node.id:
                self.node.heard_protocol(state.node, state.protocol)
                held, done = wholes.setdefault(state.node, ({}, {}))
                if not state.partial:
                    held.clear()
                    done.clear()
                held.update(state.held)
                done.update(state.done)
                self.node.on_gossip(state.node, dict(held), dict(state.topics), dict(done))
        return common_pb2.Empty()

    def _names_streams(self, state: peer_pb2.NodeState) -> bool:
        """Whether every name gossip carries is a stream name (each checked once: a
        state names every stream, every time)."""
        known = self._stream_names
        new = {*state.held, *state.done, *state.topics, *state.topics.values()} - known
        if not all(map(is_stream_name, new)):
            return False
        if len(known) > MAX_KNOWN_NAMES:
            known.clear()
        known |= new
        return True

    async def _check_session(self, session: int, context) -> None:
        """Refuse a peer of another session: one of the two missed a hard reset."""
        if session != self.node.session:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this node is in session {self.node.session}, the sender in session"
                f" {session}: one of them missed a hard reset",
            )

    async def Fetch(self, request, context):
        await self._sender(context)
        await self._check_session(request.session, context)
        stream = self.node.inputs.streams.get(request.stream)
        if stream is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no stream {request.stream!r} here")
        try:
            reader = LogReader(
                stream.directory,
                request.position,
                chunk_size=PULL_CHUNK_BYTES,
                verify=False,
                pieces=request.pieces,
            )
        except PositionError as exc:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                _without(str(exc), stream.directory, f"s/in/{stream.name}"),
            )
        if not starts_a_record(stream.directory, request.position):
            reader.close()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"position {request.position} is not the start of a record of {stream.name}",
            )
        async for chunk in _serve(reader, self.node.inputs.written, context):
            yield chunk

    async def Snapshot(self, request, context):
        await self._sender(context)
        await self._check_session(request.session, context)
        index, data = self.node.stored_snapshot()
        return peer_pb2.SnapshotReply(index=index, data=data)

    async def FileDigest(self, request, context):
        await self._sender(context)
        await self._check_session(request.session, context)
        if request.stream and not is_stream_name(request.stream):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a stream name")
        return await self.node.file_digest(request.position, request.stream)


class AdminService(admin_pb2_grpc.AdminServicer):
    """Admin; with ``gate`` (the peer listener), for the other nodes only."""

    def __init__(self, node: AdminHost, gate: PeersOnly | None = None) -> None:
        self.node = node
        self.gate = gate

    async def Status(self, request, context):
        await _admit(self.gate, context)
        return self.node.status()

    async def Metrics(self, request, context):
        await _admit(self.gate, context)
        return admin_pb2.MetricsReply(text=prometheus_text())

    async def Prune(self, request, context):
        await _admit(self.gate, context)
        try:
            pruned = await self.node.prune(request.before, forwarded=request.forwarded)
        except PruneUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except grpc.aio.AioRpcError as exc:  # the leader's answer, passed on
            await context.abort(exc.code(), f"the leader: {exc.details()}")
        return admin_pb2.PruneReply(pruned_before=pruned)
