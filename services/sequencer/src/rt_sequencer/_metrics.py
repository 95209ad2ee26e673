"""The sequencer's metrics (``rtcommon.telemetry``; the supervisor's ``GET /metrics``).

Most are read when a reader collects, from the node's status (the same
``Admin.Status`` that ``rt status`` shows, computed once per collection): Raft's term,
commit and applied index and leader changes; per input stream the bytes held and
merged, the lag between them, and the records received and merged (counted as the
mirror checks each chunk, and by one framing pass over each merged run); the merged
log's end and bytes merged; each subscriber's lag behind the merged log's end; the
volume's use. A few are recorded as they happen (:data:`FSYNC_SECONDS`,
:data:`PUBLISH_TO_MERGE_SECONDS`). Nothing here costs anything per message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from rtcommon.log import Record
from rtcommon.telemetry import meter
from rtproto.v1 import admin_pb2

__all__ = ["FSYNC_SECONDS", "PUBLISH_TO_MERGE_SECONDS", "NodeMetrics", "merged"]

#: Seconds, from half a millisecond to ten seconds.
BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
FSYNC_SECONDS = meter().create_histogram(
    "rt_fsync",
    unit="s",
    description="time to force written bytes to disk, by what: inputs, merged, raft",
    explicit_bucket_boundaries_advisory=BUCKETS,
)
PUBLISH_TO_MERGE_SECONDS = meter().create_histogram(
    "rt_publish_to_merge",
    unit="s",
    description="from a message's timestamp to its merge, for the first of each merged run",
    explicit_bucket_boundaries_advisory=BUCKETS,
)


def merged(run: bytes) -> None:
    """Record the publish-to-merge time of a run of records appended to the merged log."""
    if run:
        PUBLISH_TO_MERGE_SECONDS.record(max(0.0, (time.time_ns() - Record(run, 0).ts) / 1e9))


class NodeMetrics:
    """Observable instruments reading ``status()`` (at most once per ``FRESH`` seconds)
    and ``leader_changes()``."""

    FRESH = 0.5

    def __init__(
        self, status: Callable[[], admin_pb2.NodeStatus], leader_changes: Callable[[], int]
    ) -> None:
        self._status = status
        self._leader_changes = leader_changes
        self._cached: admin_pb2.NodeStatus | None = None
        self._cached_at = float("-inf")
        self._loop_thread = threading.get_ident()  # made on the node's event loop
        m = meter()
        gauges = {
            "rt_raft_term": lambda s: s.term,
            "rt_raft_commit_index": lambda s: s.commit_index,
            "rt_raft_applied_index": lambda s: s.applied_index,
            "rt_raft_is_leader": lambda s: int(s.role == "leader"),
            "rt_merged_log_end": lambda s: s.out_position,
            "rt_disk_input_bytes": lambda s: s.input_bytes,
            "rt_disk_merged_bytes": lambda s: s.output_bytes,
            "rt_disk_free_bytes": lambda s: s.disk_free,
        }
        for name, read in gauges.items():
            m.create_observable_gauge(name, callbacks=[self._one(read)])
        m.create_observable_counter(
            "rt_merged", unit="By", callbacks=[self._one(lambda s: s.bytes_merged)]
        )
        m.create_observable_counter(
            "rt_raft_leader_changes", callbacks=[lambda _: [Observation(leader_changes())]]
        )
        m.create_observable_counter(
            "rt_stream_in",
            unit="By",
            description="bytes of each input stream held here, fsynced",
            callbacks=[self._streams(lambda st: st.held)],
        )
        m.create_observable_counter(
            "rt_stream_merged",
            unit="By",
            description="bytes of each input stream merged into the merged log",
            callbacks=[self._streams(lambda st: st.merged)],
        )
        m.create_observable_counter(
            "rt_stream_in_records",
            description="records of each input stream received here since the node started",
            callbacks=[self._streams(lambda st: st.records_in)],
        )
        m.create_observable_counter(
            "rt_stream_merged_records",
            description="records of each input stream merged since the node started",
            callbacks=[self._streams(lambda st: st.records_merged)],
        )
        m.create_observable_gauge(
            "rt_stream_lag",
            unit="By",
            description="bytes of each input stream held here and not merged yet",
            callbacks=[self._streams(lambda st: max(0, st.held - st.merged))],
        )
        m.create_observable_gauge(
            "rt_subscriber_lag",
            unit="By",
            description="how far each subscriber pulling from this node is behind its end",
            callbacks=[self._subscribers],
        )

    def _now(self) -> admin_pb2.NodeStatus:
        """The status, read on the node's loop thread only: an OTLP reader collects from a
        thread of its own, and gets the last status the loop read (the node's state is
        not safe to walk from another thread)."""
        now = time.monotonic()
        stale = self._cached is None or now - self._cached_at > self.FRESH
        if stale and threading.get_ident() == self._loop_thread:
            self._cached, self._cached_at = self._status(), now
        return self._cached if self._cached is not None else admin_pb2.NodeStatus()

    def _one(self, read: Callable[[admin_pb2.NodeStatus], int]):
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(self._now()))]

        return callback

    def _streams(self, read: Callable[[admin_pb2.StreamStatus], int]):
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(read(stream), {"stream": stream.stream})
                for stream in self._now().streams
            ]

        return callback

    def _subscribers(self, options: CallbackOptions) -> Iterable[Observation]:
        status = self._now()
        return [
            Observation(max(0, status.out_position - client.position), {"peer": client.peer})
            for client in status.clients
            if client.kind == "subscriber"
        ]
