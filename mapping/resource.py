"""The OTLP resource and request envelope around the spans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from mapping.values import add_attributes

SCOPE_NAME = "dynamiq-otel"
"""Instrumentation scope of every span: the translator, not the Dynamiq SDK."""
PROJECT_NAME = "openinference.project.name"
"""Resource attribute Phoenix files traces under."""


def build_resource(
    service_name: str, project_name: str, attributes: Mapping[str, str], max_length: int = 4096
) -> Resource:
    """``service.name`` and ``openinference.project.name`` over the extra ``attributes``."""
    merged: dict[str, str] = dict(attributes)
    merged["service.name"] = service_name
    merged.setdefault(PROJECT_NAME, project_name)
    merged.setdefault("telemetry.sdk.name", "dynamiq")
    merged.setdefault("telemetry.sdk.language", "python")
    resource = Resource()
    add_attributes(resource.attributes, sorted(merged.items()), max_length)
    return resource


def build_request(resource: Resource, spans: Sequence[Span], scope_version: str) -> ExportTraceServiceRequest:
    """One export request: all ``spans`` under ``resource`` and the translator's scope."""
    resource_spans = ResourceSpans(resource=resource)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = SCOPE_NAME
    scope_spans.scope.version = scope_version
    scope_spans.spans.extend(spans)
    return ExportTraceServiceRequest(resource_spans=[resource_spans])
