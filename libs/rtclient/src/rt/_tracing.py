"""Spans of a publisher's batches (OpenTelemetry; recorded only where the application
installed an SDK tracer provider, as ``rtcommon.telemetry.setup_telemetry`` does).

A batch is what the committer writes out at once. Its span ``rt.publish`` runs from the
first message of the batch to the moment a quorum of nodes holds it, with two children:
``rt.commit`` (written to the local log and synced) and ``rt.replicate`` (pushed until a
quorum holds it). The push chunk carrying a batch's end carries its trace context, and
each node's span of it (``rt.node.sequence``: received, held, merged) joins the trace.
The cost is per batch, never per message.
"""

from __future__ import annotations

import collections
import threading

from opentelemetry import trace

from rtcommon.telemetry import traceparent, tracer

#: Batches awaiting a quorum kept open at most; older ones end, marked unreplicated.
MAX_OPEN = 1024

__all__ = ["BatchTracer"]


class BatchTracer:
    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._open: collections.deque[tuple[int, trace.Span, trace.Span]] = collections.deque()
        self._lock = threading.Lock()

    def committed(self, end: int, size: int, started: int, commit_started: int, now: int) -> None:
        """A batch ending at ``end`` (``size`` bytes) was written and synced at ``now``;
        its first message came at ``started``, its commit began at ``commit_started``
        (nanoseconds since the epoch)."""
        spans = tracer()
        root = spans.start_span(
            "rt.publish",
            start_time=started,
            attributes={"rt.stream": self.stream, "rt.batch.bytes": size, "rt.position": end},
        )
        context = trace.set_span_in_context(root)
        spans.start_span("rt.commit", context=context, start_time=commit_started).end(now)
        replicate = spans.start_span("rt.replicate", context=context, start_time=now)
        with self._lock:
            if len(self._open) >= MAX_OPEN:  # no quorum for long: do not hold them all
                _, old_root, old_replicate = self._open.popleft()
                _unreplicated(old_root, old_replicate, now, "no quorum held it yet")
            self._open.append((end, root, replicate))

    def context(self, start: int, end: int) -> str:
        """The W3C ``traceparent`` of the last recorded batch ending in ``(start, end]``
        (a push chunk from ``start`` to ``end``), or "": the nodes' spans join its trace."""
        with self._lock:
            root = next(
                (root for batch_end, root, _ in reversed(self._open) if start < batch_end <= end),
                None,
            )
        if root is None or not root.is_recording():
            return ""
        return traceparent(root)

    def replicated(self, position: int, now: int) -> None:
        """A quorum holds everything before ``position``: end the batches it covers."""
        with self._lock:
            while self._open and self._open[0][0] <= position:
                _, root, replicate = self._open.popleft()
                replicate.end(now)
                root.end(now)

    def close(self, now: int) -> None:
        """The publisher closed: batches still unreplicated end, marked so."""
        with self._lock:
            while self._open:
                _, root, replicate = self._open.popleft()
                _unreplicated(root, replicate, now, "closed before a quorum held it")


def _unreplicated(root: trace.Span, replicate: trace.Span, now: int, why: str) -> None:
    for span in (replicate, root):
        span.set_status(trace.StatusCode.ERROR, why)
        span.end(now)
