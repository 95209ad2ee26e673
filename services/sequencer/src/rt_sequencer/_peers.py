"""Links to the other nodes: Raft messages, gossip of held positions, backup fetch.

Each peer gets one gRPC channel and two long-lived client streams: Raft
batches (every message queued since the last send goes in one batch) and
gossip (this node's held positions, sent whenever they move, and at least once
a second so a restarted peer learns them). A link that breaks drops what was
queued (Raft resends) and reconnects with a capped backoff.

:class:`ClusterView` holds what every node holds of every stream, from which a
leader learns what a quorum holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import msgspec

from rtcommon.cluster import NodeSpec, quorum
from rtcommon.grpcopts import CHANNEL_OPTIONS
from rtcommon.log import Chunk
from rtproto.v1 import common_pb2, peer_pb2, peer_pb2_grpc

from ._signal import Signal
from .raft import Message

__all__ = [
    "GRPC_OPTIONS",
    "SERVER_OPTIONS",
    "ClusterView",
    "PeerLink",
    "decode_message",
    "encode_message",
]

log = logging.getLogger(__name__)

GRPC_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]
#: A server refuses a port another process holds (gRPC shares ports by default).
SERVER_OPTIONS = [*GRPC_OPTIONS, ("grpc.so_reuseport", 0)]
GOSSIP_KEEPALIVE = 1.0
GOSSIP_COALESCE = 0.002
GOSSIP_TO_FOLLOWERS = 0.05
_RECONNECT_MIN, _RECONNECT_MAX = 0.05, 1.0

_message_encoder = msgspec.msgpack.Encoder()
_message_decoder = msgspec.msgpack.Decoder(Message)


def encode_message(message: Message) -> bytes:
    return _message_encoder.encode(message)


def decode_message(data: bytes) -> Message:
    return _message_decoder.decode(data)


class ClusterView:
    """Held positions of every stream on every node, as this node last heard them, and
    the topic of every stream."""

    def __init__(self, node_count: int) -> None:
        self.node_count = node_count
        self.quorum = quorum(node_count)
        self.held: list[dict[str, int]] = [{} for _ in range(node_count)]
        self.topics: dict[str, str] = {}
        self.changed = Signal()

    def update(self, node: int, held: dict[str, int], topics: dict[str, str]) -> None:
        for stream, topic in topics.items():
            known = self.topics.setdefault(stream, topic)
            if known != topic:
                log.warning(
                    "node %d says stream %s is on topic %r, not %r", node, stream, topic, known
                )
        if self.held[node] != held:
            self.held[node] = dict(held)
            self.changed.fire()

    def streams(self) -> set[str]:
        return {name for held in self.held for name in held}

    def quorum_held(self, stream: str) -> int:
        """The position before which a quorum of nodes holds every record of ``stream``."""
        positions = sorted((held.get(stream, 0) for held in self.held), reverse=True)
        return positions[self.quorum - 1]

    def best_peer(self, stream: str, me: int) -> tuple[int, int]:
        """``(node, held)`` of the peer holding most of ``stream``."""
        node = max(
            (n for n in range(self.node_count) if n != me),
            key=lambda n: self.held[n].get(stream, 0),
            default=me,
        )
        return node, self.held[node].get(stream, 0)


async def backoff_sleep(attempt: int) -> None:
    await asyncio.sleep(min(_RECONNECT_MAX, _RECONNECT_MIN * 2**attempt))


class PeerLink:
    """Everything this node sends to one peer."""

    def __init__(
        self,
        me: int,
        peer: NodeSpec,
        held: Callable[[], dict[str, int]],
        topics: Callable[[], dict[str, str]],
        held_moved: Signal,
        peer_leads: Callable[[], bool],
    ) -> None:
        self.me = me
        self._peer_leads = peer_leads
        self.peer = peer
        self.channel = grpc.aio.insecure_channel(peer.push, options=GRPC_OPTIONS)
        self.stub = peer_pb2_grpc.PeerStub(self.channel)
        self._raft_queue: list[bytes] = []
        self._raft_wake = asyncio.Event()
        self._held = held
        self._topics = topics
        self._held_moved = held_moved
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run("raft", self._raft_stream)),
            asyncio.create_task(self._run("gossip", self._gossip_stream)),
        ]

    def send_raft(self, message: Message) -> None:
        self._raft_queue.append(encode_message(message))
        self._raft_wake.set()

    async def fetch(self, stream: str, position: int) -> AsyncIterator[Chunk]:
        """The backup path: ``stream``'s input copy on this peer from ``position`` on."""
        call = self.stub.Fetch(peer_pb2.FetchRequest(stream=stream, position=position))
        async for chunk in call:
            yield Chunk(chunk.position, chunk.data, chunk.sealed)

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
                log.debug("%s link to %s broke: %s", what, self.peer.name, exc.code())
                attempt += 1
            self._raft_queue.clear()  # Raft resends what mattered
            await backoff_sleep(attempt)

    async def _raft_stream(self) -> None:
        async def batches() -> AsyncIterator[peer_pb2.RaftBatch]:
            while True:
                await self._raft_wake.wait()
                self._raft_wake.clear()
                if self._raft_queue:
                    messages, self._raft_queue = self._raft_queue, []
                    yield peer_pb2.RaftBatch(from_node=self.me, messages=messages)

        await self.stub.Raft(batches())

    async def _gossip_stream(self) -> None:
        async def states() -> AsyncIterator[peer_pb2.NodeState]:
            loop = asyncio.get_running_loop()
            last: dict[str, int] | None = None
            sent_at = 0.0
            while True:
                held = self._held()
                keepalive = loop.time() - sent_at >= GOSSIP_KEEPALIVE
                if held != last or keepalive:
                    # A stream's topic travels with the first state that names it on this
                    # connection (and with every keepalive), never after it.
                    topics = self._topics()
                    if not keepalive and last is not None:
                        topics = {name: topics[name] for name in held.keys() - last.keys()}
                    yield peer_pb2.NodeState(node=self.me, held=held, topics=topics)
                    last, sent_at = held, loop.time()
                    # Held positions move with every group sync. The leader needs them
                    # promptly (it proposes what a quorum holds), not each one; other
                    # peers need them only for the backup path and status.
                    await asyncio.sleep(
                        GOSSIP_COALESCE if self._peer_leads() else GOSSIP_TO_FOLLOWERS
                    )
                    continue
                await self._held_moved.wait_for(GOSSIP_KEEPALIVE)

        await self.stub.Gossip(states())


def empty() -> common_pb2.Empty:
    return common_pb2.Empty()
