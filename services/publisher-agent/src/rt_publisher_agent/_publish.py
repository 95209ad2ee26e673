"""The Publish API (``rtproto.v1.Publisher``): the agent as a sidecar for clients in any
language.

Each topic gets one :class:`rt.Publisher` (its own local log under the agent's log
folder, replicated as a library publisher's is), shared by every call on that topic.
A call's messages are appended as they come, their payload bytes copied into records
(``Publisher.publish_payload``); replies tell, as they change, how many of the call's
messages are durable in the local log (with their positions), how far a quorum holds
the log, and the window: the client may send messages numbered below
``durable + WINDOW``. A message past the window ends the call (RESOURCE_EXHAUSTED), so a
client that stops reading replies cannot make the agent hold more than ``WINDOW``
messages for it; and while more than ``MAX_UNDURABLE_BYTES`` of a call's bytes wait for
the disk, the agent stops reading the call (gRPC's own flow control then holds the
client).

A call ends when the client half-closes and a quorum holds everything it sent (or when
the client cancels); its messages stay in the local log and are replicated either way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from pathlib import Path

import grpc

from rt import Cluster, Publisher
from rtcommon.errors import RTError
from rtcommon.log import Codec, CodecError, LogError
from rtcommon.streams import check_topic
from rtproto.v1 import publisher_pb2, publisher_pb2_grpc

__all__ = ["MAX_UNDURABLE_BYTES", "WINDOW", "PublishService"]

log = logging.getLogger("rt_publisher_agent.publish")

#: Messages a client may have sent beyond those durable in the local log.
WINDOW = 10_000
#: A call's bytes awaiting the disk beyond which the agent stops reading it.
MAX_UNDURABLE_BYTES = 32 << 20
#: A batch (one gRPC message) is at most this large.
MAX_BATCH_BYTES = 16 << 20
_CODECS = {publisher_pb2.RAW: Codec.RAW, publisher_pb2.MSGPACK: Codec.MSGPACK}


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class PublishService(publisher_pb2_grpc.PublisherServicer):
    def __init__(self, cluster: Cluster, log_dir: Path | None) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self._publishers: dict[str, Publisher] = {}
        self._opening = threading.Lock()

    def close(self, timeout: float) -> None:
        """Close every topic's publisher: each waits up to ``timeout`` for a quorum."""
        for topic, publisher in list(self._publishers.items()):
            try:
                publisher.close(timeout)
            except (TimeoutError, RTError, OSError) as exc:
                log.warning("closing the publisher of %s: %s", topic, exc)

    def _publisher(self, topic: str) -> Publisher:
        with self._opening:
            publisher = self._publishers.get(topic)
            if publisher is None:
                publisher = Publisher(self.cluster, topic, self.log_dir)
                self._publishers[topic] = publisher
                log.info("topic %s: publishing to %s", topic, publisher.directory)
            return publisher

    async def Publish(self, request_iterator, context):
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("kind") != "open":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request is open")
        try:
            topic = check_topic(first.open.topic)  # a path would publish to no cluster
            publisher = await asyncio.to_thread(self._publisher, topic)
        except (ValueError, RTError) as exc:  # a bad topic, a folder of another cluster
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OSError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        call = _Call(publisher, first.open.origin or None)
        loop = asyncio.get_running_loop()

        def moved() -> None:
            loop.call_soon_threadsafe(call.moved)

        publisher.watch(moved)
        reader = asyncio.create_task(call.receive(context))
        reader.add_done_callback(lambda _: call.progress.set())  # answer() sees it end
        try:
            await call.answer(context, reader, publisher.stream or "")
        except _Refused as exc:
            await context.abort(exc.code, str(exc))
        finally:
            publisher.unwatch(moved)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


class _Call:
    """One Publish call: its messages' positions until durable, and its replies."""

    def __init__(self, publisher: Publisher, origin: str | None) -> None:
        self.publisher = publisher
        self.origin = origin
        #: set when answer() has something to tell; ``room`` when receive() may read on
        #: (each has one waiter: neither can take the other's wake-up)
        self.progress = asyncio.Event()
        self.room = asyncio.Event()
        self.sent = 0  #: messages received
        self.durable = 0  #: messages known durable
        #: (position, payload bytes) of each message not yet durable, in order
        self.pending: collections.deque[tuple[int, int]] = collections.deque()
        self.undurable_bytes = 0
        self.last_position = 0
        self.ended = False  # the client half-closed

    def moved(self) -> None:
        """The publisher's log or its replication moved on (on the loop)."""
        self.progress.set()
        self.room.set()

    async def receive(self, context) -> None:
        while True:
            while self.undurable_bytes > MAX_UNDURABLE_BYTES:
                await _wait(self.room)
            request = await context.read()
            if request is grpc.aio.EOF:
                self.ended = True
                self.progress.set()
                return
            if request.WhichOneof("kind") != "batch":
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "only the first request opens")
            self._append(request.batch.messages)
            self.progress.set()

    def _append(self, messages) -> None:
        window = self.durable + WINDOW
        publisher = self.publisher
        for message in messages:
            if self.sent >= window:
                raise _Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"message {self.sent} is past the window ({window}): wait for replies",
                )
            codec = _CODECS.get(message.codec)
            if codec is None:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"message {self.sent}: unknown codec {message.codec}",
                )
            try:
                position = publisher.publish_payload(
                    message.payload,
                    codec,
                    origin=message.origin or self.origin,
                    id=message.id or None,
                    ts=message.ts or None,
                    tags=tuple(message.tags) if message.tags else None,
                )
            except (CodecError, LogError, ValueError) as exc:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"message {self.sent}: {exc}"
                ) from None
            self.pending.append((position, len(message.payload)))
            self.undurable_bytes += len(message.payload)
            self.last_position = position
            self.sent += 1

    async def answer(self, context, reader: asyncio.Task, stream: str) -> None:
        """Reply whenever something moved, until the client ended and a quorum holds all."""
        last = None
        first = True
        while True:
            written = self.publisher.written
            positions = []
            while self.pending and self.pending[0][0] <= written:
                position, size = self.pending.popleft()
                positions.append(position)
                self.undurable_bytes -= size
            self.durable += len(positions)
            if positions:
                self.room.set()
            replicated = self.publisher.replicated
            state = (self.durable, replicated, self.durable + WINDOW)
            if state != last or positions:
                last = state
                await context.write(
                    publisher_pb2.PublishReply(
                        durable=self.durable,
                        positions=positions,
                        replicated=replicated,
                        window=self.durable + WINDOW,
                        stream=stream if first else "",
                    )
                )
                first = False
            if reader.done():
                error = reader.exception()
                if error is not None:
                    raise error
                if self.ended and not self.pending and replicated >= self.last_position:
                    return
            await _wait(self.progress)


async def _wait(event: asyncio.Event) -> None:
    """Until ``event`` is set (at most a second: a lost wake-up only delays), then clear it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await event.wait()
    event.clear()
