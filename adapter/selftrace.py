"""The service tracing itself (setting ``self_tracing``, off by default).

Spans of its own work (``ingest`` per request, ``export`` per OTLP request) go to the same backend
through the OpenTelemetry SDK's batch processor, under ``service.name = dynamiq-otel``. They are
diagnostics: they do not pass through the durable store and may be dropped under pressure, unlike
the Dynamiq traces the service is there to deliver.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from adapter.version import package_version
from config import Settings

TRACER_NAME = "dynamiq_otel"


def _exporter(settings: Settings) -> SpanExporter:
    headers = dict(settings.otlp_headers)
    timeout = settings.otlp_timeout / 1000
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = settings.otlp_insecure if settings.otlp_insecure is not None else (
            settings.traces_endpoint.startswith("http://")
        )  # fmt: skip
        return GrpcExporter(endpoint=settings.traces_endpoint, insecure=insecure, headers=headers, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=settings.traces_endpoint, headers=headers, timeout=timeout)


def tracer_for(settings: Settings) -> tuple[trace.Tracer, TracerProvider | None]:
    """A tracer exporting to the configured backend, or a no-op tracer when self-tracing is off."""
    if not settings.self_tracing:
        return trace.NoOpTracer(), None
    resource = Resource.create({"service.name": "dynamiq-otel", "service.version": package_version()})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    return provider.get_tracer(TRACER_NAME, package_version()), provider
