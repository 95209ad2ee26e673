"""Links to the other nodes: Raft messages, gossip of held positions, backup fetch.

Each peer gets one gRPC channel and two long-lived client streams: Raft
batches (every message queued since the last send goes in one batch) and
gossip (the states the merge core asks to send; when several wait, the latest
goes, with the topics of all; after the first whole state on a stream, only the
streams whose positions moved). A link that breaks drops what was queued (Raft
resends, the core's gossip keepalive repeats) and reconnects with a capped
backoff.

Versions: every state a node gossips names the peer protocol it speaks
(:data:`PEER_PROTOCOL`), and a node speaks to each peer in the newest form that peer
has said it understands, so a cluster upgrades one node at a time. To a peer that has
said nothing (an older version, or one not heard from yet) a node sends no COMMIT
(an empty APPEND says the same) and whole gossip states only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import msgspec

from rtcommon.cluster import NodeSpec
from rtcommon.follow import cancelling
from rtcommon.grpcopts import CHANNEL_OPTIONS
from rtcommon.log import Chunk
from rtproto.v1 import common_pb2, peer_pb2, peer_pb2_grpc

from .raft import Message, MessageType

__all__ = [
    "GRPC_OPTIONS",
    "PEER_PROTOCOL",
    "PeerLink",
    "decode_message",
    "encode_message",
    "for_peer",
    "gossip_state",
    "raft_batches",
    "server_options",
]

log = logging.getLogger(__name__)

GRPC_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]
#: The largest gRPC message a node's client-facing ports take in; a larger one is refused
#: with RESOURCE_EXHAUSTED before it is read. Log bytes travel in chunks of a mebibyte or
#: two (a longer record in pieces), so what one call can make a node hold does not grow
#: with the message size (issue 14 #6).
MAX_RECEIVED_MESSAGE = 16 << 20
#: The largest message the peers' listener takes (and the push port, when peers come to
#: it): a Raft SNAPSHOT message carries the merge's checkpoint whole, some 20 bytes for
#: each stream and each dedup origin the cluster merged.
MAX_PEER_MESSAGE = 128 << 20
#: A batch of Raft messages closes once it holds this many bytes.
RAFT_BATCH_BYTES = 1 << 20


def server_options(max_received: int) -> list[tuple[str, int]]:
    """A node's server options, taking gRPC messages of ``max_received`` bytes at most;
    a port another process holds is refused (gRPC shares ports by default)."""
    return [
        *(o for o in GRPC_OPTIONS if o[0] != "grpc.max_receive_message_length"),
        ("grpc.max_receive_message_length", max_received),
        ("grpc.so_reuseport", 0),
    ]


_RECONNECT_MIN, _RECONNECT_MAX = 0.05, 1.0

_message_encoder = msgspec.msgpack.Encoder()
_message_decoder = msgspec.msgpack.Decoder(Message)


def encode_message(message: Message) -> bytes:
    return _message_encoder.encode(message)


#: The peer protocol that brought Raft's COMMIT message and partial gossip states; 0 is
#: what nodes spoke before they named it (neither).
COMMIT_AND_PARTIAL = 2
#: The peer protocol this node speaks.
PEER_PROTOCOL = COMMIT_AND_PARTIAL


def for_peer(message: Message, protocol: int) -> Message:
    """``message`` as a peer speaking ``protocol`` understands it: a COMMIT (the commit
    index moved, nothing to append) is an empty APPEND for an older one, which answers
    it as it would a heartbeat."""
    if message.type is MessageType.COMMIT and protocol < COMMIT_AND_PARTIAL:
        return dataclasses.replace(message, type=MessageType.APPEND)
    return message


#: Terms, indexes and ids on the wire stay below this: a forged term near 2**64 would be
#: stored, and the next campaign's term + 1 would not fit the hard state's 64 bits.
MAX_WIRE_NUMBER = 1 << 62


def decode_message(data: bytes) -> Message:
    """A Raft message from its bytes; ValueError if they are not one, or carry a number
    out of bounds."""
    try:
        message = _message_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a Raft message: {exc}") from exc
    numbers = [message.term, message.log_term, message.index, message.commit]
    numbers += [message.src, message.dst, message.reject_hint]
    numbers += [n for entry in message.entries for n in (entry.term, entry.index)]
    if message.snapshot is not None:
        numbers += [message.snapshot.index, message.snapshot.term]
    if not all(0 <= n < MAX_WIRE_NUMBER for n in numbers):
        raise ValueError(f"a {message.type.name} message with a number out of bounds")
    return message


def raft_batches(messages: list[bytes], limit: int = RAFT_BATCH_BYTES) -> Iterator[list[bytes]]:
    """``messages`` in order, in batches of at most ``limit`` bytes (a longer message
    alone): a batch stays far below what a node takes in one gRPC message."""
    batch: list[bytes] = []
    size = 0
    for message in messages:
        if batch and size + len(message) > limit:
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += len(message)
    if batch:
        yield batch


async def backoff_sleep(attempt: int) -> None:
    await asyncio.sleep(min(_RECONNECT_MAX, _RECONNECT_MIN * 2**attempt))


class PeerLink:
    """Everything this node sends to one peer."""

    def __init__(
        self,
        me: int,
        peer: NodeSpec,
        session: int,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.me = me
        self.peer = peer
        self.session = session  #: named in every request: a peer of another session refuses it
        # The peer's own listener if it has one (mutual TLS with ``credentials``), else
        # its push port.
        if credentials is not None:
            self.channel = grpc.aio.secure_channel(peer.peer, credentials, options=GRPC_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(peer.peer or peer.push, options=GRPC_OPTIONS)
        self.stub = peer_pb2_grpc.PeerStub(self.channel)
        self._raft_queue: list[bytes] = []
        self._raft_wake = asyncio.Event()
        self._gossip: tuple[dict[str, int], dict[str, str], dict[str, int]] | None = None
        self._gossip_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_warning = ""
        #: the peer protocol the peer said it speaks (its gossip); 0 until it says
        self.protocol = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run("raft", self._raft_stream)),
            asyncio.create_task(self._run("gossip", self._gossip_stream)),
        ]

    def send_raft(self, message: Message) -> None:
        self._raft_queue.append(encode_message(for_peer(message, self.protocol)))
        self._raft_wake.set()

    def send_gossip(
        self, held: dict[str, int], topics: dict[str, str], done: dict[str, int]
    ) -> None:
        if self._gossip is not None:
            topics = {**self._gossip[1], **topics}  # a state replaced keeps its topics
        self._gossip = (held, topics, done)
        self._gossip_wake.set()

    async def fetch(self, stream: str, position: int) -> AsyncIterator[Chunk]:
        """The backup path: ``stream``'s input copy on this peer from ``position`` on
        (use it under ``contextlib.aclosing``: leaving early cancels the call, so the
        peer stops serving it)."""
        call = self.stub.Fetch(
            peer_pb2.FetchRequest(
                stream=stream, position=position, session=self.session, pieces=True
            )
        )
        async with contextlib.aclosing(cancelling(call)) as chunks:
            async for chunk in chunks:
                yield Chunk(chunk.position, chunk.data, chunk.sealed)

    async def snapshot(self, timeout: float) -> tuple[int, bytes]:
        """This peer's stored Raft snapshot: its index (0: none) and data."""
        reply = await self.stub.Snapshot(
            peer_pb2.SnapshotRequest(session=self.session), timeout=timeout
        )
        return reply.index, reply.data

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.channel.close()

    async def _run(self, what: str, stream: Callable[[], AsyncIterator]) -> None:
        attempt = 0
        while True:
            try:
                await stream()
                attempt = 0
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    self._warn_once(f"{what} link to {self.peer.name} refused: {exc.details()}")
                else:
                    log.debug("%s link to %s broke: %s", what, self.peer.name, exc.code())
                attempt += 1
            self._raft_queue.clear()  # Raft resends what mattered
            await backoff_sleep(attempt)

    def _warn_once(self, text: str) -> None:
        if text != self._last_warning:
            self._last_warning = text
            log.warning("%s", text)

    async def _raft_stream(self) -> None:
        async def batches() -> AsyncIterator[peer_pb2.RaftBatch]:
            while True:
                await self._raft_wake.wait()
                self._raft_wake.clear()
                queued, self._raft_queue = self._raft_queue, []
                for messages in raft_batches(queued):
                    yield peer_pb2.RaftBatch(
                        from_node=self.me, messages=messages, session=self.session
                    )

        await self.stub.Raft(batches())

    async def _gossip_stream(self) -> None:
        async def states() -> AsyncIterator[peer_pb2.NodeState]:
            told: Told = None  # what this stream has told the peer
            while True:
                await self._gossip_wake.wait()
                self._gossip_wake.clear()
                if self._gossip is not None:
                    (held, topics, done), self._gossip = self._gossip, None
                    if self.protocol < COMMIT_AND_PARTIAL:
                        told = None  # whole states only
                    state, told = gossip_state(self.me, self.session, held, topics, done, told)
                    yield state

        await self.stub.Gossip(states())


#: The held and done positions a gossip stream last told its peer (None: nothing yet).
Told = tuple[dict[str, int], dict[str, int]] | None


def gossip_state(
    node: int,
    session: int,
    held: dict[str, int],
    topics: dict[str, str],
    done: dict[str, int],
    told: Told,
) -> tuple[peer_pb2.NodeState, Told]:
    """The state to send after ``told`` on a gossip stream, and what the peer then knows:
    with many streams most stand still, so only those whose positions moved are named
    (``partial``); the first state, and one that drops a stream, is whole."""
    state = peer_pb2.NodeState(node=node, topics=topics, session=session, protocol=PEER_PROTOCOL)
    if told is None or not (told[0].keys() <= held.keys() and told[1].keys() <= done.keys()):
        state.held.update(held)
        state.done.update(done)
    else:
        state.held.update(held.items() - told[0].items())
        state.done.update(done.items() - told[1].items())
        state.partial = True
    return state, (held, done)


def empty() -> common_pb2.Empty:
    return common_pb2.Empty()
