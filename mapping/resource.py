"""The OTLP resource and request envelope around the spans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from mapping.values import add_attributes
from mapping.wire import delimited, varint

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


# Field tags of the request envelope (field number << 3 | wire type 2, length-delimited):
# ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.resource = 1, .scope_spans = 2,
# ScopeSpans.scope = 1, .spans = 2.
_FIELD_1 = b"\x0a"
_FIELD_2 = b"\x12"


class RequestEncoder:
    """Export requests assembled from spans serialised one by one (``Span.SerializeToString()``).

    A protobuf message is the concatenation of its fields, so a request is the resource and scope
    (serialised once, here) followed by each span's bytes behind a tag and a length: no span is
    copied into a request message and serialised again, and a request's size is known exactly
    before it is built. ``encode(resource, [span.SerializeToString() ...])`` is byte for byte
    ``build_request(resource, spans).SerializeToString()``.
    """

    def __init__(self, resource: Resource, scope_version: str) -> None:
        resource_bytes = resource.SerializeToString()
        scope = InstrumentationScope(name=SCOPE_NAME, version=scope_version).SerializeToString()
        self._resource_field = delimited(_FIELD_1, resource_bytes)
        self._scope_field = delimited(_FIELD_1, scope)

    @staticmethod
    def span_size(span: bytes) -> int:
        """Bytes one serialised span adds to a request."""
        return 1 + len(varint(len(span))) + len(span)

    @property
    def overhead(self) -> int:
        """Bytes of a request besides its spans (at most: the length prefixes are counted at 5 bytes)."""
        return 1 + 5 + len(self._resource_field) + 1 + 5 + len(self._scope_field)

    def encode(self, spans: Sequence[bytes]) -> bytes:
        """The serialised ``ExportTraceServiceRequest`` holding ``spans``."""
        scope_spans = b"".join([self._scope_field, *(delimited(_FIELD_2, span) for span in spans)])
        resource_spans = self._resource_field + delimited(_FIELD_2, scope_spans)
        return delimited(_FIELD_1, resource_spans)
