"""This node's spans of publishers' batches (``rtcommon.telemetry``).

A push chunk may carry the trace context of the publisher's batch that ends within it
(``PushRequest.traceparent``, sent when the publisher records spans). The node then opens
``rt.node.sequence``, a child of the publisher's ``rt.publish``, from the chunk's receipt:
an event ``held`` when its copy holds the batch on disk, on the leader an event
``proposed`` when it proposes the range holding it to Raft, and the span ends when the
merged log holds the batch (Raft committed the range; the index is an attribute). Spans leave
with OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Nothing happens for chunks without
a context, so the cost is per traced batch, never per message.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

from opentelemetry import trace

from rtcommon.telemetry import trace_context, tracer

__all__ = ["TracedBatches"]

#: Open batches kept per stream; older ones end at once (a publisher far ahead).
MAX_OPEN = 256


class _Open:
    __slots__ = ("end", "events", "span")

    def __init__(self, end: int, span: trace.Span) -> None:
        self.end = end
        self.span = span
        self.events: set[str] = set()  # noted already


class TracedBatches:
    def __init__(self, node: str) -> None:
        self.node = node
        self._open: dict[str, collections.deque[_Open]] = {}

    def __bool__(self) -> bool:
        return bool(self._open)

    def received(self, stream: str, end: int, traceparent: str) -> None:
        """A chunk of ``stream`` ending at ``end`` carries a batch's trace context."""
        context = trace_context(traceparent)
        if not trace.get_current_span(context).get_span_context().is_valid:
            return  # not a trace context: nothing to join
        span = tracer().start_span(
            "rt.node.sequence",
            context=context,
            attributes={"rt.node": self.node, "rt.stream": stream, "rt.position": end},
        )
        batches = self._open.setdefault(stream, collections.deque())
        if len(batches) >= MAX_OPEN:
            batches.popleft().span.end()
        batches.append(_Open(end, span))

    def held(self, positions: Mapping[str, int]) -> None:
        """This node holds each stream up to ``positions`` on disk."""
        self._event("held", positions)

    def _event(self, name: str, positions: Mapping[str, int]) -> None:
        """Note ``name`` once on every open batch ``positions`` covers."""
        for stream, batches in self._open.items():
            reached = positions.get(stream, 0)
            for batch in batches:
                if batch.end > reached:
                    break
                if name not in batch.events:
                    batch.events.add(name)
                    batch.span.add_event(name)

    def proposed(self, ends: Mapping[str, int]) -> None:
        """This node (the leader) proposes each stream up to ``ends``."""
        self._event("proposed", ends)

    def merged(self, positions: Mapping[str, int], raft_index: int) -> None:
        """The merged log holds each stream up to ``positions``, at Raft index
        ``raft_index``: the batches it covers end."""
        for stream in list(self._open):
            batches = self._open[stream]
            merged = positions.get(stream, 0)
            while batches and batches[0].end <= merged:
                batch = batches.popleft()
                batch.span.set_attribute("rt.raft.index", raft_index)
                batch.span.end()
            if not batches:
                del self._open[stream]
