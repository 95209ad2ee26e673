"""OpenTelemetry for every RT process: one meter and tracer provider each, set up by
:func:`setup_telemetry` from the standard ``OTEL_*`` variables.

- Metrics are always readable as Prometheus text (:func:`prometheus_text`: the
  supervisor's ``GET /metrics`` gives its own and its sequencer's, fetched over
  ``Admin.Metrics``), and also pushed with OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) is set.
- Spans are exported with OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_...``)
  is set; nothing is recorded otherwise. Tests install the SDK's in-memory exporter.

Every metric is named ``rt_...`` and carries the process's ``service.name`` (``rt-<part>``)
and node as resource attributes; instruments are made once, through :func:`meter`.
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest

__all__ = [
    "meter",
    "prometheus_text",
    "setup_telemetry",
    "trace_context",
    "traceparent",
    "tracer",
]

_registry = CollectorRegistry()
_propagator = TraceContextTextMapPropagator()
_ready = False


def _otlp(signal: str) -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def setup_telemetry(service: str, node: str = "") -> None:
    """Install this process's providers (once; later calls do nothing)."""
    global _ready
    if _ready:
        return
    _ready = True
    attributes = {"service.name": f"rt-{service}"}
    if node:
        attributes["rt.node"] = node
    resource = Resource.create(attributes)
    # One process's text may be joined to another's under one scrape: no target_info.
    readers: list[MetricReader] = [
        PrometheusMetricReader(disable_target_info=True, registry=_registry)
    ]
    if _otlp("METRICS"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    provider = TracerProvider(resource=resource)
    if _otlp("TRACES"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def meter() -> metrics.Meter:
    return metrics.get_meter("rt")


def tracer() -> trace.Tracer:
    return trace.get_tracer("rt")


def traceparent(span: trace.Span) -> str:
    """``span``'s W3C ``traceparent``, as a publisher's push carries it to the nodes."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def trace_context(value: str) -> Context:
    """The context a ``traceparent`` names, for a span of this process to join."""
    return _propagator.extract({"traceparent": value})


def prometheus_text() -> bytes:
    """This process's metrics in the Prometheus text format."""
    return generate_latest(_registry)
