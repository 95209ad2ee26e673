"""Observability (issue 11) on a live local cluster: each supervisor's ``GET /metrics`` is
valid Prometheus text holding its own and its sequencer's metrics, and the counters move
as messages flow; a publisher's batch is traced (the SDK's in-memory exporter) from its
first message to the quorum holding it; every process logs JSON lines on request."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import rt

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "rt-dashboard.json"


def scrape(rest: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics`` by (name, labels without OTel's scope labels)."""
    with urllib.request.urlopen(f"http://{rest}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):  # raises on malformed text
        for sample in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_"))
            )
            samples[(sample.name, labels)] = sample.value
    return samples


def test_metrics_move_as_messages_flow(cluster: Any, tmp_path: Path) -> None:
    running = cluster(nodes=1)
    [node] = running.spec.nodes
    before = scrape(node.rest)
    assert before[("rt_raft_term", ())] >= 1
    assert before[("rt_raft_is_leader", ())] == 1
    assert before[("rt_disk_free_bytes", ())] > 0

    with rt.Publisher(running.spec, "feed", log_dir=tmp_path, codec="raw") as publisher:
        for _ in range(1000):
            publisher.publish(b"x" * 100)
        publisher.flush(30)
        stream = publisher.stream
    received = threading.Event()
    subscriber = rt.Subscriber(
        running.spec, log_dir=tmp_path / "sub", on_message=lambda m, p: received.set()
    )
    with subscriber:
        assert received.wait(30)
        deadline = time.monotonic() + 30
        while True:
            after = scrape(node.rest)
            merged = after.get(("rt_stream_merged_bytes_total", (("stream", stream),)), 0)
            if merged >= publisher.position or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert any(name == "rt_subscriber_lag_bytes" for name, _ in after)
    held = after[("rt_stream_in_bytes_total", (("stream", stream),))]
    assert held == merged == publisher.position  # every byte in, every byte merged
    assert after[("rt_stream_lag_bytes", (("stream", stream),))] == 0
    assert after[("rt_stream_in_records_total", (("stream", stream),))] == 1000
    assert after[("rt_stream_merged_records_total", (("stream", stream),))] == 1000
    merged_before = before.get(("rt_merged_bytes_total", ()), 0)
    assert after[("rt_merged_bytes_total", ())] >= merged_before + held
    assert after[("rt_merged_log_end", ())] > before[("rt_merged_log_end", ())]
    for what in ("inputs", "merged", "raft"):
        key = ("rt_fsync_seconds_count", (("what", what),))
        assert after[key] > before.get(key, 0), what
    assert after[("rt_publish_to_merge_seconds_count", ())] > before.get(
        ("rt_publish_to_merge_seconds_count", ()), 0
    )
    # The supervisor's own metrics are there too (its REST server's).
    assert any(name.startswith("http_server_") for name, _ in after)
    # Every metric the Grafana dashboard charts is one the nodes export.
    dashboard = json.loads(DASHBOARD.read_text())
    charted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\brt_[a-z_]+", target["expr"])
    }
    assert charted and charted <= {name for name, _ in after}, charted - {n for n, _ in after}


def test_a_published_batch_is_traced_from_publish_to_quorum(cluster: Any, tmp_path: Path) -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first test to want spans installs one
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = cluster(nodes=1)
    with rt.Publisher(running.spec, "traced", log_dir=tmp_path) as publisher:
        for n in range(10):
            publisher.publish(n)
        publisher.flush(30)
        deadline = time.monotonic() + 10
        while not any(s.name == "rt.publish" for s in exporter.get_finished_spans()):
            assert time.monotonic() < deadline, exporter.get_finished_spans()
            time.sleep(0.05)
    spans = exporter.get_finished_spans()
    [root] = [s for s in spans if s.name == "rt.publish"]
    assert root.attributes["rt.stream"] == publisher.stream
    assert root.attributes["rt.position"] == publisher.position
    assert root.attributes["rt.batch.bytes"] > 0
    children = {
        s.name: s
        for s in spans
        if s.parent is not None and s.parent.span_id == root.context.span_id
    }
    assert set(children) == {"rt.commit", "rt.replicate"}
    commit, replicate = children["rt.commit"], children["rt.replicate"]
    assert root.start_time <= commit.start_time <= commit.end_time <= replicate.start_time
    assert replicate.end_time == root.end_time
    assert all(s.context.trace_id == root.context.trace_id for s in children.values())
    exporter.clear()


def test_every_process_logs_json_lines_and_keeps_log_files(cluster: Any) -> None:
    running = cluster(nodes=1, env={"RT_LOG_FORMAT": "json"}, args=["--log-level", "info"])
    assert running.stop() == 0
    parts = set()
    for line in running.log().splitlines():
        record = json.loads(line)  # every line of every process: one JSON object
        assert set(record) >= {"time", "level", "service", "node", "logger", "message"}, record
        parts.add((record["service"], record["node"]))
    assert {("launcher", ""), ("info-service", "")} <= parts
    assert {("supervisor", "node-0"), ("sequencer", "node-0"), ("archiver", "node-0")} <= parts
    logs = running.data / "node-0" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "archiver.log",
        "sequencer.log",
        "supervisor.log",
    ]
    records = [json.loads(line) for line in (logs / "sequencer.log").read_text().splitlines()]
    assert {record["service"] for record in records} == {"sequencer"}
    messages = [record["message"] for record in records]
    assert any(m.startswith("raft: node-0 became leader") for m in messages), messages


class Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """An OTLP collector in this process: what the nodes export arrives here."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            with self.lock:
                self.spans += [
                    span
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
            return trace_service_pb2.ExportTraceServiceResponse()
        return metrics_service_pb2.ExportMetricsServiceResponse()


def test_the_nodes_spans_of_a_batch_join_the_publisher_s_trace(
    cluster: Any, tmp_path: Path
) -> None:
    """Across processes: a traced batch's push carries its trace context, and each node's
    ``rt.node.sequence`` span (received, held, merged) is a child of the publisher's
    ``rt.publish``, exported by the node with OTLP."""
    collector = Collector()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        running = cluster(
            nodes=3,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_METRIC_EXPORT_INTERVAL": "60000",
            },
        )
        with rt.Publisher(running.spec, "traced", log_dir=tmp_path) as publisher:
            publisher.publish("one batch")
            publisher.flush(30)
        [root] = [s for s in exporter.get_finished_spans() if s.name == "rt.publish"]
        deadline = time.monotonic() + 30
        while True:
            with collector.lock:
                ours = [
                    s
                    for s in collector.spans
                    if s.name == "rt.node.sequence"
                    and int.from_bytes(s.trace_id, "big") == root.context.trace_id
                ]
            if len(ours) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(ours) == 3, collector.spans  # one per node
        for span in ours:
            assert int.from_bytes(span.parent_span_id, "big") == root.context.span_id
            attributes = {a.key: a.value for a in span.attributes}
            assert attributes["rt.stream"].string_value == publisher.stream
            assert attributes["rt.raft.index"].int_value > 0
            events = {event.name for event in span.events}
            assert events <= {"held", "proposed"}, events  # proposed: on the leader
            assert root.start_time <= span.start_time_unix_nano <= span.end_time_unix_nano
        assert sum("proposed" in [e.name for e in span.events] for span in ours) == 1
        assert sum("held" in [e.name for e in span.events] for span in ours) >= 2  # a quorum
        nodes = {{a.key: a.value for a in span.attributes}["rt.node"].string_value for span in ours}
        assert nodes == {node.name for node in running.spec.nodes}
        assert running.stop() == 0  # while the collector still takes the last exports
    finally:
        collector.server.stop(0)
        exporter.clear()
