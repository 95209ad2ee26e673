"""Following a log from a list of nodes into a local copy, with failover and backoff.

What it owns: :class:`FailoverPolicy`, the sans-I/O choice of which node to follow
next and how long to wait first, and :func:`follow`, the one async loop that applies it.
A subscriber follows the merged log from the cluster's nodes this way, and a node
catching its merged log up for a snapshot follows its peers.

The policy: nodes are tried in turn from ``first``. A stream that breaks after making
progress moves on to the next node at once, and the backoff starts afresh; one that
made none moves on after a delay that doubles from ``initial`` up to ``cap``, with
jitter (so many followers do not retry in step).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

__all__ = ["SILENT_AFTER", "FailoverPolicy", "StreamEnded", "StreamSilent", "cancelling", "follow"]

#: A node's Pull stream carries a heartbeat every idle second: one silent this long is
#: from a node stopped or stuck (its connection may stay open for good).
SILENT_AFTER = 5.0

Chunk = TypeVar("Chunk")


class StreamEnded(Exception):
    """A node ended a stream that should have gone on."""


class StreamSilent(Exception):
    """A node sent nothing for longer than its heartbeats allow: stopped, or stuck."""


class FailoverPolicy:
    def __init__(
        self,
        nodes: int,
        *,
        first: int = 0,
        initial: float = 0.05,
        cap: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a failover policy needs at least one node")
        self.nodes = nodes
        self.node = first % nodes  #: the node to follow now
        self.initial, self.cap = initial, cap
        self.failures = 0  #: streams in a row that made no progress
        self._rng = rng or random.Random()

    def failed(self, progressed: bool) -> float:
        """The stream from :attr:`node` broke: move to the next node and return how long
        to wait before opening a stream on it."""
        self.node = (self.node + 1) % self.nodes
        if progressed:
            self.failures = 0
            return 0.0
        self.failures += 1
        delay = min(self.cap, self.initial * 2 ** (self.failures - 1))
        return delay * (0.5 + self._rng.random() / 2)


async def follow(
    policy: FailoverPolicy,
    open_stream: Callable[[int], AsyncIterator[Chunk]],
    write: Callable[[Chunk], bool],
    *,
    done: Callable[[], bool] = lambda: False,
    on_break: Callable[[int, BaseException, bool, float], None] = lambda *_: None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    silence: float | None = None,
) -> None:
    """Follow a log: stream from ``policy.node`` (``open_stream(node)``), hand each chunk
    to ``write`` (which returns whether it added anything), until ``done()``.

    When a stream breaks (an error, its end: :class:`StreamEnded`, or, with ``silence``,
    no chunk for that many seconds: :class:`StreamSilent`; a node sends heartbeats when
    idle, so only a stopped or stuck one is silent), the policy moves on and
    ``on_break(node, error, progressed, delay)`` is told; it may raise to stop following
    (a fatal error), else the loop waits ``delay`` and goes on. Leaving a stream early
    closes it (``open_stream`` should cancel its call in a ``finally``)."""
    loop = asyncio.get_running_loop()
    while not done():
        node = policy.node
        progressed = False
        # One deadline moved on by each chunk (asyncio.timeout, not a wait_for per chunk:
        # that runs each read in a task of its own, and on Python 3.11 can swallow the
        # cancellation of the caller that comes as a chunk arrives).
        quiet = asyncio.timeout(None)
        try:
            async with contextlib.aclosing(open_stream(node)) as chunks, quiet:  # type: ignore[type-var]
                if silence is not None:
                    quiet.reschedule(loop.time() + silence)
                async for chunk in chunks:
                    progressed = write(chunk) or progressed
                    if done():
                        return
                    if silence is not None:
                        quiet.reschedule(loop.time() + silence)
            raise StreamEnded(f"node {node} ended the stream")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            broke: BaseException = error
            if isinstance(error, TimeoutError) and quiet.expired():
                broke = StreamSilent(f"node {node} sent nothing for {silence:g} s")
            delay = policy.failed(progressed)
            on_break(node, broke, progressed, delay)
        await sleep(delay)


async def cancelling(call) -> AsyncIterator:
    """The messages of a gRPC server-streaming ``call``, cancelling it when left early
    (so the server stops serving it)."""
    try:
        async for message in call:
            yield message
    finally:
        call.cancel()
